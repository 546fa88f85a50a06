"""Per-rule config slices: what one job depends on, and nothing else.

Rules pass a slice to the CLI as canonical JSON, so Snakemake's params trigger reruns of
exactly the jobs whose slice changed. In DAG order: fetch, curate, normalize, train, latents,
publish, CAD, evaluation tables, report.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from medlatent.config.canonical import canonical_json, short_hash
from medlatent.config.evaluation import (
    cad_jobs,
    cad_method,
    cad_task,
    family_models,
    image_types,
    medvae_models,
    recon_methods,
)
from medlatent.config.load import merge
from medlatent.config.lookups import (
    latent_pairs,
    model_entry,
    project_seed,
    source,
    source_ids,
    training_sources,
)
from medlatent.config.resources import TRAIN_GPUS, TRAIN_RESOURCES
from medlatent.core.errors import ConfigError
from medlatent.core.ids import ITEM_KEYS

#: Posterior arrays `latents.store` may keep beside the classifier latent, in member order.
STORED_ARRAYS = ("mean", "logvar")


#: Training knobs a `stage1:` / `stage2:` block may leave out (the schema's stage block is
#: open). Loss weights are the LDM / public MedVAE values. `crop` (2D) and `patch` (3D) are
#: the training input sizes; `micro_batch` (per GPU, default batch_size / gpus) and the
#: granted GPUs give the gradient accumulation that keeps `batch_size` the GLOBAL batch.
#: `lr` of the adversarial stages (2D stage 1, 3D stage 2) is LDM's base rate: the optimiser
#: uses lr x batch_size (= 4.5e-6 x per-GPU batch x GPUs x accumulation, as published); the
#: 2D stage-2 `lr` is used as is (published Adam 4e-4). Resource requests (mem_mb, runtime,
#: threads; medlatent.config.resources) are not part of any slice, so editing them never reruns a job.
TRAIN_DEFAULTS: dict[str, Any] = {
    "gpus": TRAIN_GPUS,
    "micro_batch": None,
    "checkpoint_every": 1000,
    "val_batches": 4,
    "precision": "32",
}
ADVERSARIAL_DEFAULTS: dict[str, Any] = {
    "disc_start": 0,
    "kl_weight": 1.0e-6,
    "perceptual_weight": 1.0,
    "disc_weight": 0.5,
    "gradient_checkpointing": False,
}
CROP_2D = [384, 384]  # the public code trains on 384 x 384 images
PATCH_3D = [64, 64, 64]
TRAIN_STAGES = ("stage1", "stage2")


def fetch_slice(config: dict, source_id: str) -> dict:
    """fetch_source: the source's id, modality, dims and access block."""
    entry = source(config, source_id)
    return {"id": entry["id"], "modality": entry["modality"], "dims": entry["dims"], "access": entry["access"]}


def curate_slice(config: dict, source_id: str) -> dict:
    """curate_source: the source's curation, split and shard settings, the run seed, the decode check,
    and the item key scheme (a new scheme gives every item a new id: curation and what follows rerun)."""
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
        "item_keys": ITEM_KEYS,
    }


def normalize_slice(config: dict, source_id: str) -> dict:
    """The modality's block with the source's own overrides on top."""
    entry = source(config, source_id)
    block = merge(copy.deepcopy(config["normalize"][entry["modality"]]), entry.get("normalize", {}))
    return {"modality": entry["modality"], "dims": entry["dims"], **block}


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
    settings = {
        **TRAIN_DEFAULTS,
        **(ADVERSARIAL_DEFAULTS if adversarial else {}),
        **({"crop": CROP_2D} if model["dims"] == 2 else {"patch": PATCH_3D}),
        **block,
    }
    if adversarial and model["dims"] == 2:
        settings.setdefault("embed_weight", 100.0)  # BiomedCLIP consistency weight, public code
    if adversarial and model["dims"] == 3 and settings["disc_weight"] and len(set(settings["patch"])) != 1:
        raise ConfigError(
            f"models[{model['id']}].{stage}.patch {settings['patch']} is not a cube: the 3D adversarial term "
            "averages the discriminator's logit maps of the slices along all three axes element-wise (public "
            "MedVAE code), which needs one size per axis. Use a cubic patch, or disc_weight: 0 to train "
            "without the adversarial term."
        )
    settings["lr_scaled_by_batch"] = adversarial
    return settings


def network_entry(config: dict, model_id: str) -> dict:
    """A model entry without `sources`: which latent datasets a model makes changes no weights or latent."""
    return {key: value for key, value in model_entry(config, model_id).items() if key != "sources"}


def train_slice(config: dict, model_id: str, stage: str) -> dict:
    """What one training job depends on: this model, this stage, and the frozen networks it uses.

    Stage 1 leaves out the model's `stage2:` block, so editing a stage-2 knob reruns only
    that model's stage-2 job. 3D models take no embedder (no BiomedCLIP term in 3D); 2D
    stage 2 takes no perceptual network.
    """
    model = model_entry(config, model_id)
    if stage not in TRAIN_STAGES or (stage == "stage1" and model["dims"] != 2):
        raise ConfigError(f"models[{model_id}]: no training stage {stage!r} for a {model['dims']}D model")
    entry = {
        key: _without_resources(value) if key in TRAIN_STAGES else value
        for key, value in network_entry(config, model_id).items()
        if not (stage == "stage1" and key == "stage2")
    }
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


def import_weights_slice(config: dict, model_id: str) -> dict:
    """A model with released `weights:`: its entry and the run's demo flag."""
    return {"model": network_entry(config, model_id), "demo": config["project"]["demo"]}


def demo_weights_slice(config: dict, model_id: str) -> dict:
    """A demo family model whose weights are generated: its entry and the run's seed."""
    return {"model": network_entry(config, model_id), "seed": project_seed(config)}


def latents_extract_slice(config: dict, model_id: str, source_id: str) -> dict:
    """What encoding one shard depends on; window settings only for 3D (2D jobs ignore them).

    `store`: the arrays kept beside the classifier latent. A 3D latent, and the latent of any
    family but medvae, is the unprojected mean itself, so `mean` is dropped for them: toggling
    it reruns only the jobs of projected 2D MedVAE latents.
    """
    model, entry = model_entry(config, model_id), source(config, source_id)
    if model["dims"] != entry["dims"]:
        raise ConfigError(f"model {model_id!r} is {model['dims']}D but source {source_id!r} is {entry['dims']}D")
    settings = config["latents"]
    unprojected = entry["dims"] == 3 or model["family"] != "medvae"
    store = [name for name in STORED_ARRAYS if name in settings["store"] and not (name == "mean" and unprojected)]
    spec = {
        "model": model_id,
        "source": source_id,
        "modality": entry["modality"],
        "dims": entry["dims"],
        "batch_size": settings["batch_size"],
        "max_memory_gb": settings["max_memory_gb"],
        "precision": settings["precision"],
        "store": store,
        "timm_json": settings["timm_json"],
    }
    if entry["dims"] == 3:
        spec.update({key: settings[key] for key in ("window", "overlap", "blend", "sw_batch_size")})
    return spec


def latents_index_slice(config: dict, model_id: str, source_id: str) -> dict:
    """Dataset-level facts for index.json and the card: licence, names, and the config hash.

    The hash covers everything that shapes the latents (model, source, normalization,
    extraction settings), not the licence, display names or the classification scale
    (`evaluation.cad.latent_scale`, recorded so a classifier reads it from the index).
    """
    entry, model = source(config, source_id), network_entry(config, model_id)
    extract = latents_extract_slice(config, model_id, source_id)
    made_of = {
        "model": model,
        "source": {key: value for key, value in entry.items() if key not in ("license", "name")},
        "normalize": normalize_slice(config, source_id),
        # the budget only bounds how many items share a forward (batch_size stays the cap): not hashed
        "extract": {key: value for key, value in extract.items() if key != "max_memory_gb"},
    }
    return {
        "model": model_id,
        "source": source_id,
        "source_name": entry.get("name", source_id),
        "anatomy": entry.get("anatomy"),
        "modality": entry["modality"],
        "dims": entry["dims"],
        "license": entry["license"],
        **({"weights_license": model["license"]} if "license" in model else {}),
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
        weights_license = model_entry(config, model_id).get("license")
        if weights_license is not None:
            dataset["weights_license"] = weights_license
        shareable = sharing_allowed(license_block) and sharing_allowed(weights_license or {"share_derived": True})
        if wanted is None and not shareable:
            withheld.append(dataset)
        elif wanted is None or source_id in wanted:
            datasets.append(dataset)
    return {
        "remote": config["publish"]["remote"],
        "data": config["paths"]["data"],
        "datasets": datasets,
        "withheld": withheld,
    }


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
        batch_size = cad[
            "batch_size_3d_images" if method["kind"] in ("highres", "interpolation") else "batch_size_3d_latents"
        ]
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
        spec.update(
            {
                "n_items": recon["n_volumes_3d"],
                "seeds": recon["seeds_3d"],
                "crops": {e["id"]: recon["crop_overrides"].get(e["id"], recon["crop_3d"]) for e in entries},
                "segmenter": segmenter_slice(config, modality, spec["sources"]),
            }
        )
    return spec


#: Intensities a bundle is given, per modality: CT back to HU through the recorded window; MRI
#: (scaled per volume, so no physical unit to return to) to [0, 1], zero background as in a
#: scanner's image, for the bundle's own normalisation to act on.
MRI_BUNDLE_RANGE = [0.0, 1.0]


def segmenter_slice(config: dict, modality: str, source_ids: list[str]) -> dict:
    """The SegSim segmenter of a 3D modality; a bundle also gets each source's grid and intensity map."""
    recon = config["evaluation"]["recon"]
    if modality not in recon["segmenter"]:
        raise ConfigError(f"evaluation.recon.segmenter has no entry for modality {modality!r}")
    entry = recon["segmenter"][modality]
    keys = (
        ("kind", "thresholds", "labels")
        if entry["kind"] == "threshold"
        else ("kind", "bundle", "labels", "sw_batch_size", "max_memory_gb")
    )
    spec = {key: entry[key] for key in keys if key in entry}
    spec["volume_change"] = recon["segqc_volume_change"]
    if entry["kind"] == "monai_bundle":
        # the sliding-window budget: its key names the modality; unset, it is derived from mem_mb on CPU
        spec.update({"modality": modality, "mem_mb": recon["mem_mb"], "sources": {}})
        for source_id in source_ids:
            block = normalize_slice(config, source_id)
            if block.get("spacing") is None:
                raise ConfigError(
                    f"normalize.spacing of source {source_id} is null: a monai_bundle segmenter needs the "
                    "voxel size of the normalized volumes (set normalize.spacing)"
                )
            spec["sources"][source_id] = {
                "spacing": block["spacing"],
                "output_range": block["output_range"],
                "bundle_range": block["hu_window"] if modality == "ct" else MRI_BUNDLE_RANGE,
            }
    return spec


def efficiency_slice(config: dict) -> dict:
    """Timing of the CAD classifiers on full-size inputs, on latents at every MedVAE model's f and on
    the latent of every family model (`families`: ids; the job reads each geometry from its weights)."""
    cad, efficiency = config["evaluation"]["cad"], config["evaluation"]["efficiency"]
    return {
        **{
            key: efficiency[key]
            for key in (
                "image_size_2d",
                "image_size_3d",
                "batch_size",
                "warmup",
                "iterations",
                "max_batch_cap_cpu",
                "max_batch_cap_gpu",
            )
        },
        "classifier_2d": cad["classifier_2d"],
        "classifier_3d": cad["classifier_3d"],
        "f_2d": sorted({m["f"] for m in medvae_models(config["models"]) if m["dims"] == 2}),
        "f_3d": sorted({m["f"] for m in medvae_models(config["models"]) if m["dims"] == 3}),
        "families": [m["id"] for m in family_models(config["models"])],
        "demo": config["project"]["demo"],
    }


def evaluation_table_slice(config: dict, table: str) -> dict:
    """What a table (cad, recon, efficiency) names beside its numbers.

    Its `config_hash` covers exactly the slices of the jobs behind the table, so the table
    changes (and reruns) only when they do; the report names the hash of the whole config.
    """
    if table == "cad":
        made_of, extra = (
            [cad_slice(config, *job) for job in cad_jobs(config)],
            {"seeds": config["evaluation"]["cad"]["seeds"]},
        )
    elif table == "recon":
        made_of = [recon_slice(config, image_type) for image_type in image_types(config)]
        extra = {
            "segmenters": [
                s
                for s in {canonical_json(r["segmenter"]): r["segmenter"] for r in made_of if "segmenter" in r}.values()
            ]
        }
    elif table == "efficiency":
        made_of = efficiency_slice(config)
        extra = {"batch_size": made_of["batch_size"]}
    else:
        raise ConfigError(f"unknown evaluation table {table!r}; choose cad, recon or efficiency")
    return {
        "table": table,
        "config_hash": short_hash(made_of),
        "project": config["project"]["name"],
        "demo": config["project"]["demo"],
        **extra,
    }


def config_hash(config: dict) -> str:
    """Short sha256 of the whole (validated) configuration: named by every report figure."""
    return short_hash(config)


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
