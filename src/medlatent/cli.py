"""`medlatent <stage>`: the entry points Snakemake rules call (one line of shell each).

Rules pass their config slice as canonical JSON (`--spec`), so the CLI never reads
config.yaml itself and Snakemake sees every parameter a job depends on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import MedLatentError

log = logging.getLogger("medlatent")


def _json(text: str) -> dict:
    return json.loads(text)


def _bool(text: str) -> bool:
    if text not in ("True", "False", "true", "false"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text.lower() == "true"


def cmd_fetch(args: argparse.Namespace) -> None:
    from .sources.fetch import fetch_source

    receipt = fetch_source(args.spec, Path(args.receipt).parent, seed=args.seed)
    log.info("fetched %s: %d files", args.spec["id"], len(receipt["files"]))


def cmd_curate(args: argparse.Namespace) -> None:
    from .config import patient_salt
    from .curate import CurationOutputs, curate

    receipt = json.loads(Path(args.receipt).read_text(encoding="utf-8"))
    raw_root = Path(args.receipt).resolve().parents[1]
    salt = patient_salt(args.project, raw_root)
    outputs = CurationOutputs(Path(args.manifest), Path(args.rejected), Path(args.report), Path(args.files_index))
    curate(args.spec, salt, receipt, outputs, demo=args.project["demo"])


def cmd_normalize(args: argparse.Namespace) -> None:
    import pandas as pd

    from .normalize import normalize_shard

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medlatent", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch", help="fetch one source into data/raw and write its receipt")
    fetch.add_argument("--spec", type=_json, required=True, help="the source's fetch slice (JSON)")
    fetch.add_argument("--receipt", required=True, help="data/raw/<source>/fetch.json; its folder receives the files")
    fetch.add_argument("--seed", type=int, default=0)
    fetch.set_defaults(run=cmd_fetch)

    curate = commands.add_parser("curate", help="keep or reject every file of a source; split and shard")
    curate.add_argument("--spec", type=_json, required=True)
    curate.add_argument("--project", type=_json, required=True)
    curate.add_argument("--receipt", required=True)
    curate.add_argument("--manifest", required=True)
    curate.add_argument("--rejected", required=True)
    curate.add_argument("--report", required=True)
    curate.add_argument("--files-index", required=True)
    curate.set_defaults(run=cmd_curate)

    normalize = commands.add_parser("normalize", help="normalize one shard of a source into HDF5")
    normalize.add_argument("--spec", type=_json, required=True)
    normalize.add_argument("--shard", required=True)
    normalize.add_argument("--manifest", required=True)
    normalize.add_argument("--files-index", required=True)
    normalize.add_argument("--receipt", required=True)
    normalize.add_argument("--demo", type=_bool, default=False)
    normalize.add_argument("--out", required=True)
    normalize.set_defaults(run=cmd_normalize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.run(args)
    except MedLatentError as error:
        log.error("%s", error)
        print(f"medlatent {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
