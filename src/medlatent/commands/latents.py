"""extract-latents, index-latents (the rules of latents.smk), verify, decode: latent datasets and their use."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from medlatent.commands import json_arg


def extract(args: argparse.Namespace) -> None:
    import pandas as pd

    from medlatent.core.gpus import granted
    from medlatent.latents.extract import extract_shards

    with granted(args.gpus) as grant:
        os.environ.update(grant.environment())  # before CUDA starts: this job sees only its devices
        device = grant.torch_device().type
        # Reader workers overlap reading with a GPU's encoder. On a CPU the encoder already uses
        # every core the job has and reading is 1-2 % of its time: workers would only compete.
        workers = args.threads - 1 if device == "cuda" else 0
        extract_shards(
            args.spec,
            args.shard_files,
            pd.read_parquet(args.manifest),
            Path(args.weights),
            Path(args.dataset_dir),
            Path(args.part),
            device=device,
            workers=workers,
        )


def index(args: argparse.Namespace) -> None:
    from medlatent.latents.index import write_dataset_files

    write_dataset_files(args.spec, args.parts, args.card, args.dataset_dir)


def verify(args: argparse.Namespace) -> None:
    from medlatent.latents.verify import verify_dataset

    print(json.dumps(verify_dataset(args.dataset_dir), indent=1, sort_keys=True))


def decode(args: argparse.Namespace) -> None:
    import torch

    from medlatent.latents.decode import decode_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    written = decode_dataset(
        args.dataset,
        args.out,
        split=args.split,
        fmt=args.format,
        intensity=args.intensity,
        grid=args.grid,
        workdir=args.workdir,
        weights=args.weights,
        device=device,
    )
    print(f"{len(written)} images in {args.out}")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("extract-latents", help="encode normalized shards into WebDataset tars")
    parser.add_argument("--spec", type=json_arg, required=True, help="latents_extract_slice (JSON)")
    parser.add_argument("--shard-files", nargs="+", required=True, help="data/normalized/<source>/<shard>.h5 ...")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--weights", required=True, help="results/models/<model>/stage2.pt")
    parser.add_argument("--dataset-dir", required=True, help="data/latents/<model>/<source>; receives each <shard>.tar")
    parser.add_argument("--part", required=True, help="the part record to write (the job's declared output)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to lock for the job (medlatent.core.gpus); 0: CPU")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPUs granted: the encoder, and on a GPU threads - 1 shard readers"
    )
    parser.set_defaults(run=extract)

    parser = commands.add_parser("index-latents", help="index.json, _info.json and README.md of a latent dataset")
    parser.add_argument("--spec", type=json_arg, required=True, help="latents_index_slice (JSON)")
    parser.add_argument("--card", required=True, help="results/models/<model>/card.json")
    parser.add_argument("--parts", nargs="+", required=True)
    parser.add_argument("--dataset-dir", required=True)
    parser.set_defaults(run=index)

    parser = commands.add_parser("verify", help="check a latent dataset's shards and card against its index.json")
    parser.add_argument("dataset_dir", help="data/latents/<model>/<source> (e.g. after dvc import / dvc pull)")
    parser.set_defaults(run=verify)

    parser = commands.add_parser("decode", help="a latent dataset back to images on each item's own grid")
    parser.add_argument("dataset", help="data/latents/<model>/<source> (or its index.json)")
    parser.add_argument("--out", required=True, help="receives <split>/<item_id>.png or .nii.gz")
    parser.add_argument("--split", choices=("train", "val", "test"), help="default: every split with samples")
    parser.add_argument("--format", choices=("nifti", "png"), help="default: png for 2D, nifti for 3D")
    parser.add_argument(
        "--intensity",
        choices=("model", "source"),
        default="model",
        help="model: the decoder's scale (output_range); source: mapped back through the "
        "normalization's intensity window (NIfTI only)",
    )
    parser.add_argument(
        "--grid",
        choices=("original", "normalized"),
        default="original",
        help="3D: original: each item's acquisition grid and affine; normalized: the model's "
        "input grid (RAS, configured spacing and size)",
    )
    parser.add_argument(
        "--workdir", default=".", help="the workflow directory holding results/models/<model>/stage2.pt"
    )
    parser.add_argument("--weights", help="the model's weights file instead (its sha256 must match the index)")
    parser.add_argument("--device", help="torch device; default cuda when available, else cpu")
    parser.set_defaults(run=decode)
