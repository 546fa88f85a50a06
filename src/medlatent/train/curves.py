"""Loss curves of a training stage: one CSV row per step (train) or validation, and a PNG.

The CSV holds every logged term; the PNG shows the headline ones (what a reader checks:
did the reconstruction improve, did the GAN stay balanced), one small panel each.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from medlatent.core.atomic import atomic_path

#: Terms drawn in the PNG, in this order, when a stage logs them.
PLOTTED = ("total", "rec_l1", "perceptual", "kl", "embed", "g_adv", "d_loss")


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Columns: step, split, then every logged term (empty where a row lacks it)."""
    terms = sorted({key for row in rows for key in row} - {"step", "split"})
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "split", *terms], restval="")
        writer.writeheader()
        writer.writerows(rows)


def plot(path: str | Path, rows: Sequence[dict], title: str) -> None:
    """One panel per headline term, train as a line and validation as dots; log scale for positive terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = {key for row in rows for key in row}
    terms = [term for term in PLOTTED if term in logged]
    columns = min(4, max(1, len(terms)))
    lines = max(1, math.ceil(len(terms) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 2.4 * lines), squeeze=False)
    for axis, term in zip(axes.flat, terms):
        for split, style in (("train", ".-"), ("val", "o")):
            points = [(row["step"], row[term]) for row in rows if row["split"] == split and term in row]
            if points:
                axis.plot(*zip(*points), style, label=split, markersize=3)
        values = [row[term] for row in rows if term in row]
        if values and min(values) > 0:
            axis.set_yscale("log")
        axis.set_title(term, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(terms) :]:
        axis.set_visible(False)
    figure.suptitle(f"{title} (x: step)", fontsize=10)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.85, wspace=0.35, hspace=0.5)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)
