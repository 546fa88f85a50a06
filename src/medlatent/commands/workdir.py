"""unlock-stale: continue in a working directory that a killed Snakemake run left locked."""

from __future__ import annotations

import argparse


def unlock_stale(args: argparse.Namespace) -> None:
    from medlatent.core.workdir import unlock_if_stale

    message = unlock_if_stale(args.directory)
    if message:
        print(message)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("unlock-stale", help="remove a Snakemake lock that no running Snakemake holds")
    parser.add_argument("directory", nargs="?", default=".", help="the Snakemake working directory (-d)")
    parser.set_defaults(run=unlock_stale)
