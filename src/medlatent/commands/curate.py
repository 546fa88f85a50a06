"""curate: the rule of curate.smk (keep or reject every file of a source; split and shard)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medlatent.commands import json_arg


def curate(args: argparse.Namespace) -> None:
    from medlatent.curate.run import CurationOutputs
    from medlatent.curate.run import curate as run_curation
    from medlatent.curate.salt import patient_salt
    from medlatent.io.budget import DecodeBudget

    receipt = json.loads(Path(args.receipt).read_text(encoding="utf-8"))
    raw_root = Path(args.receipt).resolve().parents[1]
    salt = patient_salt(args.project, raw_root)
    outputs = CurationOutputs(Path(args.manifest), Path(args.rejected), Path(args.report), Path(args.files_index))
    budget = DecodeBudget.for_process(args.mem_mb // args.workers)
    run_curation(args.spec, salt, receipt, outputs, demo=args.project["demo"], workers=args.workers, budget=budget)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("curate", help="keep or reject every file of a source; split and shard")
    parser.add_argument("--spec", type=json_arg, required=True)
    parser.add_argument("--project", type=json_arg, required=True)
    parser.add_argument("--receipt", required=True)
    for output in ("manifest", "rejected", "report", "files-index"):
        parser.add_argument(f"--{output}", required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes inspecting files (the rule's threads)")
    parser.add_argument(
        "--mem-mb", type=int, required=True, help="memory of the job (its mem_mb resource), shared by the workers"
    )
    parser.set_defaults(run=curate)
