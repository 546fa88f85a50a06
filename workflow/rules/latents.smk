# Latent datasets: each model on every source of its dims (any role), one job per shard.
# Why part records: see the docstring of medlatent.latents.extract.


rule extract_latents:
    """Encode one normalized shard: `{shard}.tar` in the dataset folder when it has items, plus its part record."""
    input:
        shard=f"{DATA}/normalized/{{source}}/{{shard}}.h5",
        manifest=f"{DATA}/curated/{{source}}/manifest.parquet",
        weights=f"{RESULTS}/models/{{model}}/stage2.pt",
    output:
        part=f"{DATA}/latent_parts/{{model}}/{{source}}/{{shard}}.json",
    log:
        "logs/latents/{model}/{source}/{shard}.log",
    benchmark:
        "benchmarks/latents/{model}/{source}/{shard}.tsv"
    conda:
        ENV
    threads: mlconfig.latents_threads(config)
    resources:
        gpu=mlconfig.latents_gpus(config),
    params:
        spec=get_latents_spec(mlconfig.latents_extract_slice),
        dataset=get_latent_dataset_dir,
    shell:
        "OMP_NUM_THREADS={threads} medlatent extract-latents --spec {params.spec:q} --shard-file {input.shard}"
        " --manifest {input.manifest} --weights {input.weights} --dataset-dir {params.dataset:q}"
        " --part {output.part} --gpus {resources.gpu} --threads {threads} > {log} 2>&1"


rule index_latents:
    """Check the shard tars against their part records; write index.json, timm's _info.json and the card."""
    input:
        parts=get_latent_parts,
        card=f"{RESULTS}/models/{{model}}/card.json",
    output:
        index=f"{DATA}/latents/{{model}}/{{source}}/index.json",
        info=f"{DATA}/latents/{{model}}/{{source}}/_info.json",
        card=f"{DATA}/latents/{{model}}/{{source}}/README.md",
    log:
        "logs/latents/{model}/{source}/index.log",
    benchmark:
        "benchmarks/latents/{model}/{source}/index.tsv"
    conda:
        ENV
    params:
        spec=get_latents_spec(mlconfig.latents_index_slice),
        dataset=get_latent_dataset_dir,
    shell:
        "medlatent index-latents --spec {params.spec:q} --card {input.card} --parts {input.parts}"
        " --dataset-dir {params.dataset:q} > {log} 2>&1"
