"""Figures of the evaluation (PNG): CAD AUROC, reconstruction panels, per-structure Dice, efficiency,
training curves, curation counts; each carries the provenance stamp of the report in its title."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from medlatent.core.atomic import atomic_path

#: Loss-file columns that are not losses (steps, weights, logits, learning rates) and stay off the curves.
NOT_LOSSES = ("step", "epoch", "time", "second", "weight", "adaptive", "logits", "lr")
KIND_COLORS = {
    "highres": "#4d4d4d",
    "interpolation": "#9ecae1",
    "medvae": "#d62728",
    "family": "#9467bd",
    "slicewise": "#ff9896",
    "external": "#2ca02c",
}


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    return plt, figure, axes


def _save(plt, figure, path: str | Path, provenance: str, title: str) -> None:
    figure.suptitle(f"{title}\n{provenance}", fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def _message_figure(path: str | Path, provenance: str, title: str, message: str) -> None:
    plt, figure, axes = _figure(1, 1, (6, 2))
    axes[0, 0].axis("off")
    axes[0, 0].text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    _save(plt, figure, path, provenance, title)


def figure_cad(table: pd.DataFrame, path: str | Path, provenance: str) -> None:
    """AUROC bars (mean +- std over seeds) per task and method; chance at 0.5."""
    title = "Downstream CAD: test AUROC per task and input (mean ± std over seeds)"
    if table.empty:
        return _message_figure(path, provenance, title, "no CAD results")
    tasks = list(dict.fromkeys(table["task"]))
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    plt, figure, axes = _figure(nrows, ncols, (5.2 * ncols, 3.6 * nrows))
    for ax, task in zip(axes.flat, tasks):
        rows = table[table["task"] == task]
        positions = np.arange(len(rows))
        ax.bar(
            positions,
            rows["auroc_mean"].fillna(0),
            yerr=rows["auroc_std"].fillna(0),
            color=[KIND_COLORS[k] for k in rows["kind"]],
            capsize=2,
        )
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(positions, rows["method"], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("AUROC")
        ax.set_title(task, fontsize=9)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    _save(plt, figure, path, provenance, title)


def figure_recon(
    panels: dict[str, dict[str, np.ndarray]], path: str | Path, provenance: str, per_type: int = 2
) -> None:
    """Figure 4 style: per image type, original | reconstruction | residual for the first `per_type`
    methods of the panel file (autoencoders come before interpolation baselines there)."""
    title = "Reconstructions: original | reconstruction | residual (reconstruction - original)"
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return _message_figure(path, provenance, title, "no reconstruction panels")
    layout = []
    for image_type, arrays in sorted(panels.items()):
        originals = [k for k in arrays if k.startswith("original::")]
        if not originals:
            continue
        item = originals[0].split("::", 1)[1]
        methods = [k.split("::", 1)[0] for k in arrays if k.endswith(f"::{item}") and not k.startswith("original::")]
        layout.append((image_type, arrays[originals[0]], [(m, arrays[f"{m}::{item}"]) for m in methods[:per_type]]))
    ncols = 1 + 2 * max(len(methods) for _, _, methods in layout)
    plt, figure, axes = _figure(len(layout), ncols, (2.0 * ncols, 2.2 * len(layout)))
    for row, (image_type, original, methods) in enumerate(layout):
        axes[row, 0].imshow(original, cmap="gray", vmin=-1, vmax=1)
        axes[row, 0].set_title(f"{image_type}\noriginal", fontsize=7)
        for k, (method, recon) in enumerate(methods):
            axes[row, 1 + 2 * k].imshow(recon, cmap="gray", vmin=-1, vmax=1)
            axes[row, 1 + 2 * k].set_title(method, fontsize=7)
            axes[row, 2 + 2 * k].imshow(recon - original, cmap="coolwarm", vmin=-0.5, vmax=0.5)
            axes[row, 2 + 2 * k].set_title("residual", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    _save(plt, figure, path, provenance, title)


def structure_dice(per_item: pd.DataFrame) -> pd.DataFrame:
    """Mean Dice per (image type, segmenter, method, structure) over the items where either segmentation
    has the structure (the per-item `segsim_structures`)."""
    rows = [
        {
            "image_type": row.image_type,
            "segmenter": row.segmenter,
            "method": row.method,
            "structure": int(label),
            "dice": scores["dice"],
        }
        for row in per_item.dropna(subset=["segsim_structures"]).itertuples()
        for label, scores in json.loads(row.segsim_structures).items()
    ]
    columns = ["image_type", "segmenter", "method", "structure", "dice"]
    return pd.DataFrame(rows, columns=columns).groupby(columns[:-1], sort=False, as_index=False)["dice"].mean()


def figure_structures(per_item: pd.DataFrame, path: str | Path, provenance: str) -> None:
    """Per 3D image type: Dice of each structure (columns, by label) for each method (rows)."""
    title = "Structure preservation: Dice per structure and method, mean over the sampled volumes"
    table = structure_dice(per_item) if "segsim_structures" in per_item else pd.DataFrame()
    if table.empty:
        return _message_figure(path, provenance, title, "no 3D segmentations")
    groups = list(table.groupby(["image_type", "segmenter"], sort=True))
    widest = max(group["structure"].nunique() for _, group in groups)
    plt, figure, axes = _figure(len(groups), 1, (max(6.0, 3.0 + 0.18 * widest), 1.6 + 1.2 * len(groups)))
    for ax, ((image_type, segmenter), group) in zip(axes[:, 0], groups):
        grid = group.pivot(index="method", columns="structure", values="dice")
        image = ax.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(grid.index)), grid.index, fontsize=7)
        ax.set_xticks(range(len(grid.columns)), grid.columns, fontsize=6, rotation=90)
        ax.set_xlabel("structure (label)", fontsize=7)
        ax.set_title(f"{image_type}: {segmenter}", fontsize=8)
        figure.colorbar(image, ax=ax, label="Dice")
    _save(plt, figure, path, provenance, title)


def figure_efficiency(table: pd.DataFrame, path: str | Path, provenance: str) -> None:
    """Latency, throughput and max batch of the classifier on images and latents (log scale)."""
    title = f"Efficiency of the CAD classifiers on {table['device'].iloc[0] if len(table) else 'n/a'}"
    if table.empty:
        return _message_figure(path, provenance, title, "no efficiency rows")
    plt, figure, axes = _figure(1, 3, (13, 3.8))
    labels = [f"{d}D {i}" for d, i in zip(table["dims"], table["input"])]
    colors = ["#4d4d4d" if f == 1 else "#d62728" for f in table["f"]]
    for ax, column, label in zip(
        axes[0],
        ("latency_ms", "throughput_per_s", "max_batch"),
        ("latency (ms per batch)", "throughput (samples/s)", "max batch (power of 2)"),
    ):
        ax.bar(np.arange(len(table)), table[column], color=colors)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(table)), labels, rotation=45, ha="right", fontsize=7)
        capped = column == "max_batch" and table["max_batch_capped"].any()
        ax.set_title(label + (" - capped on CPU" if capped else ""), fontsize=9)
    _save(plt, figure, path, provenance, title)


def figure_training(loss_files: dict[str, Path], path: str | Path, provenance: str) -> None:
    """Loss curves of every model stage (results/models/{model}/{stage}_losses.csv)."""
    title = "Training curves"
    if not loss_files:
        return _message_figure(path, provenance, title, "no loss files (results/models/*/*_losses.csv)")
    ncols = min(3, len(loss_files))
    nrows = math.ceil(len(loss_files) / ncols)
    plt, figure, axes = _figure(nrows, ncols, (5 * ncols, 3.2 * nrows))
    for ax, (name, file) in zip(axes.flat, sorted(loss_files.items())):
        frame = pd.read_csv(file)
        x = frame["step"] if "step" in frame else np.arange(len(frame))
        for column in frame.select_dtypes("number").columns:
            if not any(word in column for word in NOT_LOSSES) and frame[column].notna().any():
                ax.plot(x, frame[column], label=column, linewidth=0.9)
        ax.set_yscale("symlog", linthresh=1e-3)  # summed-per-pixel losses and small embedding losses side by side
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(loss_files) :]:
        ax.axis("off")
    _save(plt, figure, path, provenance, title)


def figure_curation(reports: list[dict], path: str | Path, provenance: str) -> None:
    """Kept and rejected items (by category) per source."""
    title = "Curation: kept and rejected items per source"
    if not reports:
        return _message_figure(path, provenance, title, "no curation reports")
    plt, figure, axes = _figure(1, 1, (max(6, 1.1 * len(reports)), 4))
    ax = axes[0, 0]
    names = [r["source"] for r in reports]
    positions = np.arange(len(reports))
    bottom = np.array([r["kept"] for r in reports], dtype=float)
    ax.bar(positions, bottom, label="kept", color="#4daf4a")
    categories = sorted({c for r in reports for c in r.get("rejected_by_category", {})})
    for category in categories:
        counts = np.array([r.get("rejected_by_category", {}).get(category, 0) for r in reports], dtype=float)
        ax.bar(positions, counts, bottom=bottom, label=f"rejected: {category}")
        bottom += counts
    ax.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("items")
    ax.legend(fontsize=7)
    _save(plt, figure, path, provenance, title)
