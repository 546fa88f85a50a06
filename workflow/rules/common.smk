# Helpers shared by all workflow/rules/*.smk: config validation and params slices.
import re

from snakemake.utils import validate

from medlatent import config as mlconfig


validate(config, "../schemas/config.schema.yaml", set_default=True)
mlconfig.check_references(config)

DATA = config["paths"]["data"]
RESULTS = config["paths"]["results"]
ENV = "../../envs/medlatent.yaml"


def slice_param(slicer):
    """A params function: the rule's config slice as canonical JSON for the CLI."""
    return lambda wildcards: mlconfig.canonical_json(slicer(config, wildcards.source))


def curation_reports(wildcards):
    return expand(f"{DATA}/curated/{{source}}/report.json", source=mlconfig.source_ids(config))


def normalized_shards(wildcards):
    return [
        f"{DATA}/normalized/{source}/{shard}.h5"
        for source, shard in mlconfig.all_source_shards(config)
    ]


def latents_param(slicer):
    """A params function: a (model, source) config slice as canonical JSON for the CLI."""
    return lambda wildcards: mlconfig.canonical_json(slicer(config, wildcards.model, wildcards.source))


def latent_dataset_dir(wildcards):
    return f"{DATA}/latents/{wildcards.model}/{wildcards.source}"


def latent_parts(wildcards):
    """Part records of every shard of the source (empty shards too: they write no tar)."""
    shards = mlconfig.shard_ids(mlconfig.source(config, wildcards.source))
    return [f"{DATA}/latent_parts/{wildcards.model}/{wildcards.source}/{shard}.json" for shard in shards]


def latent_indexes(wildcards):
    return [f"{DATA}/latents/{model}/{source}/index.json" for model, source in mlconfig.latent_pairs(config)]


def published_indexes(wildcards):
    datasets = mlconfig.publish_slice(config)["datasets"]
    return [f"{DATA}/latents/{d['model']}/{d['source']}/index.json" for d in datasets]


def publish_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.publish_slice(config))


# ----------------------------------------------------------------------------- evaluation: CAD, reconstruction, efficiency, report

EVAL_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def eval_weights(model_id):
    return f"{RESULTS}/models/{model_id}/stage2.pt"


def eval_shards(source_id, splits):
    """Normalized shards of a source restricted to some splits (CAD reads train + test only)."""
    shards = mlconfig.shard_ids(mlconfig.source(config, source_id))
    return [f"{DATA}/normalized/{source_id}/{shard}.h5" for shard in shards if shard.split("-")[0] in splits]


def cad_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.cad_slice(config, wildcards.task, wildcards.method, int(wildcards.seed)))


def cad_inputs(wildcards):
    """Manifest (labels, splits); shards for image-based methods; latent index or autoencoder weights."""
    task = mlconfig.cad_task(config, wildcards.task)
    method = mlconfig.cad_method(config, wildcards.task, wildcards.method)
    inputs = {"manifest": f"{DATA}/curated/{task['source']}/manifest.parquet", "shards": [], "model": []}
    if method["kind"] == "medvae":
        inputs["model"] = f"{DATA}/latents/{method['model']}/{task['source']}/index.json"
    else:
        inputs["shards"] = eval_shards(task["source"], ("train", "test"))
    if method["kind"] == "slicewise":
        inputs["model"] = eval_weights(method["model"])
    elif method["kind"] == "external":
        inputs["model"] = method["external"]["weights"]
    return inputs


def cad_metrics(wildcards):
    return [f"{RESULTS}/cad/{task}/{method}/seed{seed}/metrics.json" for task, method, seed in mlconfig.cad_jobs(config)]


def table_spec(table):
    return lambda wildcards: mlconfig.canonical_json(mlconfig.evaluation_table_slice(config, table))


def recon_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.recon_slice(config, wildcards.image_type))


def _recon_weights(image_type):
    """Autoencoder weights by the key the recon job looks up: model id, or external id."""
    weights = {}
    for method in mlconfig.recon_slice(config, image_type)["methods"]:
        if method["kind"] == "external":
            weights[method["id"]] = method["external"]["weights"]
        elif method["kind"] != "interpolation":
            weights[method["model"]] = eval_weights(method["model"])
    return weights


def recon_inputs(wildcards):
    spec = mlconfig.recon_slice(config, wildcards.image_type)
    shards = [path for source in spec["sources"] for path in eval_shards(source, (spec["split"],))]
    return {"shards": shards, "weights": sorted(set(_recon_weights(wildcards.image_type).values()))}


def recon_weights_arg(wildcards):
    return " ".join(f"{key}={path}" for key, path in sorted(_recon_weights(wildcards.image_type).items()))


def recon_outputs(kind):
    name = {"per_item": "per_item.csv", "panels": "panels.npz"}[kind]
    return lambda wildcards: [f"{RESULTS}/recon/{t}/{name}" for t in mlconfig.image_types(config)]


def efficiency_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.efficiency_slice(config))


def report_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.report_slice(config))


def report_weights(wildcards):
    return [eval_weights(model["id"]) for model in config["models"]]


def report_config_hash(wildcards):
    return mlconfig.config_hash(config)


# ----------------------------------------------------------------------------- training (train.smk)
MODELS_2D = mlconfig.trained_models(config, 2)
MODELS_3D = mlconfig.trained_models(config, 3)
MODELS_IMPORTED = mlconfig.imported_models(config)


def model_pattern(ids):
    """Wildcard constraint matching exactly these model ids (and nothing when there are none)."""
    return "|".join(re.escape(i) for i in ids) if ids else "(?!)"


def train_spec(stage):
    """params: the model's training slice of `stage` as canonical JSON."""
    return lambda wildcards: mlconfig.canonical_json(mlconfig.train_slice(config, wildcards.model, stage))


def train_resource(stage, key):
    """resources / threads of a training job (gpu, mem_mb, runtime, threads)."""
    return lambda wildcards: mlconfig.train_resources(config, wildcards.model, stage)[key]


def training_shards(split):
    """The `split` shards of every training source of the model's dims."""

    def shards(wildcards):
        dims = mlconfig.model_dims(config, wildcards.model)
        return [f"{DATA}/normalized/{s}/{shard}.h5" for s, shard in mlconfig.training_shards(config, dims, split)]

    return shards


def training_manifests(wildcards):
    dims = mlconfig.model_dims(config, wildcards.model)
    return [f"{DATA}/curated/{s}/manifest.parquet" for s in mlconfig.training_sources(config, dims)]


def parent_stage1(wildcards):
    return f"{RESULTS}/models/{mlconfig.stage1_parent(config, wildcards.model)}/stage1.pt"


def imported_weights(wildcards):
    return mlconfig.imported_weights_path(config, wildcards.model)


def import_spec(wildcards):
    return mlconfig.canonical_json(mlconfig.import_weights_slice(config, wildcards.model))


def model_weights(wildcards):
    """Final weights of every model, trained or imported."""
    return [f"{RESULTS}/models/{m['id']}/stage2.pt" for m in config["models"]]
