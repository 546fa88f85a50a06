"""report: the rule of report.smk (figures and results/report/summary.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from medlatent.commands import spec_command


def report(args: argparse.Namespace) -> None:
    from medlatent.report.summary import build_report

    tables = {Path(p).stem: Path(p) for p in args.tables}
    build_report(
        args.spec,
        tables,
        Path(args.cad_csv),
        Path(args.efficiency_csv),
        args.panels,
        args.recon_per_item,
        args.curation,
        args.weights,
        Path(args.figures_dir),
        Path(args.summary),
    )


def register(commands: argparse._SubParsersAction) -> None:
    parser = spec_command(
        commands, "report", "figures and results/report/summary.md", report, outputs=("figures-dir", "summary")
    )
    parser.add_argument("--tables", nargs="+", required=True, help="the Markdown tables, in report order")
    parser.add_argument("--cad-csv", required=True)
    parser.add_argument("--efficiency-csv", required=True)
    parser.add_argument("--panels", nargs="*", default=[])
    parser.add_argument("--recon-per-item", nargs="*", default=[], help="per-item reconstruction scores (CSV)")
    parser.add_argument("--curation", nargs="*", default=[])
    parser.add_argument("--weights", nargs="*", default=[], help="model weights; loss CSVs are read beside them")
