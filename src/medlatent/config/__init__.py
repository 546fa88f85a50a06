"""The only place that reads the workflow configuration.

It validates config.yaml against the JSON schema (which holds every default), checks what a
schema cannot (cross references, unique ids), and cuts per-rule slices. Rules hand those
slices to the CLI as canonical JSON strings, so Snakemake's params trigger reruns exactly
the jobs whose slice changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import yaml

from medlatent.core.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
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


# ----------------------------------------------------------------------------- lookups


def source_ids(config: dict) -> list[str]:
    return [s["id"] for s in config["sources"]]


def source(config: dict, source_id: str) -> dict:
    for entry in config["sources"]:
        if entry["id"] == source_id:
            return entry
    raise ConfigError(f"unknown source {source_id!r}; configured: {source_ids(config)}")


def shard_ids(source_entry: dict) -> list[str]:
    """Shards are split-pure: 'train-000', ..., 'test-000'; the count per split is config.

    A split a random split never fills (fraction 0) gets no shard, so no job runs for it.
    """
    split = source_entry["split"]
    used = [s for s in SPLITS if split["method"] == "provided" or split["fractions"][s] > 0]
    return [f"{s}-{k:03d}" for s in used for k in range(source_entry["shards"][s])]


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


# ----------------------------------------------------------------------------- latent datasets


#: Posterior arrays `latents.store` may keep beside the classifier latent, in member order.
STORED_ARRAYS = ("mean", "logvar")


def latent_pairs(config: dict) -> list[tuple[str, str]]:
    """(model, source) of every latent dataset: each model on every source of its dims, any role."""
    return [(m["id"], s["id"]) for m in config["models"] for s in config["sources"] if m["dims"] == s["dims"]]


def _model_entry(config: dict, model_id: str) -> dict:
    for entry in config["models"]:
        if entry["id"] == model_id:
            return entry
    raise ConfigError(f"unknown model {model_id!r}; configured: {[m['id'] for m in config['models']]}")


def latents_extract_slice(config: dict, model_id: str, source_id: str) -> dict:
    """What encoding one shard depends on; window settings only for 3D (2D jobs ignore them).

    `store`: the arrays kept beside the classifier latent. A 3D latent is the unprojected
    mean itself, so `mean` is dropped for 3D: toggling it reruns only 2D jobs.
    """
    model, entry = _model_entry(config, model_id), source(config, source_id)
    if model["dims"] != entry["dims"]:
        raise ConfigError(f"model {model_id!r} is {model['dims']}D but source {source_id!r} is {entry['dims']}D")
    settings = config["latents"]
    store = [name for name in STORED_ARRAYS if name in settings["store"] and not (name == "mean" and entry["dims"] == 3)]
    spec = {"model": model_id, "source": source_id, "modality": entry["modality"], "dims": entry["dims"],
            "batch_size": settings["batch_size"], "store": store}
    if entry["dims"] == 3:
        spec.update({key: settings[key] for key in ("window", "overlap", "blend", "sw_batch_size")})
    return spec


def latents_index_slice(config: dict, model_id: str, source_id: str) -> dict:
    """Dataset-level facts for index.json and the card: licence, names, and the config hash.

    The hash covers everything that shapes the latents (model, source, normalization,
    extraction settings), not the licence, display names or the classification scale
    (`evaluation.cad.latent_scale`, recorded so a classifier reads it from the index).
    """
    entry = source(config, source_id)
    extract = latents_extract_slice(config, model_id, source_id)
    made_of = {
        "model": _model_entry(config, model_id),
        "source": {key: value for key, value in entry.items() if key not in ("license", "name")},
        "normalize": normalize_slice(config, source_id),
        "extract": extract,
    }
    return {
        "model": model_id,
        "source": source_id,
        "source_name": entry.get("name", source_id),
        "anatomy": entry.get("anatomy"),
        "modality": entry["modality"],
        "dims": entry["dims"],
        "license": entry["license"],
        "classification_scale": config["evaluation"]["cad"]["latent_scale"],
        "config_sha256": hashlib.sha256(canonical_json(made_of).encode("utf-8")).hexdigest(),
    }


def publish_slice(config: dict) -> dict:
    """The DVC remote and the datasets `publish` pushes; unshareable ones are listed as withheld.

    With `publish.sources: null` every dataset whose licence allows sharing is published and
    the others are withheld (named, with their licence). Sources listed explicitly are all
    handed to publish, which refuses the unshareable ones with the licence in its error.
    """
    from medlatent.publish.dvc import sharing_allowed

    wanted = config["publish"]["sources"]
    unknown = sorted(set(wanted or ()) - set(source_ids(config)))
    if unknown:
        raise ConfigError(f"publish.sources names unknown source(s) {unknown}; configured: {source_ids(config)}")
    datasets, withheld = [], []
    for model_id, source_id in latent_pairs(config):
        license_block = source(config, source_id)["license"]
        dataset = {"model": model_id, "source": source_id, "license": license_block}
        if wanted is None and not sharing_allowed(license_block):
            withheld.append(dataset)
        elif wanted is None or source_id in wanted:
            datasets.append(dataset)
    return {"remote": config["publish"]["remote"], "data": config["paths"]["data"], "datasets": datasets,
            "withheld": withheld}


# ----------------------------------------------------------------------------- evaluation

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
#: The 2D classifier sees latents averaged over channels, 3D latents have C=1: one input channel.
CAD_IN_CHANNELS = 1


def config_hash(config: dict) -> str:
    """Short sha256 of the whole (validated) configuration: named by every report figure."""
    return _short_hash(config)


def cad_task(config: dict, task_id: str) -> dict:
    for entry in config["cad_tasks"]:
        if entry["id"] == task_id:
            return entry
    raise ConfigError(f"unknown CAD task {task_id!r}; configured: {[t['id'] for t in config['cad_tasks']]}")


def cad_models(config: dict) -> list[dict]:
    """The MedVAE models CAD compares: evaluation.cad.models, or every configured model."""
    selected = config["evaluation"]["cad"]["models"]
    return [m for m in config["models"] if selected is None or m["id"] in selected]


def _autoencoder_methods(config: dict, models: list[dict], dims: int, kinds: list[str]) -> list[dict]:
    """`models` of `dims`, external autoencoders of `dims` and, on 3D, the 2D models slice-wise
    at the compression factors of the 3D models (compared at the same f, as in Table 1)."""
    methods = []
    if "medvae" in kinds:
        methods += [{"id": m["id"], "kind": "medvae", "model": m["id"], "f": m["f"]} for m in models if m["dims"] == dims]
    if "slicewise" in kinds and dims == 3:
        factors_3d = {m["f"] for m in models if m["dims"] == 3}
        methods += [{"id": f"{m['id']}_slicewise", "kind": "slicewise", "model": m["id"], "f": m["f"]}
                    for m in models if m["dims"] == 2 and m["f"] in factors_3d]
    if "external" in kinds:
        methods += [{"id": e["id"], "kind": "external", "f": e["f"], "external": e}
                    for e in config["evaluation"]["cad"]["external"] if e["dims"] == dims]
    return methods


def _interpolation_methods(models: list[dict], dims: int, modes: list[str]) -> list[dict]:
    """Downsizing baselines at every f of `models` of `dims` (the same f, Table 1)."""
    factors = sorted({m["f"] for m in models if m["dims"] == dims})
    return [{"id": f"{mode}_f{f}", "kind": "interpolation", "mode": mode, "f": f} for f in factors for mode in modes]


def _unique_methods(methods: list[dict], where: str) -> list[dict]:
    ids = [m["id"] for m in methods]
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise ConfigError(f"{where}: method id(s) {clashes} name two things (a model or external autoencoder id "
                          "equals a baseline name such as highres or bicubic_f16); rename the model")
    return methods


def cad_methods(config: dict, task_id: str) -> list[dict]:
    """Every input method a CAD task is trained on (evaluation.cad.methods selects the kinds)."""
    task, cad = cad_task(config, task_id), config["evaluation"]["cad"]
    kinds = cad["methods"]
    methods = [{"id": "highres", "kind": "highres", "f": 1}] if "highres" in kinds else []
    if "interpolation" in kinds:
        methods += _interpolation_methods(cad_models(config), task["dims"], cad["interpolations"])
    methods += _autoencoder_methods(config, cad_models(config), task["dims"], kinds)
    return _unique_methods(methods, f"cad_tasks[{task_id}]")


def cad_method(config: dict, task_id: str, method_id: str) -> dict:
    for method in cad_methods(config, task_id):
        if method["id"] == method_id:
            return method
    raise ConfigError(f"CAD task {task_id!r} has no method {method_id!r}; "
                      f"configured: {[m['id'] for m in cad_methods(config, task_id)]}")


def cad_jobs(config: dict) -> list[tuple[str, str, int]]:
    """(task, method, seed) of every CAD training job."""
    seeds = config["evaluation"]["cad"]["seeds"]
    return [(t["id"], m["id"], s) for t in config["cad_tasks"] for m in cad_methods(config, t["id"]) for s in seeds]


def cad_slice(config: dict, task_id: str, method_id: str, seed: int) -> dict:
    """One CAD job: its task entry, its method, its seed and the evaluation.cad knobs it uses.

    Per-task `epochs`, `lr`, `batch_size` override the evaluation.cad values, so editing them
    reruns only that task's jobs. The latent scale reaches only the jobs that see latents.
    """
    task, cad = cad_task(config, task_id), config["evaluation"]["cad"]
    method = cad_method(config, task_id, method_id)
    if task["dims"] == 2:
        batch_size = cad["batch_size_2d"]
    else:
        batch_size = cad["batch_size_3d_images" if method["kind"] in ("highres", "interpolation") else "batch_size_3d_latents"]
    spec = {
        "task": task,
        "method": method,
        "seed": int(seed),
        "epochs": task.get("epochs", cad["epochs"]),
        "lr": task.get("lr", cad["lr"]),
        "batch_size": task.get("batch_size", batch_size),
        "weight_decay": cad["weight_decay"],
        "num_workers": cad["num_workers"],
        "classifier": cad["classifier_2d"] if task["dims"] == 2 else cad["classifier_3d"],
        "demo": config["project"]["demo"],
    }
    if method["kind"] not in ("highres", "interpolation"):
        spec["latent_scale"] = cad["latent_scale"]
    return spec


def image_types(config: dict) -> dict[str, list[str]]:
    """Reconstruction groups sources by image type: `<modality>_<anatomy>` (Table 2 rows)."""
    types: dict[str, list[str]] = {}
    for entry in config["sources"]:
        types.setdefault(f"{entry['modality']}_{entry.get('anatomy', 'unspecified')}", []).append(entry["id"])
    return types


def recon_methods(config: dict, dims: int) -> list[dict]:
    """Autoencoders of `dims` (2D models slice-wise on 3D) and interpolation round trips at their f."""
    kinds = config["evaluation"]["recon"]["methods"]
    methods = _autoencoder_methods(config, config["models"], dims, kinds)
    if "interpolation" in kinds:
        methods += _interpolation_methods(config["models"], dims, config["evaluation"]["cad"]["interpolations"])
    return _unique_methods(methods, f"evaluation.recon ({dims}D)")


def recon_slice(config: dict, image_type: str) -> dict:
    """One reconstruction job: the sources of one image type, their methods and the sampling."""
    types = image_types(config)
    if image_type not in types:
        raise ConfigError(f"unknown image type {image_type!r}; configured: {sorted(types)}")
    entries = [source(config, s) for s in types[image_type]]
    dims, modality = entries[0]["dims"], entries[0]["modality"]
    recon = config["evaluation"]["recon"]
    spec = {
        "image_type": image_type,
        "dims": dims,
        "modality": modality,
        "sources": [e["id"] for e in entries],
        "split": recon["split"],
        "methods": recon_methods(config, dims),
        "batch_size": recon["batch_size"],
        "panels": recon["panels"],
        "seed": config["project"]["seed"],
        "demo": config["project"]["demo"],
    }
    if dims == 2:
        spec.update({"n_items": recon["n_images_2d"], "seeds": recon["seeds_2d"]})
    else:
        segmenter = recon["segmenter"]
        spec.update({
            "n_items": recon["n_volumes_3d"],
            "seeds": recon["seeds_3d"],
            "crops": {e["id"]: recon["crop_overrides"].get(e["id"], recon["crop_3d"]) for e in entries},
            "segmenter": {"kind": segmenter["kind"], "thresholds": segmenter["thresholds"].get(modality)},
            "slice_axis": 2,
        })
    return spec


def efficiency_slice(config: dict) -> dict:
    """Timing of the CAD classifiers on full-size inputs and on latents at every configured f."""
    cad, efficiency = config["evaluation"]["cad"], config["evaluation"]["efficiency"]
    return {
        **{key: efficiency[key] for key in ("image_size_2d", "image_size_3d", "batch_size", "warmup", "iterations",
                                            "max_batch_cap_cpu", "max_batch_cap_gpu")},
        "classifier_2d": cad["classifier_2d"],
        "classifier_3d": cad["classifier_3d"],
        "f_2d": sorted({m["f"] for m in config["models"] if m["dims"] == 2}),
        "f_3d": sorted({m["f"] for m in config["models"] if m["dims"] == 3}),
        "demo": config["project"]["demo"],
    }


def _short_hash(value) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:12]


def evaluation_table_slice(config: dict, table: str) -> dict:
    """What a table (cad, recon, efficiency) names beside its numbers.

    Its `config_hash` covers exactly the slices of the jobs behind the table, so the table
    changes (and reruns) only when they do; the report names the hash of the whole config.
    """
    if table == "cad":
        made_of, extra = [cad_slice(config, *job) for job in cad_jobs(config)], {"seeds": config["evaluation"]["cad"]["seeds"]}
    elif table == "recon":
        made_of = [recon_slice(config, image_type) for image_type in image_types(config)]
        extra = {"segmenters": [s for s in {canonical_json(r["segmenter"]): r["segmenter"] for r in made_of if "segmenter" in r}.values()]}
    elif table == "efficiency":
        made_of = efficiency_slice(config)
        extra = {"batch_size": made_of["batch_size"]}
    else:
        raise ConfigError(f"unknown evaluation table {table!r}; choose cad, recon or efficiency")
    return {"table": table, "config_hash": _short_hash(made_of), "project": config["project"]["name"],
            "demo": config["project"]["demo"], **extra}


def report_slice(config: dict) -> dict:
    """The report names the hash of the whole configuration it was made under."""
    return {
        "config_hash": config_hash(config),
        "project": config["project"]["name"],
        "demo": config["project"]["demo"],
        "models": [m["id"] for m in config["models"]],
        "sources": source_ids(config),
        "tasks": [t["id"] for t in config["cad_tasks"]],
    }


# ----------------------------------------------------------------------------- training

#: Training knobs a `stage1:` / `stage2:` block may leave out (the schema's stage block is
#: open). Loss weights are the LDM / public MedVAE values. `crop` (2D) and `patch` (3D) are
#: the training input sizes; `micro_batch` (per GPU, default batch_size / gpus) and the
#: granted GPUs give the gradient accumulation that keeps `batch_size` the GLOBAL batch.
#: `lr` of the adversarial stages (2D stage 1, 3D stage 2) is LDM's base rate: the optimiser
#: uses lr x batch_size (= 4.5e-6 x per-GPU batch x GPUs x accumulation, as published); the
#: 2D stage-2 `lr` is used as is (published Adam 4e-4). Resource requests (mem_mb, runtime,
#: threads) are not part of any slice, so editing them never reruns a job.
TRAIN_DEFAULTS: dict[str, Any] = {
    "gpus": 1, "micro_batch": None, "checkpoint_every": 1000, "val_batches": 4, "precision": "32",
}
ADVERSARIAL_DEFAULTS: dict[str, Any] = {
    "disc_start": 0, "kl_weight": 1.0e-6, "perceptual_weight": 1.0, "disc_weight": 0.5,
    "gradient_checkpointing": False,
}
CROP_2D = [384, 384]  # the public code trains on 384 x 384 images
PATCH_3D = [64, 64, 64]
TRAIN_RESOURCES: dict[str, Any] = {"mem_mb": 32000, "runtime": 4320, "threads": 4}
TRAIN_ROLES = ("train", "both")
TRAIN_STAGES = ("stage1", "stage2")


def training_sources(config: dict, dims: int) -> list[str]:
    """Sources the models of `dims` train on: that dims, role train or both."""
    return [s["id"] for s in config["sources"] if s["dims"] == dims and s["role"] in TRAIN_ROLES]


def training_shards(config: dict, dims: int, split: str) -> list[tuple[str, str]]:
    """(source, shard) of every `split` shard of the training sources of `dims`."""
    return [(source_id, shard) for source_id in training_sources(config, dims)
            for shard in shard_ids(source(config, source_id)) if shard.startswith(f"{split}-")]


def trained_models(config: dict, dims: int) -> list[str]:
    """Models of `dims` that the workflow trains (those with `weights:` are imported instead)."""
    return [m["id"] for m in config["models"] if m["dims"] == dims and not m.get("weights")]


def imported_models(config: dict) -> list[str]:
    return [m["id"] for m in config["models"] if m.get("weights")]


def _without_resources(block: dict) -> dict:
    return {key: value for key, value in block.items() if key not in TRAIN_RESOURCES}


def _stage_settings(model: dict, stage: str) -> dict:
    """The stage block with every default filled in; ConfigError names what is missing."""
    if stage not in model:
        raise ConfigError(f"models[{model['id']}] has no `{stage}:` block; it is needed to train the model")
    block = _without_resources(model[stage])
    missing = [key for key in ("steps", "batch_size", "lr") if key not in block]
    if missing:
        raise ConfigError(f"models[{model['id']}].{stage} must set {missing}")
    adversarial = stage == "stage1" or model["dims"] == 3
    settings = {**TRAIN_DEFAULTS, **(ADVERSARIAL_DEFAULTS if adversarial else {}),
                **({"crop": CROP_2D} if model["dims"] == 2 else {"patch": PATCH_3D}), **block}
    if adversarial and model["dims"] == 2:
        settings.setdefault("embed_weight", 100.0)  # BiomedCLIP consistency weight, public code
    settings["lr_scaled_by_batch"] = adversarial
    return settings


def train_slice(config: dict, model_id: str, stage: str) -> dict:
    """What one training job depends on: this model, this stage, and the frozen networks it uses.

    Stage 1 leaves out the model's `stage2:` block, so editing a stage-2 knob reruns only
    that model's stage-2 job. 3D models take no embedder (no BiomedCLIP term in 3D); 2D
    stage 2 takes no perceptual network.
    """
    model = _model_entry(config, model_id)
    if stage not in TRAIN_STAGES or (stage == "stage1" and model["dims"] != 2):
        raise ConfigError(f"models[{model_id}]: no training stage {stage!r} for a {model['dims']}D model")
    entry = {key: _without_resources(value) if key in TRAIN_STAGES else value for key, value in model.items()
             if not (stage == "stage1" and key == "stage2")}
    spec = {
        "model": entry,
        "stage": stage,
        "train": _stage_settings(model, stage),
        "sources": training_sources(config, model["dims"]),
        "seed": config["project"]["seed"],
        "demo": config["project"]["demo"],
    }
    if model["dims"] == 2:
        spec["embedder"] = config["embedder"]
    if stage == "stage1" or model["dims"] == 3:
        spec["perceptual"] = config["perceptual"]
    return spec


def train_resources(config: dict, model_id: str, stage: str) -> dict:
    """`resources:` / `threads:` of a training job: gpu from the stage, the rest with defaults."""
    block = _model_entry(config, model_id).get(stage, {})
    return {"gpu": block.get("gpus", TRAIN_DEFAULTS["gpus"]),
            **{key: block.get(key, default) for key, default in TRAIN_RESOURCES.items()}}


def import_weights_slice(config: dict, model_id: str) -> dict:
    """A model with released `weights:`: its entry and the run's demo flag."""
    return {"model": _model_entry(config, model_id), "demo": config["project"]["demo"]}


def model_dims(config: dict, model_id: str) -> int:
    return _model_entry(config, model_id)["dims"]


def stage1_parent(config: dict, model_id: str) -> str:
    """The model whose stage1.pt this model's stage 2 starts from: itself (2D) or inflate_from (3D)."""
    model = _model_entry(config, model_id)
    parent = model_id if model["dims"] == 2 else model.get("inflate_from")
    if parent is None:
        raise ConfigError(f"models[{model_id}] is 3D and needs `inflate_from: <2D model id>` (or `weights:`)")
    if _model_entry(config, parent).get("weights"):
        raise ConfigError(f"models[{model_id}].inflate_from={parent!r} uses released `weights:`, which have no "
                          "stage-1 file to inflate; train that 2D model or give this 3D model `weights:` too")
    return parent


def imported_weights_path(config: dict, model_id: str) -> str:
    """The local file of a model's `weights:` (an `hf://` path resolves from the hub cache)."""
    from medlatent.core.hub import resolve

    return str(resolve(_model_entry(config, model_id)["weights"]))
