# MedLatent: fetch -> curate -> normalize -> train -> latents -> CAD/evaluate -> report -> publish.
# Thin on purpose: the logic lives in src/medlatent, the numbers in config.yaml, the defaults
# in the schema shipped with the package (src/medlatent/config/schema.yaml).
from snakemake.utils import min_version

min_version("9.0")


# The recipe next to this Snakefile, whatever the working directory (-d); --configfile
# files are merged on top of it (mappings key by key, lists replaced).
configfile: f"{workflow.basedir}/config.yaml"


# `snakemake --report report.html`: this description, then every output flagged with report().
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/curate.smk"
include: "workflow/rules/normalize.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/latents.smk"
include: "workflow/rules/publish.smk"
include: "workflow/rules/cad.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_curation_reports,
        get_normalized_shards,
        get_model_weights,
        get_latent_indexes,
        f"{RESULTS}/report/summary.md",


# Stage targets: `snakemake data` (fetch -> curate -> normalize), `models`, `latents`.
rule data:
    input:
        get_curation_reports,
        get_normalized_shards,
    localrule: True


rule models:
    input:
        get_model_weights,
    localrule: True


rule latents:
    input:
        get_latent_indexes,
    localrule: True
