"""dvc-setup, publish: the rule of publish.smk (dvc add + push, version tags) and its one-time setup."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medlatent.commands import json_arg


def dvc_setup(args: argparse.Namespace) -> None:
    from medlatent.config import load, publish_slice
    from medlatent.publish.dvc import dvc_setup as setup

    root = Path(args.root)
    config = load(*(root / file for file in args.configfile))
    print(json.dumps(setup(root, publish_slice(config)["remote"]), indent=1))


def publish(args: argparse.Namespace) -> None:
    from medlatent.core.atomic import write_text
    from medlatent.publish.dvc import publish as run_publish

    receipt = run_publish(Path(args.root), args.spec)
    write_text(args.receipt, json.dumps(receipt, indent=1, sort_keys=True) + "\n")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("dvc-setup", help="idempotent: dvc init, link cache, the configured remote")
    parser.add_argument("--root", default=".", help="the git repository root")
    parser.add_argument(
        "--configfile",
        nargs="+",
        default=["config.yaml"],
        help="config files relative to --root, merged like snakemake --configfile",
    )
    parser.set_defaults(run=dvc_setup)

    parser = commands.add_parser("publish", help="dvc add + push latent datasets and tag their versions")
    parser.add_argument("--spec", type=json_arg, required=True, help="publish_slice (JSON)")
    parser.add_argument("--receipt", required=True)
    parser.add_argument("--root", default=".")
    parser.set_defaults(run=publish)
