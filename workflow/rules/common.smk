# Helpers shared by all workflow/rules/*.smk, in DAG order. Configuration is read only through
# medlatent.config; every function a rule directive calls is named get_*.
import re
from functools import lru_cache

from medlatent import config as mlconfig

# ----------------------------------------------------------------------------- setup
# Defaults from the schema shipped in the package, then the checks a schema cannot make.
mlconfig.validate(config)

DATA = mlconfig.data_dir(config)
RESULTS = mlconfig.results_dir(config)
ENV = "../../envs/medlatent.yaml"
ID = mlconfig.id_pattern()


wildcard_constraints:
    source=ID,
    shard=mlconfig.shard_pattern(),
    shards=mlconfig.shard_group_pattern(),
    split=mlconfig.split_pattern(),
    model=ID,
    task=ID,
    method=ID,
    seed=r"\d+",
    image_type=ID,


@lru_cache(maxsize=None)
def _slice_json(slicer, *ids):
    """Canonical JSON of `slicer(config, *ids)`, built once per ids: thousands of jobs share a few slices."""
    return mlconfig.canonical_json(slicer(config, *ids))


def get_slice(slicer):
    """params: a per-source config slice as canonical JSON for the CLI."""
    return lambda wildcards: _slice_json(slicer, wildcards.source)


# ----------------------------------------------------------------------------- fetch, curate, normalize


def get_curation_reports(wildcards):
    return expand(f"{DATA}/curated/{{source}}/report.json", source=mlconfig.source_ids(config))


def get_curate_mem_mb(wildcards, threads):
    """resources: a curate_source job's memory, one process's share for each of its (granted) threads."""
    return mlconfig.decode_mem_mb(config) * threads


NORMALIZED_SHARD = f"{DATA}/normalized/{{source}}/{{shard}}.h5"


def get_normalized_shards(wildcards):
    return [NORMALIZED_SHARD.format(source=source, shard=shard) for source, shard in mlconfig.all_source_shards(config)]


def _source_shards(source_id, splits):
    """Normalized shards of a source restricted to some splits."""
    shards = mlconfig.shard_ids(mlconfig.source(config, source_id))
    return [NORMALIZED_SHARD.format(source=source_id, shard=shard) for shard in shards if shard.split("-")[0] in splits]


# ----------------------------------------------------------------------------- train
# The model ids each way of making stage2.pt serves (2D, 3D, imported released `weights`).
def _model_pattern(ids):
    """Wildcard constraint matching exactly these model ids (and nothing when there are none)."""
    return "|".join(re.escape(i) for i in ids) if ids else "(?!)"


MODELS_2D = _model_pattern(mlconfig.trained_models(config, 2))
MODELS_3D = _model_pattern(mlconfig.trained_models(config, 3))
MODELS_IMPORTED = _model_pattern(mlconfig.imported_models(config))
# Demo runs: family models whose tiny random weights the workflow generates (demo_family_weights).
DEMO_WEIGHTS_DIFFUSERS = _model_pattern(mlconfig.demo_weights_models(config, "diffusers"))
DEMO_WEIGHTS_MAISI = _model_pattern(mlconfig.demo_weights_models(config, "maisi"))


def get_train_spec(stage):
    """params: the model's training slice of `stage` as canonical JSON."""
    return lambda wildcards: _slice_json(mlconfig.train_slice, wildcards.model, stage)


def get_train_resource(stage, key):
    """resources / threads of a training job (gpu, mem_mb, runtime, threads)."""
    return lambda wildcards: mlconfig.train_resources(config, wildcards.model, stage)[key]


def get_split_shards(wildcards):
    return _source_shards(wildcards.source, (wildcards.split,))


SHARD_LIST = f"{DATA}/normalized/{{source}}/{{split}}.shards.json"


def get_training_shard_lists(split):
    """The shard lists of `split` of every training source of the model's dims (that has shards in it)."""

    def shard_lists(wildcards):
        dims = mlconfig.model_dims(config, wildcards.model)
        sources = dict.fromkeys(s for s, _ in mlconfig.training_shards(config, dims, split))
        return [SHARD_LIST.format(source=source_id, split=split) for source_id in sources]

    return shard_lists


def get_training_manifests(wildcards):
    dims = mlconfig.model_dims(config, wildcards.model)
    return [f"{DATA}/curated/{s}/manifest.parquet" for s in mlconfig.training_sources(config, dims)]


def get_parent_stage1(wildcards):
    """The stage-1 weights stage 2 starts from: the model's own (2D) or its inflate_from model's (3D)."""
    return f"{RESULTS}/models/{mlconfig.stage1_parent(config, wildcards.model)}/stage1.pt"


def get_imported_weights(wildcards):
    return mlconfig.imported_weights_path(config, wildcards.model)


def get_import_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.import_weights_slice(config, wildcards.model))


def get_demo_weights_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.demo_weights_slice(config, wildcards.model))


def get_model_weights(wildcards):
    """Final weights of every model, trained or imported."""
    return [_model_weights(model_id) for model_id in mlconfig.model_ids(config)]


def _model_weights(model_id):
    return f"{RESULTS}/models/{model_id}/stage2.pt"


# ----------------------------------------------------------------------------- latents


def get_latents_spec(slicer):
    """params: a (model, source) config slice as canonical JSON for the CLI."""
    return lambda wildcards: _slice_json(slicer, wildcards.model, wildcards.source)


def get_latent_dataset_dir(wildcards):
    return f"{DATA}/latents/{wildcards.model}/{wildcards.source}"


def get_group_shard_files(wildcards):
    """The normalized shards an extract_latents job encodes (`mlconfig.extraction_groups`)."""
    shards = mlconfig.group_shards(wildcards.shards)
    return [NORMALIZED_SHARD.format(source=wildcards.source, shard=shard) for shard in shards]


def get_latent_parts(wildcards):
    """Part records of every extraction job of the source (empty shards too: they write no tar)."""
    return list(_latent_parts(wildcards.model, wildcards.source))


@lru_cache(maxsize=None)
def _latent_parts(model_id, source_id):
    groups = mlconfig.extraction_groups(config, source_id)
    return tuple(f"{DATA}/latent_parts/{model_id}/{source_id}/{group}.json" for group in groups)


def get_latent_indexes(wildcards):
    return [f"{DATA}/latents/{model}/{source}/index.json" for model, source in mlconfig.latent_pairs(config)]


# ----------------------------------------------------------------------------- publish


def get_published_indexes(wildcards):
    datasets = mlconfig.publish_slice(config)["datasets"]
    return [f"{DATA}/latents/{d['model']}/{d['source']}/index.json" for d in datasets]


def get_publish_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.publish_slice(config))


# ----------------------------------------------------------------------------- CAD


def get_cad_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.cad_slice(config, wildcards.task, wildcards.method, int(wildcards.seed)))


def get_cad_inputs(wildcards):
    """Manifest (labels, splits); shards for image-based methods; latent index or autoencoder weights."""
    task = mlconfig.cad_task(config, wildcards.task)
    method = mlconfig.cad_method(config, wildcards.task, wildcards.method)
    inputs = {"manifest": f"{DATA}/curated/{task['source']}/manifest.parquet", "shards": [], "model": []}
    if method["kind"] in ("medvae", "family"):
        inputs["model"] = f"{DATA}/latents/{method['model']}/{task['source']}/index.json"
    else:
        inputs["shards"] = _source_shards(task["source"], ("train", "test"))
    if method["kind"] == "slicewise":
        inputs["model"] = _model_weights(method["model"])
    elif method["kind"] == "external":
        inputs["model"] = method["external"]["weights"]
    return inputs


def get_cad_metrics(wildcards):
    return [
        f"{RESULTS}/cad/{task}/{method}/seed{seed}/metrics.json" for task, method, seed in mlconfig.cad_jobs(config)
    ]


def get_table_spec(table):
    return lambda wildcards: mlconfig.canonical_json(mlconfig.evaluation_table_slice(config, table))


# ----------------------------------------------------------------------------- evaluate: reconstruction, efficiency


def get_recon_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.recon_slice(config, wildcards.image_type))


def _recon_weights(image_type):
    """Autoencoder weights by the key the recon job looks up: model id, or external id."""
    weights = {}
    for method in mlconfig.recon_slice(config, image_type)["methods"]:
        if method["kind"] == "external":
            weights[method["id"]] = method["external"]["weights"]
        elif method["kind"] != "interpolation":
            weights[method["model"]] = _model_weights(method["model"])
    return weights


def get_recon_inputs(wildcards):
    spec = mlconfig.recon_slice(config, wildcards.image_type)
    shards = [path for source in spec["sources"] for path in _source_shards(source, (spec["split"],))]
    return {"shards": shards, "weights": sorted(set(_recon_weights(wildcards.image_type).values()))}


def get_recon_weights_arg(wildcards):
    return " ".join(f"{key}={path}" for key, path in sorted(_recon_weights(wildcards.image_type).items()))


def get_recon_outputs(kind):
    name = {"per_item": "per_item.csv", "panels": "panels.npz"}[kind]
    return lambda wildcards: [f"{RESULTS}/recon/{t}/{name}" for t in mlconfig.image_types(config)]


def get_efficiency_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.efficiency_slice(config))


def get_efficiency_weights(wildcards):
    """Final weights of the family models: the timing job reads their latent geometry."""
    return [_model_weights(model_id) for model_id in mlconfig.efficiency_slice(config)["families"]]


def get_efficiency_weights_arg(wildcards):
    families = mlconfig.efficiency_slice(config)["families"]
    return " ".join(f"{model_id}={_model_weights(model_id)}" for model_id in families)


# ----------------------------------------------------------------------------- report


def get_report_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.report_slice(config))


def get_report_config_hash(wildcards):
    return mlconfig.config_hash(config)
