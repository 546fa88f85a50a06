"""list-shards, train-stage1, train-stage2-2d, train-stage2-3d, import-weights, demo-weights (the rules of
train.smk), gpu-run.

Training runs through `medlatent.train.launch` (its GPUs, one torchrun process per GPU).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medlatent.commands import json_arg, spec_command
from medlatent.core.errors import MedLatentError

#: Command -> (function of medlatent.train.recipes, whether it starts from a stage-1 file).
STAGES = {
    "train-stage1": ("train_stage1", False),
    "train-stage2-2d": ("train_stage2_2d", True),
    "train-stage2-3d": ("train_stage2_3d", True),
}


def list_shards(args: argparse.Namespace) -> None:
    from medlatent.train.shard_lists import write_shard_list

    write_shard_list(args.shards, args.out)


def train(args: argparse.Namespace) -> None:
    from medlatent.train.launch import train_on_granted_devices
    from medlatent.train.shard_lists import read_shard_lists

    fields = dict(
        spec=args.spec,
        train_shards=read_shard_lists(args.train_lists),
        val_shards=read_shard_lists(args.val_lists),
        manifests=args.manifests,
        checkpoints=Path(args.checkpoints),
        weights=Path(args.out),
        losses=Path(args.losses),
        curve=Path(args.curve),
        card=Path(args.card) if args.card else None,
        parent=Path(args.stage1) if args.stage1 else None,
    )
    train_on_granted_devices(args.command, STAGES[args.command][0], fields, args.threads)


def import_weights(args: argparse.Namespace) -> None:
    from medlatent.train.recipes import import_weights as run_import

    run_import(args.spec, args.weights, args.out, args.card)


def demo_weights(args: argparse.Namespace) -> None:
    from medlatent.demo.autoencoders import write_demo_weights

    write_demo_weights(args.spec["model"], args.spec["seed"], args.out)


def gpu_run(args: argparse.Namespace) -> None:
    from medlatent.core.gpus import run_with_gpus

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        raise MedLatentError("gpu-run: give the command after --, e.g. medlatent gpu-run --gpus 1 -- python x.py")
    status = run_with_gpus(args.gpus, command)
    if status:
        raise MedLatentError(f"gpu-run: {command[0]} exited with status {status}")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list-shards", help="shard list of one source and split (what training reads)")
    parser.add_argument("--shards", nargs="+", required=True, help="normalized shards of the source and split")
    parser.add_argument("--out", required=True, help="shard list JSON to write")
    parser.set_defaults(run=list_shards)

    for name, (_, needs_stage1) in STAGES.items():
        parser = commands.add_parser(name, help=f"{name.removeprefix('train-')} training of one model")
        parser.add_argument("--spec", type=json_arg, required=True, help="the model's train slice (JSON)")
        parser.add_argument("--train-lists", nargs="+", required=True, help="shard lists of the train split")
        parser.add_argument("--val-lists", nargs="*", default=[], help="shard lists of the val split")
        parser.add_argument("--manifests", nargs="*", default=[], help="manifests of the training sources (card)")
        if needs_stage1:
            parser.add_argument(
                "--stage1", required=True, help="stage1.pt of this model (2D) or its inflate_from model (3D)"
            )
            parser.add_argument("--card", required=True)
        parser.add_argument("--out", required=True, help="weights file to write")
        parser.add_argument("--losses", required=True, help="loss curve CSV")
        parser.add_argument("--curve", required=True, help="loss curve PNG")
        parser.add_argument("--checkpoints", required=True, help="folder for resumable checkpoints")
        parser.add_argument("--threads", type=int, default=1, help="CPU threads of the job (Snakemake {threads})")
        parser.set_defaults(run=train, stage1=None, card=None)

    parser = commands.add_parser("import-weights", help="final weights + card of a model with released `weights:`")
    parser.add_argument("--spec", type=json_arg, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--card", required=True)
    parser.set_defaults(run=import_weights)

    spec_command(
        commands,
        "demo-weights",
        "demo runs: tiny random weights of a family model, in its library's format (demo weights)",
        demo_weights,
        outputs=("out",),
    )

    parser = commands.add_parser("gpu-run", help="run a command on N locked GPUs (CUDA_VISIBLE_DEVICES set)")
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("command_line", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    parser.set_defaults(run=gpu_run)
