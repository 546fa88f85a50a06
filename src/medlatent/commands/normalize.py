"""normalize: the rule of normalize.smk (one shard of a source into HDF5)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medlatent.commands import bool_arg, json_arg


def normalize(args: argparse.Namespace) -> None:
    import pandas as pd

    from medlatent.io.budget import DecodeBudget
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
        budget=DecodeBudget.for_process(args.mem_mb),
    )


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("normalize", help="normalize one shard of a source into HDF5")
    parser.add_argument("--spec", type=json_arg, required=True)
    parser.add_argument("--shard", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--files-index", required=True)
    parser.add_argument("--receipt", required=True)
    parser.add_argument("--demo", type=bool_arg, default=False)
    parser.add_argument("--mem-mb", type=int, required=True, help="memory of the job (its mem_mb resource)")
    parser.add_argument("--out", required=True)
    parser.set_defaults(run=normalize)
