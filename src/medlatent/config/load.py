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


#: Keys only a MedVAE-layout model has (the schema fills some with defaults for every entry).
MEDVAE_ONLY = ("ch", "ch_mult", "num_res_blocks", "norm_groups", "init", "lora", "inflate_from", "stage1", "stage2")
MEDVAE_REQUIRED = ("dims", "f", "latent_channels", "ch_mult")
#: What an imported family model encodes by default, and the source dims each `apply` encodes.
FAMILY_APPLY = {"diffusers": "images", "maisi": "volumes"}
APPLY_DIMS = {"images": 2, "slices": 3, "volumes": 3}


def check_family(model: dict) -> None:
    """A `models:` entry of its family: MedVAE keys for medvae; weights, apply and dims for the others.

    A family entry's `dims` is the dims of the sources it encodes (from `apply`), so that it is
    paired with those sources like any model; the architecture keys only MedVAE has are removed.
    """
    name, family = model["id"], model["family"]
    if family == "medvae":
        missing = [key for key in MEDVAE_REQUIRED if key not in model]
        extra = [key for key in ("apply", "network") if key in model]
        if missing or extra:
            raise ConfigError(
                f"models[{name}] (family medvae) must set {list(MEDVAE_REQUIRED)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; {extra} are for other families (set family: diffusers or maisi)" if extra else "")
            )
        return
    if not model.get("weights"):
        raise ConfigError(f"models[{name}] (family {family}) is imported, never trained: set `weights:`")
    if "network" in model and family != "maisi":
        raise ConfigError(f"models[{name}].network applies to family maisi only")
    apply = model.setdefault("apply", FAMILY_APPLY[family])
    if family == "maisi" and apply != "volumes":
        raise ConfigError(f"models[{name}]: MAISI is a 3D model, apply must be volumes, not {apply!r}")
    dims = APPLY_DIMS[apply]
    if model.setdefault("dims", dims) != dims:
        raise ConfigError(f"models[{name}].dims={model['dims']} contradicts apply: {apply} ({dims}D sources)")
    for key in MEDVAE_ONLY:
        model.pop(key, None)


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
    for model in config["models"]:
        check_family(model)
    models = {m["id"]: m for m in config["models"]}
    for model in config["models"]:
        wrong = [s for s in model.get("sources") or () if s not in sources or sources[s]["dims"] != model["dims"]]
        if wrong:
            raise ConfigError(
                f"models[{model['id']}].sources names {wrong}, not configured {model['dims']}D sources; "
                f"choose among {sorted(s for s in sources if sources[s]['dims'] == model['dims'])}"
            )
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
