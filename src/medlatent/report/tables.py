"""Tables (CSV + Markdown) of the evaluation, with the notes that say how each number was made.

CAD AUROC / accuracy / macro-F1 as mean +- std over seeds (sample std, n - 1) per
(task, method); reconstruction PSNR / MS-SSIM (and SegSim for 3D) per (image type, method),
mean over the items of each seed, then mean +- std over seeds; efficiency timings and storage.
Every table ends with a footer naming the hash of the configuration it was made from and
whether demo weights or demo data were involved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from medlatent.config.evaluation import segmenter_label
from medlatent.core.atomic import atomic_path, write_text

METRICS = ("auroc", "accuracy", "macro_f1")
KIND_ORDER = ("highres", "interpolation", "medvae", "family", "slicewise", "external")
PAPER_EFFICIENCY = (
    "Paper (Figure 2, one GPU): 2D f=64 latency ÷69, throughput ×70, max batch ×32; "
    "3D f=512 latency ÷62, throughput ×55, max batch ×512; storage ÷f."
)
GEOMETRY_NOTE = (
    "Latent shape: channels first (C x grid; the downsized image for interpolation and f=1 images); "
    "compression: input elements / latent elements, channels included (as MediBench's Table 6); "
    "f: input pixels or voxels per latent position, from each model's own geometry."
)
DEMO_NOTE = (
    "Demo: synthetic data with planted findings and small random-initialised networks, trained for "
    "seconds or not at all; the numbers exercise the pipeline and say nothing about MedVAE."
)


# ----------------------------------------------------------------------------- table helpers


def yes_no(flag: bool) -> str:
    """'yes' or 'no', as tables and stamps print a flag."""
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


def compression(ratio: float) -> str:
    """'48:1', as MediBench writes a compression ratio; one decimal when it is not whole."""
    return f"{ratio:.0f}:1" if float(ratio).is_integer() else f"{ratio:.1f}:1"


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


def stamp(config_hash: str, demo_data: bool, demo_weights: bool, what: str = "config") -> str:
    """The provenance line of every table ('config slice': the slices of its jobs) and figure (whole config)."""
    return f"{what} {config_hash} · demo data: {yes_no(demo_data)} · demo weights: {yes_no(demo_weights)}"


def write_table(
    frame: pd.DataFrame,
    display: pd.DataFrame,
    csv_path: str | Path,
    md_path: str | Path,
    title: str,
    notes: list[str],
    provenance: str,
) -> None:
    """CSV of the numbers (with provenance columns) and Markdown of the display frame, atomically."""
    with atomic_path(csv_path) as temporary:
        frame.to_csv(temporary, index=False)
    lines = [f"# {title}", "", markdown_table(display) if len(display) else "_no rows_", ""]
    lines += [f"- {note}" for note in notes]
    lines += [f"- Provenance: {provenance}", ""]
    write_text(md_path, "\n".join(lines))


def any_flag(frame: pd.DataFrame, column: str) -> bool:
    """Whether any row of `frame` sets the boolean `column` (False when the column is absent)."""
    return bool(column in frame and frame[column].astype(bool).any())


def table_provenance(spec: dict, frame: pd.DataFrame) -> str:
    """The stamp of a table made from one job's config slice, with the table's own demo-weights flag."""
    return stamp(spec["config_hash"], spec["demo"], any_flag(frame, "demo_weights"), what="config slice")


def _read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- CAD


def cad_table(metrics: list[dict]) -> pd.DataFrame:
    """One row per (task, method): mean and std over seeds of every metric."""
    rows = []
    frame = pd.DataFrame(metrics)
    for (task, method), group in frame.groupby(["task", "method"], sort=False):
        first = group.iloc[0]
        row = {
            "task": task,
            "method": method,
            "kind": first["kind"],
            "f": int(first["f"]),
            "latent_shape": "x".join(map(str, first["latent_shape"])),
            "compression_ratio": float(first["compression_ratio"]),
            "seeds": len(group),
            "n_train": int(first["n_train"]),
            "n_test": int(first["n_test"]),
            "classifier": first["classifier"],
        }
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
    shown = table[["task", "method", "kind", "f"]].copy()
    shown["latent shape"] = table["latent_shape"]
    shown["compression"] = [compression(r) for r in table["compression_ratio"]]
    shown["seeds"] = table["seeds"]
    for metric in METRICS:
        shown[metric.replace("_", "-")] = [
            format_mean_std(m, s, 3) for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"])
        ]
    shown["n train/test"] = [f"{a}/{b}" for a, b in zip(table["n_train"], table["n_test"])]
    return shown


def write_cad_table(spec: dict, metric_files: list[str], csv_path: str | Path, md_path: str | Path) -> None:
    """Aggregate the CAD metrics JSON files of every (task, method, seed) into the CAD table (CSV + Markdown)."""
    table = cad_table([_read_json(p) for p in metric_files])
    classifiers = ", ".join(sorted(table["classifier"].unique())) if len(table) else "n/a"
    notes = [
        f"AUROC (macro one-vs-rest for multi-class), accuracy and macro-F1 on the test split with the final "
        f"checkpoint; mean ± sample std over seeds {spec['seeds']}.",
        f"Classifiers: {classifiers}; labels and patient-level splits from the curated manifests.",
        "Methods: highres = normalized images (f=1); <mode>_f<f> = interpolation to the size of a latent at f; "
        "model ids = latents of the MedVAE (kind medvae) and imported (kind family: diffusers, MAISI) models, "
        "read from their latent datasets (VQ: the quantized latent); *_slicewise = 2D model per slice, stacked "
        "(3D tasks).",
        GEOMETRY_NOTE
        + " Latents enter the classifier as their channel mean, fitted to the task's input size / factor.",
    ]
    notes += [DEMO_NOTE] if spec["demo"] else []
    write_table(
        table,
        cad_display(table),
        csv_path,
        md_path,
        "Downstream CAD (latent utility)",
        notes,
        table_provenance(spec, table),
    )


# ----------------------------------------------------------------------------- reconstruction


def recon_table(per_item: pd.DataFrame) -> pd.DataFrame:
    """One row per (image type, method): per-seed means over items, then mean +- std over seeds."""
    scores = [c for c in ("psnr", "ms_ssim", "segsim_dice", "segqc_changed") if c in per_item]
    rows = []
    for (image_type, method), group in per_item.groupby(["image_type", "method"], sort=False):
        per_seed = group.groupby("seed")[scores].mean()
        first = group.iloc[0]
        row = {
            "image_type": image_type,
            "method": method,
            "kind": first["kind"],
            "f": int(first["f"]),
            "seeds": len(per_seed),
            "items_per_seed": int(group.groupby("seed").size().min()),
            "shape": first["shape"],
            "latent_shape": "; ".join(group["latent_shape"].astype(str).unique()),
            "compression_ratio": float(group["compression_ratio"].mean()),
            "ms_ssim_variant": "; ".join(sorted(group["ms_ssim_variant"].unique())),
        }
        for score in scores:
            if group[score].notna().any():
                row[f"{score}_mean"], row[f"{score}_std"] = mean_std(per_seed[score].tolist())
        row["demo_data"] = bool(group["demo_data"].any())
        row["demo_weights"] = bool(group["demo_weights"].any())
        rows.append(row)
    return pd.DataFrame(rows)


def recon_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[["image_type", "method", "f"]].copy()
    shown["latent shape"] = table["latent_shape"]
    shown["compression"] = [compression(r) for r in table["compression_ratio"]]
    shown[["seeds", "items_per_seed"]] = table[["seeds", "items_per_seed"]]
    shown["PSNR (dB)"] = [format_mean_std(m, s, 2) for m, s in zip(table["psnr_mean"], table["psnr_std"])]
    shown["MS-SSIM"] = [format_mean_std(m, s, 4) for m, s in zip(table["ms_ssim_mean"], table["ms_ssim_std"])]
    shown["MS-SSIM variant"] = table["ms_ssim_variant"]
    if "segsim_dice_mean" in table:
        shown["SegSim Dice"] = [
            format_mean_std(m, s, 4) for m, s in zip(table["segsim_dice_mean"], table["segsim_dice_std"])
        ]
        shown["SegQC changed structures"] = [
            format_mean_std(m, s, 1) for m, s in zip(table["segqc_changed_mean"], table["segqc_changed_std"])
        ]
    return shown


def write_recon_table(spec: dict, per_item_files: list[str], csv_path: str | Path, md_path: str | Path) -> None:
    """Aggregate the per-item reconstruction scores of every image type into one table (CSV + Markdown)."""
    table = recon_table(pd.concat([pd.read_csv(p) for p in per_item_files], ignore_index=True))
    notes = [
        "PSNR (data range 2 of [-1, 1]) and MS-SSIM (pytorch-msssim, images mapped to [0, 1]) of "
        "reconstructions clipped to [-1, 1]; per seed the mean over the sampled items, then mean ± sample std "
        "over seeds. Interpolation rows downsize to the latent size at f and resize back with the same kernel.",
        "Methods: model ids = MedVAE and imported family models (diffusers, MAISI), decoded through their "
        "family's own decoder (VQ: from the codes); *_slicewise = 2D model per slice; <mode>_f<f> = interpolation. "
        + GEOMETRY_NOTE
        + " Items of one image type may differ in size: the ratio is the mean over items.",
        "MS-SSIM variant: images too small for 5 scales with the 11-voxel window use fewer scales (published "
        "weights renormalized); the column names the variant of each row.",
        "SegSim (3D only): macro mean Dice (MONAI compute_dice) over the structures present in the segmentation "
        "of the original or of the reconstruction (one missing from either scores 0); SegQC: structures whose "
        f"volume changed by more than {_volume_changes(spec['segmenters'])} of the original's, counted. "
        f"Segmenter: {'; '.join(dict.fromkeys(segmenter_label(s) for s in spec['segmenters'])) or 'none'}.",
    ]
    notes += [DEMO_NOTE] if spec["demo"] else []
    write_table(
        table, recon_display(table), csv_path, md_path, "Reconstruction quality", notes, table_provenance(spec, table)
    )


def _volume_changes(segmenters: list[dict]) -> str:
    return " / ".join(sorted({f"{s['volume_change']:.0%}" for s in segmenters})) or "the configured fraction"


# ----------------------------------------------------------------------------- efficiency and storage


def efficiency_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = table[["dims", "input", "input_shape", "classifier", "latency_ms", "throughput_per_s"]].copy()
    shown.insert(3, "latent shape", table["latent_shape"].fillna(""))
    shown["max batch"] = [
        f"≥{b} (capped)" if capped else str(b) for b, capped in zip(table["max_batch"], table["max_batch_capped"])
    ]
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
        rows.append(
            {
                "model": index["model"],
                "source": index["source"],
                "dims": index["dims"],
                "items": count,
                "latent_shape": (
                    "x".join(map(str, index["latent"]["shape"])) if index["latent"].get("shape") else "varies"
                ),
                "image_float32_bytes_per_item": round(store["input_float32_bytes"] / count),
                "latent_float16_bytes_per_item": round(store["latent_float16_bytes"] / count),
                "bytes_per_item": round(store["bytes_per_sample"]),
                "overhead_bytes_per_item": round(store["overhead_bytes_per_sample"]),
                "theoretical_ratio": store.get("theoretical_ratio"),
                "measured_ratio": store.get("measured_ratio"),
                "config_sha256": str(index.get("config_sha256", ""))[:12],
                "demo_weights": bool(index.get("demo_weights")),
            }
        )
    return pd.DataFrame(rows)


def write_efficiency_tables(
    spec: dict,
    timing_file: str | Path,
    latent_indexes: list[str],
    csv_path: str | Path,
    md_path: str | Path,
    storage_csv: str | Path,
    storage_md: str | Path,
) -> None:
    """The efficiency table (classifier timings) and the storage table (latent indexes), CSV + Markdown each."""
    timing = pd.DataFrame(_read_json(timing_file)["rows"])
    device = timing["device"].iloc[0] if len(timing) else "n/a"
    notes = [
        f"Device: {device}. Latency: median over the timed iterations of one forward pass (batch "
        f"{spec['batch_size']}); throughput = batch / latency; max batch: largest power of two that trains "
        "one step (forward + backward).",
        "On CPU the max-batch search stops at evaluation.efficiency.max_batch_cap_cpu (≥ marks a lower bound).",
        "Latent inputs have one channel (channel mean), as the classifier sees them; input bytes as float32.",
        "latent f=...: the MedVAE models' f, isotropic (size / sqrt(f) per side in 2D, / cbrt(f) per axis in 3D); "
        "a family model's row: the grid of its own factors per axis, read from its weights (video VAEs: 8 in "
        "plane, 4 along the slice axis; 2D models slice-wise keep the slice axis), latent shape before the mean.",
        PAPER_EFFICIENCY,
    ]
    notes += [DEMO_NOTE] if spec["demo"] else []
    write_table(
        timing,
        efficiency_display(timing),
        csv_path,
        md_path,
        "Efficiency of the CAD classifiers",
        notes,
        table_provenance(spec, timing),
    )
    storage = storage_table([_read_json(p) for p in latent_indexes])
    write_table(
        storage,
        storage,
        storage_csv,
        storage_md,
        "Storage per item: images vs latents",
        [
            "From the latent datasets' index.json: float32 normalized image, float16 latent payload and the bytes "
            "on disk per item (tars and their labels-and-meta sidecars); overhead = bytes on disk minus the stored "
            "float16 arrays (tar and npy headers, padding, the sidecar entry); config_sha256 is each dataset's "
            "own config hash."
        ],
        table_provenance(spec, storage),
    )
