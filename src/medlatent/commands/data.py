"""fetch, curate, normalize: the data half of the pipeline."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from medlatent.commands import bool_arg, json_arg

log = logging.getLogger("medlatent")


def fetch(args: argparse.Namespace) -> None:
    from medlatent.fetch import fetch_source

    receipt = fetch_source(args.spec, Path(args.receipt).parent, seed=args.seed)
    log.info("fetched %s: %d files", args.spec["id"], len(receipt["files"]))


def curate(args: argparse.Namespace) -> None:
    from medlatent.curate.salt import patient_salt
    from medlatent.curate.run import CurationOutputs, curate as run_curation

    receipt = json.loads(Path(args.receipt).read_text(encoding="utf-8"))
    raw_root = Path(args.receipt).resolve().parents[1]
    salt = patient_salt(args.project, raw_root)
    outputs = CurationOutputs(Path(args.manifest), Path(args.rejected), Path(args.report), Path(args.files_index))
    run_curation(args.spec, salt, receipt, outputs, demo=args.project["demo"])


def normalize(args: argparse.Namespace) -> None:
    import pandas as pd

    from medlatent.normalize.run import normalize_shard

    receipt = json.loads(Path(args.receipt).read_text(encoding="utf-8"))
    normalize_shard(
        args.spec,
        args.shard,
        pd.read_parquet(args.manifest),
        pd.read_parquet(args.files_index),
        Path(receipt["root"]),
        Path(args.out),
        demo=args.demo,
    )


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("fetch", help="fetch one source into data/raw and write its receipt")
    parser.add_argument("--spec", type=json_arg, required=True, help="the source's fetch slice (JSON)")
    parser.add_argument("--receipt", required=True, help="data/raw/<source>/fetch.json; its folder receives the files")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=fetch)

    parser = commands.add_parser("curate", help="keep or reject every file of a source; split and shard")
    parser.add_argument("--spec", type=json_arg, required=True)
    parser.add_argument("--project", type=json_arg, required=True)
    parser.add_argument("--receipt", required=True)
    for output in ("manifest", "rejected", "report", "files-index"):
        parser.add_argument(f"--{output}", required=True)
    parser.set_defaults(run=curate)

    parser = commands.add_parser("normalize", help="normalize one shard of a source into HDF5")
    parser.add_argument("--spec", type=json_arg, required=True)
    parser.add_argument("--shard", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--files-index", required=True)
    parser.add_argument("--receipt", required=True)
    parser.add_argument("--demo", type=bool_arg, default=False)
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=normalize)
