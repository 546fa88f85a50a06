# Latent datasets: each model on every source of its dims (any role), one job per run of
# `latents.shards_per_job` shards of a split. Why part records: see medlatent.latents.extract.


rule extract_latents:
    """Encode a run of shards: each `<shard>.tar` in the dataset folder when it has items, plus the part record."""
    input:
        shards=get_group_shard_files,
        manifest=f"{DATA}/curated/{{source}}/manifest.parquet",
        weights=f"{RESULTS}/models/{{model}}/stage2.pt",
    output:
        part=f"{DATA}/latent_parts/{{model}}/{{source}}/{{shards}}.json",
    log:
        "logs/latents/{model}/{source}/{shards}.log",
    benchmark:
        "benchmarks/latents/{model}/{source}/{shards}.tsv"
    conda:
        ENV
    threads: mlconfig.latents_threads(config)
    resources:
        gpu=mlconfig.latents_gpus(config),
    params:
        spec=get_latents_spec(mlconfig.latents_extract_slice),
        dataset=get_latent_dataset_dir,
    shell:
        "OMP_NUM_THREADS={threads} medlatent extract-latents --spec {params.spec:q} --shard-files {input.shards}"
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
