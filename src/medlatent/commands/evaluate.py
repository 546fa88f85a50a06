"""cad-train, cad-table, recon, recon-table, efficiency, efficiency-table, report: the evaluation half."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medlatent.commands import json_arg

log = logging.getLogger("medlatent")

PAPER_EFFICIENCY = ("Paper (Figure 2, one GPU): 2D f=64 latency ÷69, throughput ×70, max batch ×32; "
                    "3D f=512 latency ÷62, throughput ×55, max batch ×512; storage ÷f.")
DEMO_NOTE = ("Demo: synthetic data with planted findings and small random-initialised networks trained for "
             "seconds; the numbers exercise the pipeline and say nothing about MedVAE.")


@contextmanager
def _job_device(threads: int, gpus: int) -> Iterator:
    """The torch device of a job: the GPUs medlatent.core.gpus grants it (locked for the job), else the CPU."""
    import torch

    from medlatent.core.gpus import granted

    torch.set_num_threads(max(1, threads))
    with granted(gpus) as grant:
        os.environ.update(grant.environment())  # before CUDA starts: the job sees only its devices
        yield grant.torch_device()


def _provenance(spec: dict, frame) -> str:
    from medlatent.report.tables import _flag, stamp

    return stamp(spec["config_hash"], spec["demo"], _flag(frame, "demo_weights"), what="config slice")


def cad_train(args: argparse.Namespace) -> None:
    from medlatent.cad.run import run_cad

    with _job_device(args.threads, args.gpus) as device:
        run_cad(args.spec, args.manifest, args.shards, args.model_input, args.out, device)


def cad_table(args: argparse.Namespace) -> None:
    from medlatent.report.tables import cad_display, cad_table as build, write_table

    table = build([json.loads(Path(p).read_text(encoding="utf-8")) for p in args.metrics])
    classifiers = ", ".join(sorted(table["classifier"].unique())) if len(table) else "n/a"
    notes = [f"AUROC (macro one-vs-rest for multi-class), accuracy and macro-F1 on the test split with the final "
             f"checkpoint; mean ± sample std over seeds {args.spec['seeds']}.",
             f"Classifiers: {classifiers}; labels and patient-level splits from the curated manifests.",
             "Methods: highres = normalized images (f=1); <mode>_f<f> = interpolation to the size of a latent at f; "
             "model ids = MedVAE latents; *_slicewise = 2D model per slice, stacked (3D tasks)."]
    notes += [DEMO_NOTE] if args.spec["demo"] else []
    write_table(table, cad_display(table), args.csv, args.md, "Downstream CAD (latent utility)", notes,
                _provenance(args.spec, table))


def recon(args: argparse.Namespace) -> None:
    import numpy as np

    from medlatent.core.atomic import atomic_path
    from medlatent.evaluate.recon import evaluate_image_type

    weights = dict(pair.split("=", 1) for pair in args.weights)
    with _job_device(args.threads, args.gpus) as device:
        rows, panels = evaluate_image_type(args.spec, args.shards, weights, device)
    with atomic_path(args.per_item) as temporary:
        rows.to_csv(temporary, index=False)
    with atomic_path(args.panels) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **panels)


def recon_table(args: argparse.Namespace) -> None:
    import pandas as pd

    from medlatent.report.tables import recon_display, recon_table as build, segmenter_label, write_table

    per_item = pd.concat([pd.read_csv(p) for p in args.per_item], ignore_index=True)
    table = build(per_item)
    notes = ["PSNR (data range 2 of [-1, 1]) and MS-SSIM (pytorch-msssim, images mapped to [0, 1]) of "
             "reconstructions clipped to [-1, 1]; per seed the mean over the sampled items, then mean ± sample std "
             "over seeds. Interpolation rows downsize to the latent size at f and resize back with the same kernel.",
             "MS-SSIM variant: images too small for 5 scales with the 11-voxel window use fewer scales (published "
             "weights renormalized); the column names the variant of each row.",
             f"SegSim (3D only): mean Dice over labels between segmentations of original and reconstruction by a "
             f"{', '.join(segmenter_label(s) for s in args.spec['segmenters']) or 'segmenter'}."]
    notes += [DEMO_NOTE] if args.spec["demo"] else []
    write_table(table, recon_display(table), args.csv, args.md, "Reconstruction quality", notes,
                _provenance(args.spec, table))


def efficiency(args: argparse.Namespace) -> None:
    from medlatent.core.atomic import write_text
    from medlatent.evaluate.efficiency import efficiency_rows

    with _job_device(args.threads, args.gpus) as device:
        rows = efficiency_rows(args.spec, device)
    write_text(args.out, json.dumps({"rows": rows, "spec": args.spec}, indent=1, sort_keys=True) + "\n")


def efficiency_table(args: argparse.Namespace) -> None:
    import pandas as pd

    from medlatent.report.tables import efficiency_display, storage_table, write_table

    timing = pd.DataFrame(json.loads(Path(args.timing).read_text(encoding="utf-8"))["rows"])
    device = timing["device"].iloc[0] if len(timing) else "n/a"
    notes = [f"Device: {device}. Latency: median over the timed iterations of one forward pass (batch "
             f"{args.spec['batch_size']}); throughput = batch / latency; max batch: largest power of two that trains "
             "one step (forward + backward).",
             "On CPU the max-batch search stops at evaluation.efficiency.max_batch_cap_cpu (≥ marks a lower bound).",
             "Latent inputs have one channel (channel mean), as the classifier sees them; input bytes as float32.",
             PAPER_EFFICIENCY]
    notes += [DEMO_NOTE] if args.spec["demo"] else []
    write_table(timing, efficiency_display(timing), args.csv, args.md, "Efficiency of the CAD classifiers", notes,
                _provenance(args.spec, timing))
    storage = storage_table([json.loads(Path(p).read_text(encoding="utf-8")) for p in args.latent_indexes])
    write_table(storage, storage, args.storage_csv, args.storage_md, "Storage per item: images vs latents",
                ["From the latent datasets' index.json: float32 normalized image, float16 latent payload and the tar "
                 "bytes on disk per item (tar and npy headers, meta.json, labels.json included); config_sha256 is "
                 "each dataset's own config hash."],
                _provenance(args.spec, storage))


def report(args: argparse.Namespace) -> None:
    from medlatent.report.tables import build_report

    tables = {Path(p).stem: Path(p) for p in args.tables}
    build_report(args.spec, tables, Path(args.cad_csv), Path(args.efficiency_csv), args.panels, args.curation,
                 args.weights, Path(args.figures_dir), Path(args.summary))


def _command(commands: argparse._SubParsersAction, name: str, help_text: str, run, device: bool = False,
             outputs: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A subcommand taking its config slice (`--spec`), required outputs and, for compute jobs, threads and GPUs."""
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("--spec", type=json_arg, required=True, help="the job's config slice (JSON)")
    if device:
        parser.add_argument("--threads", type=int, default=1)
        parser.add_argument("--gpus", type=int, default=0, help="GPUs to lock for the job (medlatent.core.gpus); 0: CPU")
    for output in outputs:
        parser.add_argument(f"--{output}", required=True)
    parser.set_defaults(run=run)
    return parser


def register(commands: argparse._SubParsersAction) -> None:
    parser = _command(commands, "cad-train", "train and test one CAD classifier (task, method, seed)", cad_train,
                      device=True, outputs=("out",))
    parser.add_argument("--manifest", required=True, help="the task source's curated manifest (labels, splits)")
    parser.add_argument("--shards", nargs="*", default=[], help="normalized shards (image-based methods)")
    parser.add_argument("--model-input", nargs="?", default=None, const=None,
                        help="latent dataset index.json (medvae) or autoencoder weights (slicewise, external)")

    parser = _command(commands, "cad-table", "aggregate CAD metrics over seeds into CSV + Markdown", cad_table,
                      outputs=("csv", "md"))
    parser.add_argument("--metrics", nargs="+", required=True)

    parser = _command(commands, "recon", "reconstruction scores of every method on one image type", recon,
                      device=True, outputs=("per-item", "panels"))
    parser.add_argument("--shards", nargs="+", required=True)
    parser.add_argument("--weights", nargs="*", default=[], help="MODEL=PATH of every autoencoder")

    parser = _command(commands, "recon-table", "aggregate reconstruction scores into CSV + Markdown", recon_table,
                      outputs=("csv", "md"))
    parser.add_argument("--per-item", nargs="+", required=True)

    _command(commands, "efficiency", "latency, throughput and max batch of the CAD classifiers", efficiency,
             device=True, outputs=("out",))

    parser = _command(commands, "efficiency-table", "efficiency and storage tables (CSV + Markdown)", efficiency_table,
                      outputs=("csv", "md", "storage-csv", "storage-md"))
    parser.add_argument("--timing", required=True)
    parser.add_argument("--latent-indexes", nargs="*", default=[])

    parser = _command(commands, "report", "figures and results/report/summary.md", report,
                      outputs=("figures-dir", "summary"))
    parser.add_argument("--tables", nargs="+", required=True, help="the Markdown tables, in report order")
    parser.add_argument("--cad-csv", required=True)
    parser.add_argument("--efficiency-csv", required=True)
    parser.add_argument("--panels", nargs="*", default=[])
    parser.add_argument("--curation", nargs="*", default=[])
    parser.add_argument("--weights", nargs="*", default=[], help="model weights; loss CSVs are read beside them")
