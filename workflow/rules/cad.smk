# Downstream CAD (Table 1; MediBench latent utility): one job per (task, method, seed). Each job's
# params hold only its task entry, its method and the evaluation.cad knobs it uses.


rule cad_train:
    """Train and test one CAD classifier: one task, one input method, one seed."""
    input:
        unpack(get_cad_inputs),
    output:
        f"{RESULTS}/cad/{{task}}/{{method}}/seed{{seed}}/metrics.json",
    log:
        "logs/cad/{task}/{method}/seed{seed}.log",
    benchmark:
        "benchmarks/cad/{task}/{method}/seed{seed}.tsv"
    conda:
        ENV
    threads: mlconfig.cad_train_resources(config)["threads"]
    resources:
        gpu=mlconfig.cad_train_resources(config)["gpu"],
    params:
        spec=get_cad_spec,
    shell:
        "OMP_NUM_THREADS={threads} medlatent cad-train --spec {params.spec:q} --manifest {input.manifest}"
        " --shards {input.shards} --model-input {input.model} --threads {threads} --gpus {resources.gpu}"
        " --out {output} > {log} 2>&1"


rule cad_table:
    """AUROC, accuracy and macro-F1 per (task, method): mean +- std over seeds."""
    input:
        get_cad_metrics,
    output:
        csv=report(f"{RESULTS}/tables/cad.csv", caption="../report/cad_table.rst", category="1. Downstream CAD"),
        md=report(f"{RESULTS}/tables/cad.md", caption="../report/cad_table.rst", category="1. Downstream CAD"),
    log:
        "logs/cad/table.log",
    benchmark:
        "benchmarks/cad/table.tsv"
    conda:
        ENV
    params:
        spec=get_table_spec("cad"),
    shell:
        "medlatent cad-table --spec {params.spec:q} --metrics {input} --csv {output.csv} --md {output.md} > {log} 2>&1"
