"""Ids and entries the rules enumerate: paths, project flags, sources and shards, models, latent datasets."""

from __future__ import annotations

from medlatent.core.errors import ConfigError
from medlatent.core.ids import SPLITS, shard_id

#: Source roles whose items train the models of their dims.
TRAIN_ROLES = ("train", "both")


def data_dir(config: dict) -> str:
    """`paths.data`: raw, curated, normalized and latent data."""
    return config["paths"]["data"]


def results_dir(config: dict) -> str:
    """`paths.results`: models, metrics, tables, figures, the report."""
    return config["paths"]["results"]


def project_seed(config: dict) -> int:
    """`project.seed`: the seed of every random choice of the run."""
    return config["project"]["seed"]


def is_demo(config: dict) -> bool:
    """`project.demo`: the run is the synthetic demo."""
    return config["project"]["demo"]


def project_settings(config: dict) -> dict:
    """The `project` block (curation needs its salt settings and demo flag)."""
    return config["project"]


def source_ids(config: dict) -> list[str]:
    """Every source id, in config order."""
    return [s["id"] for s in config["sources"]]


def sources(config: dict) -> list[dict]:
    """Every source entry, in config order."""
    return list(config["sources"])


def source(config: dict, source_id: str) -> dict:
    """The `sources` entry of `source_id`; ConfigError lists the configured ids."""
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
    return [shard_id(s, k) for s in used for k in range(source_entry["shards"][s])]


def split_pattern() -> str:
    """The regex of a split name: one of `SPLITS`."""
    return "|".join(SPLITS)


def shard_pattern() -> str:
    """The regex of a shard id as `shard_ids` writes them: `<split>-<three or more digits>`.

    Written `\\d\\d\\d+`, not `\\d{3,}`: Snakemake cannot parse a comma inside braces of a constraint.
    """
    return f"({split_pattern()})-\\d\\d\\d+"


def shard_group_pattern() -> str:
    """The regex of a shard group id as `extraction_groups` writes them: `<split>-<first>-<last>`."""
    return f"({split_pattern()})-\\d\\d\\d+-\\d\\d\\d+"


def extraction_groups(config: dict, source_id: str) -> list[str]:
    """The extract_latents jobs of a source: runs of up to `latents.shards_per_job` shards of one split.

    Named by split, first and last shard number ('train-000-007', ..., 'test-000-000'). One job
    per shard would put tens of thousands of jobs in a real-scale DAG (and load the model that
    often); a run of shards is one job, one model load, one part record.
    """
    per_job = config["latents"]["shards_per_job"]
    shards = shard_ids(source(config, source_id))
    groups = []
    for split in SPLITS:
        in_split = [shard for shard in shards if shard.split("-")[0] == split]
        for start in range(0, len(in_split), per_job):
            run = in_split[start : start + per_job]
            groups.append(f"{run[0]}-{run[-1].split('-')[1]}")
    return groups


def group_shards(group: str) -> list[str]:
    """The shard ids of an `extraction_groups` id, in order."""
    split, first, last = group.split("-")
    return [shard_id(split, number) for number in range(int(first), int(last) + 1)]


def all_source_shards(config: dict) -> list[tuple[str, str]]:
    """(source, shard) of every normalized shard of the run."""
    return [(s["id"], shard) for s in config["sources"] for shard in shard_ids(s)]


def model_ids(config: dict) -> list[str]:
    """Every model id, trained or imported, in config order."""
    return [m["id"] for m in config["models"]]


def model_entry(config: dict, model_id: str) -> dict:
    """The `models` entry of `model_id`; ConfigError lists the configured ids."""
    for entry in config["models"]:
        if entry["id"] == model_id:
            return entry
    raise ConfigError(f"unknown model {model_id!r}; configured: {[m['id'] for m in config['models']]}")


def model_dims(config: dict, model_id: str) -> int:
    """2 or 3: the dims of model `model_id`."""
    return model_entry(config, model_id)["dims"]


def latent_pairs(config: dict) -> list[tuple[str, str]]:
    """(model, source) of every latent dataset: each model on every source of its dims (any role) or its `sources`."""
    return [
        (m["id"], s["id"])
        for m in config["models"]
        for s in config["sources"]
        if m["dims"] == s["dims"] and (m.get("sources") is None or s["id"] in m["sources"])
    ]


def training_sources(config: dict, dims: int) -> list[str]:
    """Sources the models of `dims` train on: that dims, role train or both."""
    return [s["id"] for s in config["sources"] if s["dims"] == dims and s["role"] in TRAIN_ROLES]


def training_shards(config: dict, dims: int, split: str) -> list[tuple[str, str]]:
    """(source, shard) of every `split` shard of the training sources of `dims`."""
    return [
        (source_id, shard)
        for source_id in training_sources(config, dims)
        for shard in shard_ids(source(config, source_id))
        if shard.startswith(f"{split}-")
    ]


def trained_models(config: dict, dims: int) -> list[str]:
    """Models of `dims` that the workflow trains (those with `weights:` are imported instead)."""
    return [m["id"] for m in config["models"] if m["dims"] == dims and not m.get("weights")]


def imported_models(config: dict) -> list[str]:
    """Models with released `weights:`: imported, not trained."""
    return [m["id"] for m in config["models"] if m.get("weights")]


def stage1_parent(config: dict, model_id: str) -> str:
    """The model whose stage1.pt this model's stage 2 starts from: itself (2D) or inflate_from (3D)."""
    model = model_entry(config, model_id)
    parent = model_id if model["dims"] == 2 else model.get("inflate_from")
    if parent is None:
        raise ConfigError(f"models[{model_id}] is 3D and needs `inflate_from: <2D model id>` (or `weights:`)")
    if model_entry(config, parent).get("weights"):
        raise ConfigError(
            f"models[{model_id}].inflate_from={parent!r} uses released `weights:`, which have no "
            "stage-1 file to inflate; train that 2D model or give this 3D model `weights:` too"
        )
    return parent


#: What a demo run writes under `paths.results` for a family model with generated weights (rule
#: demo_family_weights): a diffusers folder, or a MAISI state-dict file.
DEMO_WEIGHTS = {"diffusers": "demo-weights/{model}", "maisi": "demo-weights/{model}.pt"}


def demo_weights_path(config: dict, family: str, model_id: str = "{model}") -> str:
    """Where the demo writes the generated weights of `model_id` (default: the rule's wildcard pattern)."""
    return f"{results_dir(config)}/{DEMO_WEIGHTS[family].format(model=model_id)}"


def demo_weights_models(config: dict, family: str) -> list[str]:
    """Models of `family` whose tiny random weights a demo run generates: their `weights:` is `demo_weights_path`.

    Outside the demo (`project.demo: false`) nothing is generated, whatever the path says.
    """
    if not is_demo(config):
        return []
    return [
        m["id"]
        for m in config["models"]
        if m["family"] == family and m.get("weights") == demo_weights_path(config, family, m["id"])
    ]


def imported_weights_path(config: dict, model_id: str) -> str:
    """The local file of a model's `weights:` (an `hf://` path resolves from the hub cache)."""
    from medlatent.core.hub import resolve

    return str(resolve(model_entry(config, model_id)["weights"]))
