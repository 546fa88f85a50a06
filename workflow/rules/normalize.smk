rule normalize_shard:
    """Decode, reorient, resample and scale one shard of a source into an HDF5 shard."""
    input:
        manifest=f"{DATA}/curated/{{source}}/manifest.parquet",
        files=f"{DATA}/raw/{{source}}/files_index.parquet",
        receipt=f"{DATA}/raw/{{source}}/fetch.json",
    output:
        NORMALIZED_SHARD,
    log:
        "logs/normalize/{source}/{shard}.log",
    benchmark:
        "benchmarks/normalize/{source}/{shard}.tsv"
    conda:
        ENV
    resources:
        mem_mb=mlconfig.decode_mem_mb(config),
    params:
        spec=get_slice(mlconfig.normalize_slice),
        demo=mlconfig.is_demo(config),
    shell:
        "medlatent normalize --spec {params.spec:q} --shard {wildcards.shard} --manifest {input.manifest}"
        " --files-index {input.files} --receipt {input.receipt} --demo {params.demo} --mem-mb {resources.mem_mb}"
        " --out {output} > {log} 2>&1"
