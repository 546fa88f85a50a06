"""fetch: the rule of fetch.smk (one source into data/raw, with its receipt)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medlatent.commands import json_arg

log = logging.getLogger("medlatent")


def fetch(args: argparse.Namespace) -> None:
    from medlatent.fetch import fetch_source

    receipt = fetch_source(args.spec, Path(args.receipt).parent, seed=args.seed)
    log.info("fetched %s: %d files", args.spec["id"], len(receipt["files"]))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("fetch", help="fetch one source into data/raw and write its receipt")
    parser.add_argument("--spec", type=json_arg, required=True, help="the source's fetch slice (JSON)")
    parser.add_argument("--receipt", required=True, help="data/raw/<source>/fetch.json; its folder receives the files")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=fetch)
