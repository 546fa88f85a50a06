rule fetch_source:
    """Bring one source's files into data/raw (or point at them) and write the receipt."""
    output:
        receipt=f"{DATA}/raw/{{source}}/fetch.json",
    log:
        "logs/fetch/{source}.log",
    benchmark:
        "benchmarks/fetch/{source}.tsv"
    conda:
        ENV
    resources:
        downloads=1,
    params:
        spec=get_slice(mlconfig.fetch_slice),
        seed=mlconfig.project_seed(config),
    shell:
        "medlatent fetch --spec {params.spec:q} --seed {params.seed} --receipt {output.receipt} > {log} 2>&1"
