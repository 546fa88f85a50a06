"""docs/sources.md documents every source of config.yaml, under the access method the config uses."""

from __future__ import annotations

import re
from pathlib import Path

SOURCES_DOC = Path(__file__).resolve().parents[2] / "docs" / "sources.md"


def documented_access_methods() -> dict[str, str]:
    """Source id -> the access method its `### <id>:` section names on its **Access** line."""
    sections = re.split(r"^### ", SOURCES_DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]
    methods = {}
    for section in sections:
        source_id = section.split(":", 1)[0]
        access = re.search(r"^- \*\*Access\*\*: `(\w+)`", section, flags=re.MULTILINE)
        methods[source_id] = access.group(1) if access else None
    return methods


def test_every_configured_source_has_a_section_with_its_access_method(full_config):
    configured = {source["id"]: source["access"]["method"] for source in full_config["sources"]}
    assert documented_access_methods() == configured
