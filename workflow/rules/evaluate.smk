# Reconstruction quality (Table 2; MediBench fidelity and SegSim) per image type, and the
# efficiency of the CAD classifiers on images vs latents (Figure 2) plus storage per item.


rule recon_image_type:
    """PSNR, MS-SSIM (and SegSim for 3D) of every autoencoder and interpolation baseline on one image type."""
    input:
        unpack(get_recon_inputs),
    output:
        per_item=f"{RESULTS}/recon/{{image_type}}/per_item.csv",
        panels=f"{RESULTS}/recon/{{image_type}}/panels.npz",
    log:
        "logs/recon/{image_type}.log",
    benchmark:
        "benchmarks/recon/{image_type}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        gpu=mlconfig.evaluation_gpus(config, "recon"),
        mem_mb=mlconfig.recon_mem_mb(config),
    params:
        spec=get_recon_spec,
        weights=get_recon_weights_arg,
    shell:
        "OMP_NUM_THREADS={threads} medlatent recon --spec {params.spec:q} --shards {input.shards}"
        " --weights {params.weights} --threads {threads} --gpus {resources.gpu}"
        " --per-item {output.per_item} --panels {output.panels} > {log} 2>&1"


rule recon_table:
    """Mean +- std over seeds of the per-seed item means, per (image type, method)."""
    input:
        get_recon_outputs("per_item"),
    output:
        csv=report(f"{RESULTS}/tables/recon.csv", caption="../report/recon_table.rst", category="2. Reconstruction"),
        md=report(f"{RESULTS}/tables/recon.md", caption="../report/recon_table.rst", category="2. Reconstruction"),
    log:
        "logs/recon/table.log",
    benchmark:
        "benchmarks/recon/table.tsv"
    conda:
        ENV
    params:
        spec=get_table_spec("recon"),
    shell:
        "medlatent recon-table --spec {params.spec:q} --per-item {input} --csv {output.csv} --md {output.md} > {log} 2>&1"


rule efficiency_timing:
    """Latency, throughput and max batch of the CAD classifiers on images, on latents at every MedVAE f
    and on every family model's latent (its geometry read from its final weights)."""
    input:
        weights=get_efficiency_weights,
    output:
        f"{RESULTS}/efficiency/timing.json",
    log:
        "logs/efficiency/timing.log",
    benchmark:
        "benchmarks/efficiency/timing.tsv"
    conda:
        ENV
    # all cores: timings need the machine to themselves
    threads: workflow.cores
    resources:
        gpu=mlconfig.evaluation_gpus(config, "efficiency"),
    params:
        spec=get_efficiency_spec,
        weights=get_efficiency_weights_arg,
    shell:
        "OMP_NUM_THREADS={threads} medlatent efficiency --spec {params.spec:q} --weights {params.weights}"
        " --threads {threads} --gpus {resources.gpu} --out {output} > {log} 2>&1"


rule efficiency_table:
    """Efficiency table (timings, the device named) and storage per item of every latent dataset."""
    input:
        timing=f"{RESULTS}/efficiency/timing.json",
        indexes=get_latent_indexes,
    output:
        csv=report(
            f"{RESULTS}/tables/efficiency.csv", caption="../report/efficiency_table.rst", category="3. Efficiency"
        ),
        md=report(f"{RESULTS}/tables/efficiency.md", caption="../report/efficiency_table.rst", category="3. Efficiency"),
        storage_csv=report(
            f"{RESULTS}/tables/storage.csv", caption="../report/storage_table.rst", category="3. Efficiency"
        ),
        storage_md=report(
            f"{RESULTS}/tables/storage.md", caption="../report/storage_table.rst", category="3. Efficiency"
        ),
    log:
        "logs/efficiency/table.log",
    benchmark:
        "benchmarks/efficiency/table.tsv"
    conda:
        ENV
    params:
        spec=get_table_spec("efficiency"),
    shell:
        "medlatent efficiency-table --spec {params.spec:q} --timing {input.timing} --latent-indexes {input.indexes}"
        " --csv {output.csv} --md {output.md} --storage-csv {output.storage_csv} --storage-md {output.storage_md}"
        " > {log} 2>&1"
