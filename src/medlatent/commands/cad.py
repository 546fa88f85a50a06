"""cad-train, cad-table: the rules of cad.smk."""

from __future__ import annotations

import argparse

from medlatent.commands import spec_command


def cad_train(args: argparse.Namespace) -> None:
    from medlatent.cad.run import run_cad
    from medlatent.core.gpus import job_device

    with job_device(args.threads, args.gpus) as device:
        run_cad(args.spec, args.manifest, args.shards, args.model_input, args.out, device)


def cad_table(args: argparse.Namespace) -> None:
    from medlatent.report.tables import write_cad_table

    write_cad_table(args.spec, args.metrics, args.csv, args.md)


def register(commands: argparse._SubParsersAction) -> None:
    parser = spec_command(
        commands,
        "cad-train",
        "train and test one CAD classifier (task, method, seed)",
        cad_train,
        device=True,
        outputs=("out",),
    )
    parser.add_argument("--manifest", required=True, help="the task source's curated manifest (labels, splits)")
    parser.add_argument("--shards", nargs="*", default=[], help="normalized shards (image-based methods)")
    parser.add_argument(
        "--model-input",
        nargs="?",
        default=None,
        const=None,
        help="latent dataset index.json (medvae) or autoencoder weights (slicewise, external)",
    )

    parser = spec_command(
        commands, "cad-table", "aggregate CAD metrics over seeds into CSV + Markdown", cad_table, outputs=("csv", "md")
    )
    parser.add_argument("--metrics", nargs="+", required=True)
