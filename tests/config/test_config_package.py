"""The config package: schema shipped as package data, ids and shards as the rules constrain them."""

import fnmatch
import re
import tomllib
from pathlib import Path

import medlatent
from medlatent import config as mlconfig

REPO = Path(__file__).resolve().parents[2]


def test_schema_is_package_data_and_the_only_schema():
    package = Path(medlatent.__file__).parent
    relative = mlconfig.SCHEMA_PATH.relative_to(package).as_posix()
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["medlatent"]
    assert any(fnmatch.fnmatch(relative, glob) for glob in globs), (relative, globs)
    schemas = [path for folder in ("src", "workflow") for path in (REPO / folder).rglob("*schema*.yaml")]
    assert schemas == [mlconfig.SCHEMA_PATH]


def test_wildcard_patterns_match_every_configured_id_and_shard(full_config, demo_config):
    ids, shards = re.compile(mlconfig.id_pattern()), re.compile(mlconfig.shard_pattern())
    for config in (full_config, demo_config):
        configured = [e["id"] for section in ("sources", "models", "cad_tasks") for e in config[section]]
        assert all(ids.fullmatch(i) for i in configured)
        assert all(shards.fullmatch(shard) for _, shard in mlconfig.all_source_shards(config))
    assert not ids.fullmatch("-leading-dash") and not ids.fullmatch("a/b")
    assert shards.fullmatch("train-1000")  # a split of 1000+ shards still plans
    assert not shards.fullmatch("train-1") and not shards.fullmatch("holdout-000")


def test_rules_and_commands_read_config_only_through_medlatent_config():
    readers = [
        REPO / "Snakefile",
        *sorted((REPO / "workflow" / "rules").glob("*.smk")),
        *sorted((REPO / "src" / "medlatent" / "commands").glob("*.py")),
    ]
    indexing = {path.name: re.findall(r"\bconfig\[[^\]]*\]", path.read_text()) for path in readers}
    assert {name: found for name, found in indexing.items() if found} == {}
