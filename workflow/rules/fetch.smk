rule fetch_source:
    """Bring one source's files into data/raw (or point at them) and write the receipt."""
    output:
        receipt=f"{DATA}/raw/{{source}}/fetch.json",
    params:
        spec=get_slice(mlconfig.fetch_slice),
        seed=mlconfig.project_seed(config),
    log:
        "logs/fetch/{source}.log",
    benchmark:
        "benchmarks/fetch/{source}.tsv"
    resources:
        downloads=1,
    conda:
        ENV
    shell:
        "medlatent fetch --spec {params.spec:q} --seed {params.seed} --receipt {output.receipt} > {log} 2>&1"
