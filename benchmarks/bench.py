"""`make bench`: speed and memory figures of every stage, written to one JSON + Markdown file.

Each stage contributes a `run() -> dict` (bench_curate, bench_normalize, bench_train, bench_latents,
bench_eval, bench_dag); a stage whose module is missing or fails is reported as such, not skipped
silently.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
import traceback
from pathlib import Path

import torch

STAGES = ("bench_curate", "bench_normalize", "bench_train", "bench_latents", "bench_eval", "bench_dag")


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def figure_rows(figures: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted figure name, value, goal) of nested figures: a `goal_<name>` key sits beside `<name>`."""
    rows = []
    for name, value in figures.items():
        if name.startswith("goal_") and name[len("goal_") :] in figures:
            continue
        if isinstance(value, dict):
            rows += figure_rows(value, f"{prefix}{name}.")
        else:
            rows.append((f"{prefix}{name}", value, figures.get(f"goal_{name}", "")))
    return rows


def _cell(value: object) -> str:
    return value.replace("|", "\\|") if isinstance(value, str) else json.dumps(value)


def to_markdown(results: dict) -> str:
    """One table per stage, each figure beside its goal; a failed stage's traceback as a code block."""
    lines = ["# MedLatent benchmarks", "", f"Machine: `{json.dumps(results['machine'])}`", ""]
    for stage, figures in results["stages"].items():
        lines += [f"## {stage}", ""]
        if "error" in figures:
            lines += ["```", figures["error"], "```", ""]
            continue
        lines += ["| figure | value | goal |", "|---|---|---|"]
        lines += [f"| {name} | {_cell(value)} | {_cell(goal)} |" for name, value, goal in figure_rows(figures)]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/bench.json")
    parser.add_argument("--stages", nargs="*", default=list(STAGES))
    args = parser.parse_args(argv)
    results = {"machine": machine(), "stages": {}}
    failed = False
    for stage in args.stages:
        started = time.perf_counter()
        try:
            figures = importlib.import_module(stage).run()
        except Exception:  # noqa: BLE001 - a broken stage is reported in the results file
            figures = {"error": traceback.format_exc(limit=5)}
            failed = True
        figures["wall_s"] = round(time.perf_counter() - started, 2)
        results["stages"][stage] = figures
        print(f"{stage}: {json.dumps(figures, sort_keys=True)[:400]}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(to_markdown(results), encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
