"""Tables (CSV + Markdown) and figures of the evaluation, and the one-file summary.

Tables: CAD AUROC / accuracy / macro-F1 as mean +- std over seeds (sample std, n - 1) per
(task, method); reconstruction PSNR / MS-SSIM (and SegSim for 3D) per (image type, method),
mean over the items of each seed, then mean +- std over seeds; efficiency timings and storage.
Every table ends with a footer naming the hash of the configuration it was made from and
whether demo weights or demo data were involved; every figure carries the same stamp.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from medlatent.core.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

METRICS = ("auroc", "accuracy", "macro_f1")
KIND_ORDER = ("highres", "interpolation", "medvae", "slicewise", "external")
#: Loss-file columns that are not losses (steps, weights, logits, learning rates) and stay off the curves.
NOT_LOSSES = ("step", "epoch", "time", "second", "weight", "adaptive", "logits", "lr")
KIND_COLORS = {"highres": "#4d4d4d", "interpolation": "#9ecae1", "medvae": "#d62728", "slicewise": "#ff9896",
               "external": "#2ca02c"}


# ----------------------------------------------------------------------------- table helpers


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None for one value) of the non-missing values."""
    array = np.array([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    if not len(array):
        return None, None
    if np.isinf(array).any():
        return float(array.mean()), None
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None


def format_mean_std(mean: float | None, std: float | None, digits: int) -> str:
    """'m ± s'; 'm' alone for one seed; 'n/a' when undefined (frames turn None into NaN)."""
    if mean is None or pd.isna(mean):
        return "n/a"
    if std is None or pd.isna(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of a frame (values as shown, pipes escaped)."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def segmenter_label(segmenter: dict) -> str:
    """How tables name the SegSim segmenter (never just 'SegSim')."""
    return f"threshold segmenter at {segmenter['thresholds']} (stand-in for SynthSeg)"


def stamp(config_hash: str, demo_data: bool, demo_weights: bool, what: str = "config") -> str:
    """The provenance line of every table ('config slice': the slices of its jobs) and figure (whole config)."""
    return f"{what} {config_hash} · demo data: {yes_no(demo_data)} · demo weights: {yes_no(demo_weights)}"


def write_table(frame: pd.DataFrame, display: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str,
                notes: list[str], provenance: str) -> None:
    """CSV of the numbers (with provenance columns) and Markdown of the display frame, atomically."""
    with atomic_path(csv_path) as temporary:
        frame.to_csv(temporary, index=False)
    lines = [f"# {title}", "", markdown_table(display) if len(display) else "_no rows_", ""]
    lines += [f"- {note}" for note in notes]
    lines += [f"- Provenance: {provenance}", ""]
    write_text(md_path, "\n".join(lines))


def _flag(frame: pd.DataFrame, column: str) -> bool:
    return bool(column in frame and frame[column].astype(bool).any())


# ----------------------------------------------------------------------------- CAD


def cad_table(metrics: list[dict]) -> pd.DataFrame:
    """One row per (task, method): mean and std over seeds of every metric."""
    rows = []
    frame = pd.DataFrame(metrics)
    for (task, method), group in frame.groupby(["task", "method"], sort=False):
        first = group.iloc[0]
        row = {"task": task, "method": method, "kind": first["kind"], "f": int(first["f"]), "seeds": len(group),
               "n_train": int(first["n_train"]), "n_test": int(first["n_test"]), "classifier": first["classifier"]}
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(group[metric].tolist())
        row["demo_data"] = bool(group["demo_data"].any())
        row["demo_weights"] = bool(group["demo_weights"].any())
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["_kind"] = table["kind"].map(KIND_ORDER.index)
        table = table.sort_values(["task", "_kind", "f", "method"], kind="stable").drop(columns="_kind")
    return table.reset_index(drop=True)


def cad_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[["task", "method", "kind", "f", "seeds"]].copy()
    for metric in METRICS:
        shown[metric.replace("_", "-")] = [format_mean_std(m, s, 3) for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"])]
    shown["n train/test"] = [f"{a}/{b}" for a, b in zip(table["n_train"], table["n_test"])]
    return shown


# ----------------------------------------------------------------------------- reconstruction


def recon_table(per_item: pd.DataFrame) -> pd.DataFrame:
    """One row per (image type, method): per-seed means over items, then mean +- std over seeds."""
    scores = [c for c in ("psnr", "ms_ssim", "segsim_dice") if c in per_item]
    rows = []
    for (image_type, method), group in per_item.groupby(["image_type", "method"], sort=False):
        per_seed = group.groupby("seed")[scores].mean()
        first = group.iloc[0]
        row = {"image_type": image_type, "method": method, "kind": first["kind"], "f": int(first["f"]),
               "seeds": len(per_seed), "items_per_seed": int(group.groupby("seed").size().min()),
               "shape": first["shape"], "ms_ssim_variant": "; ".join(sorted(group["ms_ssim_variant"].unique()))}
        for score in scores:
            if group[score].notna().any():
                row[f"{score}_mean"], row[f"{score}_std"] = mean_std(per_seed[score].tolist())
        row["demo_data"] = bool(group["demo_data"].any())
        row["demo_weights"] = bool(group["demo_weights"].any())
        rows.append(row)
    return pd.DataFrame(rows)


def recon_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[["image_type", "method", "f", "seeds", "items_per_seed"]].copy()
    shown["PSNR (dB)"] = [format_mean_std(m, s, 2) for m, s in zip(table["psnr_mean"], table["psnr_std"])]
    shown["MS-SSIM"] = [format_mean_std(m, s, 4) for m, s in zip(table["ms_ssim_mean"], table["ms_ssim_std"])]
    shown["MS-SSIM variant"] = table["ms_ssim_variant"]
    if "segsim_dice_mean" in table:
        shown["SegSim Dice"] = [format_mean_std(m, s, 4) for m, s in zip(table["segsim_dice_mean"], table["segsim_dice_std"])]
    return shown


# ----------------------------------------------------------------------------- efficiency and storage


def efficiency_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[["dims", "input", "input_shape", "classifier", "latency_ms", "throughput_per_s"]].copy()
    shown["max batch"] = [f"≥{b} (capped)" if capped else str(b) for b, capped in zip(table["max_batch"], table["max_batch_capped"])]
    shown["latency ÷"] = table["latency_reduction"]
    shown["throughput ×"] = table["throughput_gain"]
    shown["input bytes ÷"] = table["input_bytes_reduction"]
    return shown


def storage_table(indexes: list[dict]) -> pd.DataFrame:
    """Bytes per item of each latent dataset: float32 image, float16 latent payload, tar on disk."""
    rows = []
    for index in indexes:
        count = index.get("num_samples", 0)
        store = index.get("storage", {})
        if not count:
            continue
        rows.append({"model": index["model"], "source": index["source"], "dims": index["dims"], "items": count,
                     "latent_shape": "x".join(map(str, index["latent"]["shape"])) if index["latent"].get("shape") else "varies",
                     "image_float32_bytes_per_item": round(store["input_float32_bytes"] / count),
                     "latent_float16_bytes_per_item": round(store["latent_float16_bytes"] / count),
                     "tar_bytes_per_item": round(store["tar_bytes"] / count),
                     "theoretical_ratio": store.get("theoretical_ratio"), "measured_ratio": store.get("measured_ratio"),
                     "config_sha256": str(index.get("config_sha256", ""))[:12],
                     "demo_weights": bool(index.get("demo_weights"))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures


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
        ax.bar(positions, rows["auroc_mean"].fillna(0), yerr=rows["auroc_std"].fillna(0),
               color=[KIND_COLORS[k] for k in rows["kind"]], capsize=2)
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(positions, rows["method"], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("AUROC")
        ax.set_title(task, fontsize=9)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    _save(plt, figure, path, provenance, title)


def figure_recon(panels: dict[str, dict[str, np.ndarray]], path: str | Path, provenance: str, per_type: int = 2) -> None:
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


def figure_efficiency(table: pd.DataFrame, path: str | Path, provenance: str) -> None:
    """Latency, throughput and max batch of the classifier on images and latents (log scale)."""
    title = f"Efficiency of the CAD classifiers on {table['device'].iloc[0] if len(table) else 'n/a'}"
    if table.empty:
        return _message_figure(path, provenance, title, "no efficiency rows")
    plt, figure, axes = _figure(1, 3, (13, 3.8))
    labels = [f"{d}D {i}" for d, i in zip(table["dims"], table["input"])]
    colors = ["#4d4d4d" if f == 1 else "#d62728" for f in table["f"]]
    for ax, column, label in zip(axes[0], ("latency_ms", "throughput_per_s", "max_batch"),
                                 ("latency (ms per batch)", "throughput (samples/s)", "max batch (power of 2)")):
        ax.bar(np.arange(len(table)), table[column], color=colors)
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(table)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(label + (" - capped on CPU" if column == "max_batch" and table["max_batch_capped"].any() else ""), fontsize=9)
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
    for ax in list(axes.flat)[len(loss_files):]:
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


# ----------------------------------------------------------------------------- summary


def summary_markdown(spec: dict, tables: dict[str, Path], figures: dict[str, Path], curation: list[dict],
                     demo_weights: bool, loss_files: dict[str, Path]) -> str:
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
    lines += [f"| {r['source']} | {r.get('found', '')} | {r['kept']} | {r['rejected']} | "
              f"{', '.join(f'{k}: {v}' for k, v in r.get('rejected_by_category', {}).items())} |" for r in curation]
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


def build_report(spec: dict, tables: dict[str, Path], cad_csv: Path, efficiency_csv: Path, panel_files: list[str],
                 curation_files: list[str], weights_paths: list[str], figures_dir: Path, summary: Path) -> dict[str, Path]:
    """All figures plus the summary; returns the figure paths by name."""
    cad = pd.read_csv(cad_csv)
    efficiency = pd.read_csv(efficiency_csv)
    panels = {}
    for file in panel_files:
        with np.load(file) as data:
            panels[Path(file).parent.name] = {key: data[key] for key in data.files}
    curation = [json.loads(Path(f).read_text(encoding="utf-8")) for f in curation_files]
    loss_files = loss_files_of(weights_paths)
    demo_weights = _flag(cad, "demo_weights") or any(_flag(pd.read_csv(Path(t).with_suffix(".csv")), "demo_weights")
                                                     for t in tables.values())
    provenance = stamp(spec["config_hash"], spec["demo"], demo_weights)
    figures = {name: figures_dir / f"{name}.png" for name in ("cad_auroc", "recon_panels", "efficiency", "training_curves",
                                                              "curation_counts")}
    figure_cad(cad, figures["cad_auroc"], provenance)
    figure_recon(panels, figures["recon_panels"], provenance)
    figure_efficiency(efficiency, figures["efficiency"], provenance)
    figure_training(loss_files, figures["training_curves"], provenance)
    figure_curation(curation, figures["curation_counts"], provenance)
    write_text(summary, summary_markdown(spec, tables, figures, curation, demo_weights, loss_files))
    return figures
