# Figures for `snakemake --report report.html` and results/report/summary.md, the one file that
# lists every table, figure and curation count (the last output of `make demo`).


rule report_summary:
    """AUROC bars, recon panels, per-structure Dice, efficiency, training curves, curation counts; the summary."""
    input:
        tables=[f"{RESULTS}/tables/{name}.md" for name in ("cad", "recon", "efficiency", "storage")],
        cad=f"{RESULTS}/tables/cad.csv",
        efficiency=f"{RESULTS}/tables/efficiency.csv",
        panels=get_recon_outputs("panels"),
        recon_per_item=get_recon_outputs("per_item"),
        curation=get_curation_reports,
        weights=get_model_weights,
    output:
        cad=report(f"{RESULTS}/figures/cad_auroc.png", caption="../report/cad_auroc.rst", category="1. Downstream CAD"),
        recon=report(
            f"{RESULTS}/figures/recon_panels.png", caption="../report/recon_panels.rst", category="2. Reconstruction"
        ),
        structures=report(
            f"{RESULTS}/figures/segsim_structures.png",
            caption="../report/segsim_structures.rst",
            category="2. Reconstruction",
        ),
        efficiency=report(
            f"{RESULTS}/figures/efficiency.png", caption="../report/efficiency.rst", category="3. Efficiency"
        ),
        training=report(
            f"{RESULTS}/figures/training_curves.png", caption="../report/training_curves.rst", category="4. Training"
        ),
        curation=report(
            f"{RESULTS}/figures/curation_counts.png", caption="../report/curation_counts.rst", category="5. Curation"
        ),
        summary=report(f"{RESULTS}/report/summary.md", caption="../report/summary.rst", category="0. Summary"),
    log:
        "logs/report/summary.log",
    benchmark:
        "benchmarks/report/summary.tsv"
    conda:
        ENV
    params:
        spec=get_report_spec,
        config_hash=get_report_config_hash,
        figures=lambda wildcards, output: os.path.dirname(output.cad),
    shell:
        "medlatent report --spec {params.spec:q} --tables {input.tables} --cad-csv {input.cad}"
        " --efficiency-csv {input.efficiency} --panels {input.panels}"
        " --recon-per-item {input.recon_per_item} --curation {input.curation}"
        " --weights {input.weights} --figures-dir {params.figures} --summary {output.summary} > {log} 2>&1"
