"""The only place that reads the workflow configuration.

It validates config.yaml against the JSON schema (which holds every default), checks what a
schema cannot (cross references, unique ids), and cuts per-rule slices. Rules hand those
slices to the CLI as canonical JSON strings, so Snakemake's params trigger reruns exactly
the jobs whose slice changed.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
SPLITS = ("train", "val", "test")
#: Background value of the model input range: padding never invents anatomy.
BACKGROUND = -1.0


def canonical_json(value: Any) -> str:
    """Sorted, compact JSON: the same slice always gives the same string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


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


# ----------------------------------------------------------------------------- lookups


def source_ids(config: dict) -> list[str]:
    return [s["id"] for s in config["sources"]]


def source(config: dict, source_id: str) -> dict:
    for entry in config["sources"]:
        if entry["id"] == source_id:
            return entry
    raise ConfigError(f"unknown source {source_id!r}; configured: {source_ids(config)}")


def shard_ids(source_entry: dict) -> list[str]:
    """Shards are split-pure: 'train-000', ..., 'test-000'; the count per split is config."""
    return [f"{split}-{k:03d}" for split in SPLITS for k in range(source_entry["shards"][split])]


def all_source_shards(config: dict) -> list[tuple[str, str]]:
    return [(s["id"], shard) for s in config["sources"] for shard in shard_ids(s)]


# ----------------------------------------------------------------------------- rule slices


def fetch_slice(config: dict, source_id: str) -> dict:
    entry = source(config, source_id)
    return {"id": entry["id"], "modality": entry["modality"], "dims": entry["dims"], "access": entry["access"]}


def curate_slice(config: dict, source_id: str) -> dict:
    entry = source(config, source_id)
    return {
        "id": entry["id"],
        "modality": entry["modality"],
        "dims": entry["dims"],
        "curation": entry["curation"],
        "split": entry["split"],
        "shards": entry["shards"],
        "seed": config["project"]["seed"],
        "decode_check": config["curate"]["decode_check"],
    }


def normalize_slice(config: dict, source_id: str) -> dict:
    """The modality's block with the source's own overrides on top."""
    entry = source(config, source_id)
    block = merge(copy.deepcopy(config["normalize"][entry["modality"]]), entry.get("normalize", {}))
    return {"modality": entry["modality"], "dims": entry["dims"], **block}


# ----------------------------------------------------------------------------- secrets

SALT_FILE = ".patient_salt"


def patient_salt(project: dict, raw_root: Path) -> str:
    """The salt for patient keys: env var, else a per-installation file under data/raw.

    It is never part of params or logs: Snakemake records params in .snakemake/.
    """
    from_env = os.environ.get(project["salt_env"])
    if from_env:
        return from_env
    if project.get("salt"):
        return project["salt"]
    salt_file = raw_root / SALT_FILE
    if not salt_file.exists():
        raw_root.mkdir(parents=True, exist_ok=True)
        temporary = raw_root / f"{SALT_FILE}.{os.getpid()}.tmp"
        temporary.write_text(secrets.token_hex(32), encoding="utf-8")
        os.chmod(temporary, 0o600)
        try:  # link, not replace: concurrent first runs must agree on one salt
            os.link(temporary, salt_file)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return salt_file.read_text(encoding="utf-8").strip()
