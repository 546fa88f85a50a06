rule curate_source:
    """Scan one source: keep or reject every file with a reason, hash patients, split, shard."""
    input:
        receipt=f"{DATA}/raw/{{source}}/fetch.json",
    output:
        manifest=f"{DATA}/curated/{{source}}/manifest.parquet",
        rejected=f"{DATA}/curated/{{source}}/rejected.parquet",
        report=f"{DATA}/curated/{{source}}/report.json",
        # item -> raw file map: real file names can carry patient ids, so it stays in data/raw
        files=f"{DATA}/raw/{{source}}/files_index.parquet",
    log:
        "logs/curate/{source}.log",
    benchmark:
        "benchmarks/curate/{source}.tsv"
    conda:
        ENV
    threads: mlconfig.curate_threads(config)
    resources:
        mem_mb=get_curate_mem_mb,
    params:
        spec=get_slice(mlconfig.curate_slice),
        project=mlconfig.canonical_json(mlconfig.project_settings(config)),
    shell:
        "medlatent curate --spec {params.spec:q} --project {params.project:q} --receipt {input.receipt}"
        " --manifest {output.manifest} --rejected {output.rejected} --report {output.report}"
        " --files-index {output.files} --workers {threads} --mem-mb {resources.mem_mb} > {log} 2>&1"
