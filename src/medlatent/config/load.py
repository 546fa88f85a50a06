"""Merge config files the way Snakemake merges --configfile, fill defaults from the schema, check.

The schema ships inside the package (`schema.yaml` beside this module), so an installed
package and the Snakefile validate with the same file.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

from medlatent.core.errors import ConfigError

SCHEMA_PATH = Path(__file__).with_name("schema.yaml")


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def id_pattern() -> str:
    """The regex of every id (sources, models, tasks), unanchored: the schema's `definitions.id`.

    Returns:
        The pattern for wildcard constraints, e.g. `[A-Za-z0-9][A-Za-z0-9_.-]*`.
    """
    return _schema()["definitions"]["id"]["pattern"].removeprefix("^").removesuffix("$")


def validate(config: dict, schema_path: Path = SCHEMA_PATH) -> dict:
    """Fill defaults from the schema and check the config; raises ConfigError naming the key."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as snakemake_validate

    try:
        snakemake_validate(config, str(schema_path), set_default=True)
    except WorkflowError as error:
        raise ConfigError(f"invalid configuration: {error}") from None
    check_references(config)
    return config


def load(path: str | Path, *overrides: str | Path) -> dict:
    """Load config.yaml plus override files the way Snakemake merges --configfile."""
    config: dict = {}
    for file in (path, *overrides):
        with open(file, encoding="utf-8") as handle:
            merge(config, yaml.safe_load(handle) or {})
    return validate(config)


def merge(base: dict, override: dict) -> dict:
    """Snakemake's merge rule: mappings merge key by key, everything else is replaced."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def check_references(config: dict) -> None:
    """What a schema cannot check: unique ids, cross references, split fractions, the demo-only salt.

    Raises:
        ConfigError: naming the key to fix.
    """
    for section in ("sources", "models", "cad_tasks"):
        ids = [entry["id"] for entry in config.get(section, [])]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"{section}: duplicate id(s) {duplicates}")
    sources = {s["id"]: s for s in config["sources"]}
    for source in config["sources"]:
        if source["modality"] not in config["normalize"]:
            raise ConfigError(
                f"sources[{source['id']}].modality={source['modality']!r} has no normalize.{source['modality']} block"
            )
        fractions = source["split"]["fractions"]
        if abs(sum(fractions.values()) - 1.0) > 1e-6:
            raise ConfigError(f"sources[{source['id']}].split.fractions must sum to 1, got {fractions}")
    models = {m["id"]: m for m in config["models"]}
    for model in config["models"]:
        parent = model.get("inflate_from")
        if parent is not None and (parent not in models or models[parent]["dims"] != 2 or model["dims"] != 3):
            raise ConfigError(f"models[{model['id']}].inflate_from={parent!r} must name a 2D model (3D models only)")
    unknown = sorted(set(config["evaluation"]["cad"]["models"] or []) - set(models))
    if unknown:
        raise ConfigError(f"evaluation.cad.models names unknown model(s) {unknown}; configured: {sorted(models)}")
    for task in config.get("cad_tasks", []):
        if task["source"] not in sources:
            raise ConfigError(f"cad_tasks[{task['id']}].source={task['source']!r} is not a configured source")
        if sources[task["source"]]["dims"] != task["dims"]:
            raise ConfigError(f"cad_tasks[{task['id']}].dims does not match source {task['source']!r}")
    if config["project"].get("salt") and not config["project"]["demo"]:
        raise ConfigError(
            "project.salt may only be set for the synthetic demo (project.demo: true); "
            f"real runs read the salt from ${config['project']['salt_env']} or data/raw/.patient_salt"
        )
