"""`medlatent <command>`: the entry points Snakemake rules call (one line of shell each).

Rules pass their config slice as canonical JSON (`--spec`), so the CLI never reads
config.yaml itself and Snakemake sees every parameter a job depends on.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from medlatent.commands import MODULES
from medlatent.core.allocator import tune_memory_allocation
from medlatent.core.errors import MedLatentError

log = logging.getLogger("medlatent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medlatent", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in MODULES:
        importlib.import_module(f"medlatent.commands.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    tune_memory_allocation()  # before any command allocates: see medlatent.core.allocator
    try:
        args.run(args)
    except MedLatentError as error:
        log.error("%s", error)
        print(f"medlatent {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
