"""`make bench`: speed and memory figures of every stage, written to one JSON + Markdown file.

Each stage contributes a `run() -> dict` (bench_curate, bench_normalize, bench_hostile, bench_train, bench_latents,
bench_families, bench_eval, bench_dag); a stage whose module is missing or fails is reported as such, not skipped
silently. A figure with a goal carries it beside itself: `"goal_<figure>": ">= 0.95"` (or `<=`)
next to `"<figure>"`; the Markdown file opens with one table of every such pair, then each
stage's figures as a table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import operator
import platform
import time
import traceback
from pathlib import Path

import torch

from medlatent.core.allocator import tune_memory_allocation

STAGES = (
    "bench_curate",
    "bench_normalize",
    "bench_hostile",
    "bench_train",
    "bench_latents",
    "bench_families",
    "bench_eval",
    "bench_dag",
)


def machine() -> dict:
    """What the figures were measured on. Applies first the memory allocation settings that every
    `medlatent` command runs with (medlatent.core.allocator), so that the figures are those of the
    workflow's jobs: call it before anything allocates a tensor."""
    allocation = tune_memory_allocation()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        **allocation,
    }


GOAL_PREFIX = "goal_"
COMPARISONS = {">=": operator.ge, "<=": operator.le}


def flatten(figures: dict, prefix: str = "") -> dict:
    """Nested figures as {"a.b.c": value}; lists of numbers stay values."""
    flat = {}
    for key, value in figures.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def goal_met(value, goal: str) -> bool | None:
    """Whether `value` meets a goal written as ">= 0.95" / "<= 20"; None when there is no number to judge."""
    comparison, _, target = goal.partition(" ")
    if comparison not in COMPARISONS:
        raise ValueError(f"a goal reads '>= x' or '<= x', got {goal!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return COMPARISONS[comparison](value, float(target))


def goal_rows(stages: dict) -> list[tuple[str, str, object, str, bool | None]]:
    """(stage, figure path, measured, goal, met) for every figure that has a `goal_` sibling."""
    rows = []
    for stage, figures in stages.items():
        flat = flatten(figures)
        for path, goal in flat.items():
            parent, _, name = path.rpartition(".")
            if not name.startswith(GOAL_PREFIX):
                continue
            figure = f"{parent}.{name[len(GOAL_PREFIX) :]}" if parent else name[len(GOAL_PREFIX) :]
            value = flat.get(figure)
            rows.append((stage, figure, value, goal, goal_met(value, goal)))
    return rows


def _cell(value) -> str:
    return "-" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(results: dict) -> str:
    """The goals table, then every stage's figures as a two-column table."""
    verdict = {True: "yes", False: "**no**", None: "not measured"}
    lines = ["# MedLatent benchmarks", "", f"Machine: `{json.dumps(results['machine'])}`", ""]
    lines += ["## Figures with a goal", "", "| stage | figure | measured | goal | met |", "|---|---|---|---|---|"]
    for stage, figure, value, goal, met in goal_rows(results["stages"]):
        lines.append(f"| {stage} | {figure} | {_cell(value)} | {goal} | {verdict[met]} |")
    for stage, figures in results["stages"].items():
        if "error" in figures:  # a failed stage: its traceback, readable
            lines += ["", f"## {stage}: failed", "", "```", figures["error"], "```"]
            continue
        lines += ["", f"## {stage}", "", "| figure | value |", "|---|---|"]
        lines += [
            f"| {path} | {_cell(value)} |"
            for path, value in flatten(figures).items()
            if not path.rpartition(".")[2].startswith(GOAL_PREFIX)
        ]
    return "\n".join(lines) + "\n"


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
