# Sharing: not part of `rule all`; run `snakemake publish_latents` (it commits .dvc pointers
# and tags versions in the git repository of the working directory).


rule publish_latents:
    """dvc add + push each shareable latent dataset, tag latents/{model}/{source}/vN (one job: DVC locks the repo)."""
    input:
        get_published_indexes,
    output:
        f"{RESULTS}/publish/receipt.json",
    log:
        "logs/publish/publish.log",
    localrule: True
    conda:
        ENV
    params:
        spec=get_publish_spec,
    shell:
        "medlatent publish --spec {params.spec:q} --receipt {output} > {log} 2>&1"
