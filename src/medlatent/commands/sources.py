"""sources: what each configured source needs and what is already on disk; `check` for manual ones.

Unlike the rule commands this one is for people: it reads the config files itself. It shows
credential status as present / missing / not needed, never a value (credentials.py looks
them up), and what a missing one needs (variable and file names only).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from medlatent.core.errors import ConfigError, CredentialsError

UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_size(size: int) -> str:
    exponent = 0
    while exponent < len(UNITS) - 1 and size >= 1000 ** (exponent + 1):
        exponent += 1
    return f"{size} B" if exponent == 0 else f"{size / 1000**exponent:.1f} {UNITS[exponent]}"


def folder_size(root: Path) -> int:
    return sum(
        (Path(folder) / name).stat().st_size
        for folder, _, names in os.walk(root)
        for name in names
        if (Path(folder) / name).is_file()
    )


def expected(source: dict) -> list[str]:
    """The glob patterns a manual source's files must match (the manual fetcher's default: anything)."""
    return source["access"].get("expect") or ["**/*"]


def manual_root(source: dict, root: Path) -> Path:
    """Where a manual source is placed: access.path (default data/manual/<id>) relative to the repository root."""
    from medlatent.fetch.manual import manual_path

    return root / manual_path(source)


def presence(source: dict, raw_dir: Path, root: Path) -> tuple[str, int | None]:
    """(state, bytes): fetched (a receipt, so complete), placed (manual data found), partial, or absent.

    A receipt lists every file with its size, so large sources are not walked.
    """
    from medlatent.fetch.manual import has_expected
    from medlatent.fetch.receipt import RECEIPT

    receipt = raw_dir / RECEIPT
    if receipt.is_file():
        return "fetched", sum(entry["size"] for entry in json.loads(receipt.read_text(encoding="utf-8"))["files"])
    if source["access"]["method"] == "manual":
        placed = manual_root(source, root)
        if placed.is_dir() and has_expected(placed, expected(source)):
            return "placed", folder_size(placed)
    elif raw_dir.is_dir() and any(raw_dir.iterdir()):
        return "partial", folder_size(raw_dir)
    return "absent", None


def credentials_hint(access: dict) -> str:
    """What to set for missing credentials: the message names variables and files, never a value."""
    from medlatent.fetch import credentials

    try:
        credentials.require(access)
    except CredentialsError as error:
        return str(error)
    return ""


def _load(args: argparse.Namespace) -> tuple[dict, Path]:
    from medlatent.config import load

    root = Path(args.root)
    return load(*(root / file for file in args.configfile)), root


def list_sources(args: argparse.Namespace) -> None:
    from medlatent.config import data_dir, sources
    from medlatent.fetch import credentials

    if args.source:
        raise ConfigError(
            f"`medlatent sources` takes no source id (got {args.source!r}); "
            f"to check one: medlatent sources check {args.source}"
        )
    config, root = _load(args)
    raw = root / data_dir(config) / "raw"
    header = ("id", "method", "credentials", "local", "size")
    rows, hints = [], {}
    for source in sources(config):
        state, size = presence(source, raw / source["id"], root)
        status = credentials.credential_status(source)
        rows.append(
            (source["id"], source["access"]["method"], status, state, "-" if size is None else human_size(size))
        )
        if status == "missing":
            hints[source["id"]] = credentials_hint(source["access"])
    widths = [max(len(str(row[k])) for row in (header, *rows)) for k in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    if hints:
        print("\nmissing credentials:")
        for source_id, hint in hints.items():
            print(f"  {source_id}: {hint}")


def check_source(args: argparse.Namespace) -> None:
    from medlatent.config import data_dir, sources
    from medlatent.config import source as configured_source
    from medlatent.fetch import manual

    if not args.source:
        raise ConfigError("usage: medlatent sources check ID (the id of a source with access.method manual)")
    config, root = _load(args)
    source = configured_source(config, args.source)
    method = source["access"]["method"]
    if method != "manual":
        manual_ids = [s["id"] for s in sources(config) if s["access"]["method"] == "manual"]
        raise ConfigError(
            f"source {args.source!r} is fetched by method {method!r}, not placed by hand; "
            f"`check` is for the manual sources {manual_ids}"
        )
    placed = manual_root(source, root)
    # The manual fetcher's own check, so `check` passing means `snakemake` will find the data too.
    manual.fetch(
        {**source, "access": {**source["access"], "path": str(placed)}},
        root / data_dir(config) / "raw" / source["id"],
        seed=0,
    )
    print(f"{args.source}: OK, files matching {' or '.join(expected(source))} found under {placed}")


def _action(args: argparse.Namespace) -> None:
    (check_source if args.action == "check" else list_sources)(args)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sources",
        help=(
            "list every source: access method, credentials, local data, size; "
            "`sources check ID` validates a manually placed one"
        ),
    )
    parser.add_argument("action", nargs="?", choices=("list", "check"), default="list")
    parser.add_argument("source", nargs="?", help="for check: the source id")
    parser.add_argument(
        "--root", default=".", help="the repository root (config files, data/ and access.path are relative to it)"
    )
    parser.add_argument(
        "--configfile",
        nargs="+",
        default=["config.yaml"],
        help="config files relative to --root, merged like snakemake --configfile",
    )
    parser.set_defaults(run=_action)
