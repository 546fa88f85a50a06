"""The report job: every figure, and `results/report/summary.md` with every table inline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medlatent.core.atomic import write_text
from medlatent.report.figures import (
    figure_cad,
    figure_curation,
    figure_efficiency,
    figure_recon,
    figure_structures,
    figure_training,
)
from medlatent.report.tables import any_flag, stamp, yes_no


def summary_markdown(
    spec: dict,
    tables: dict[str, Path],
    figures: dict[str, Path],
    curation: list[dict],
    demo_weights: bool,
    loss_files: dict[str, Path],
) -> str:
    """results/report/summary.md: every table inline, every figure and curation count listed."""
    lines = [
        f"# MedLatent evaluation summary - {spec['project']}",
        "",
        f"- Config hash: `{spec['config_hash']}` (sha256 of the whole validated configuration, 12 hex digits)",
        f"- Demo (synthetic data, small random-initialised networks): {yes_no(spec['demo'])}",
        f"- Demo weights used by any result: {yes_no(demo_weights)}",
        f"- Models: {', '.join(spec['models']) or 'none'}; CAD tasks: {', '.join(spec['tasks']) or 'none'}",
        "",
    ]
    for name, path in tables.items():
        text = Path(path).read_text(encoding="utf-8").strip().splitlines()
        title = text[0].lstrip("# ") if text and text[0].startswith("# ") else name
        body = "\n".join(text[1:] if title != name else text).strip()
        lines += [f"## {title}", "", body, "", f"CSV: `{Path(path).with_suffix('.csv')}`", ""]
    lines += ["## Figures", "", *[f"- {name}: `{path}`" for name, path in figures.items()], ""]
    lines += ["## Curation", "", "| source | found | kept | rejected | rejected by category |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['source']} | {r.get('found', '')} | {r['kept']} | {r['rejected']} | "
        f"{', '.join(f'{k}: {v}' for k, v in r.get('rejected_by_category', {}).items())} |"
        for r in curation
    ]
    lines += ["", "## Training curves", ""]
    lines += [f"- {name}: `{path}`" for name, path in sorted(loss_files.items())] or ["- none found"]
    lines.append("")
    return "\n".join(lines)


def loss_files_of(weights_paths: list[str]) -> dict[str, Path]:
    """`{model}/{stage}` -> loss CSV next to each model's final weights, when present."""
    files = {}
    for weights in weights_paths:
        folder = Path(weights).parent
        for file in sorted(folder.glob("*_losses.csv")):
            files[f"{folder.name}/{file.name.removesuffix('_losses.csv')}"] = file
    return files


def build_report(
    spec: dict,
    tables: dict[str, Path],
    cad_csv: Path,
    efficiency_csv: Path,
    panel_files: list[str],
    recon_per_item: list[str],
    curation_files: list[str],
    weights_paths: list[str],
    figures_dir: Path,
    summary: Path,
) -> dict[str, Path]:
    """All figures plus the summary; returns the figure paths by name."""
    cad = pd.read_csv(cad_csv)
    efficiency = pd.read_csv(efficiency_csv)
    panels = {}
    for file in panel_files:
        with np.load(file) as data:
            panels[Path(file).parent.name] = {key: data[key] for key in data.files}
    curation = [json.loads(Path(f).read_text(encoding="utf-8")) for f in curation_files]
    loss_files = loss_files_of(weights_paths)
    demo_weights = any_flag(cad, "demo_weights") or any(
        any_flag(pd.read_csv(Path(t).with_suffix(".csv")), "demo_weights") for t in tables.values()
    )
    provenance = stamp(spec["config_hash"], spec["demo"], demo_weights)
    figures = {
        name: figures_dir / f"{name}.png"
        for name in (
            "cad_auroc",
            "recon_panels",
            "segsim_structures",
            "efficiency",
            "training_curves",
            "curation_counts",
        )
    }
    figure_cad(cad, figures["cad_auroc"], provenance)
    figure_recon(panels, figures["recon_panels"], provenance)
    figure_structures(
        pd.concat([pd.read_csv(f) for f in recon_per_item], ignore_index=True) if recon_per_item else pd.DataFrame(),
        figures["segsim_structures"],
        provenance,
    )
    figure_efficiency(efficiency, figures["efficiency"], provenance)
    figure_training(loss_files, figures["training_curves"], provenance)
    figure_curation(curation, figures["curation_counts"], provenance)
    write_text(summary, summary_markdown(spec, tables, figures, curation, demo_weights, loss_files))
    return figures
