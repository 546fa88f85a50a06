# MedLatent: fetch -> curate -> normalize -> train -> latents -> CAD/evaluate -> report -> publish.
# Thin on purpose: the logic lives in src/medlatent, the numbers in config.yaml, the defaults
# in workflow/schemas/config.schema.yaml.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    source=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    shard=r"(train|val|test)-\d{3}",


include: "workflow/rules/fetch.smk"
include: "workflow/rules/curate.smk"
include: "workflow/rules/normalize.smk"


rule all:
    input:
        curation_reports,
        normalized_shards,
    default_target: True
