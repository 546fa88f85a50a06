"""recon, recon-table, efficiency, efficiency-table: the rules of evaluate.smk."""

from __future__ import annotations

import argparse

from medlatent.commands import spec_command


def recon(args: argparse.Namespace) -> None:
    from medlatent.core.gpus import job_device
    from medlatent.evaluate.recon import evaluate_image_type, write_image_type_outputs

    weights = dict(pair.split("=", 1) for pair in args.weights)
    with job_device(args.threads, args.gpus) as device:
        rows, panels = evaluate_image_type(args.spec, args.shards, weights, device)
    write_image_type_outputs(rows, panels, args.per_item, args.panels)


def recon_table(args: argparse.Namespace) -> None:
    from medlatent.report.tables import write_recon_table

    write_recon_table(args.spec, args.per_item, args.csv, args.md)


def efficiency(args: argparse.Namespace) -> None:
    from medlatent.core.gpus import job_device
    from medlatent.evaluate.efficiency import efficiency_rows, write_timing
    from medlatent.models.families import weights_geometry

    weights = dict(pair.split("=", 1) for pair in args.weights)
    geometries = {model_id: weights_geometry(path) for model_id, path in weights.items()}
    with job_device(args.threads, args.gpus) as device:
        rows = efficiency_rows(args.spec, device, geometries)
    write_timing(args.out, args.spec, rows)


def efficiency_table(args: argparse.Namespace) -> None:
    from medlatent.report.tables import write_efficiency_tables

    write_efficiency_tables(
        args.spec, args.timing, args.latent_indexes, args.csv, args.md, args.storage_csv, args.storage_md
    )


def register(commands: argparse._SubParsersAction) -> None:
    parser = spec_command(
        commands,
        "recon",
        "reconstruction scores of every method on one image type",
        recon,
        device=True,
        outputs=("per-item", "panels"),
    )
    parser.add_argument("--shards", nargs="+", required=True)
    parser.add_argument("--weights", nargs="*", default=[], help="MODEL=PATH of every autoencoder")

    parser = spec_command(
        commands,
        "recon-table",
        "aggregate reconstruction scores into CSV + Markdown",
        recon_table,
        outputs=("csv", "md"),
    )
    parser.add_argument("--per-item", nargs="+", required=True)

    parser = spec_command(
        commands,
        "efficiency",
        "latency, throughput and max batch of the CAD classifiers",
        efficiency,
        device=True,
        outputs=("out",),
    )
    parser.add_argument("--weights", nargs="*", default=[], help="MODEL=PATH of every family model (its geometry)")

    parser = spec_command(
        commands,
        "efficiency-table",
        "efficiency and storage tables (CSV + Markdown)",
        efficiency_table,
        outputs=("csv", "md", "storage-csv", "storage-md"),
    )
    parser.add_argument("--timing", required=True)
    parser.add_argument("--latent-indexes", nargs="*", default=[])
