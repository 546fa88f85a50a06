# Helpers shared by all workflow/rules/*.smk: config validation and params slices.
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
