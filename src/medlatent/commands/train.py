"""train-stage1, train-stage2-2d, train-stage2-3d, import-weights, gpu-run: the model half.

A training command first takes its GPUs (`medlatent.core.gpus`: disjoint devices for concurrent
local jobs, SLURM's own devices inside a SLURM job, the CPU when there are none); on more
than one it re-runs itself under torchrun, one process per GPU, and the children (which
find RANK in their environment) train.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from medlatent.core.errors import MedLatentError
from medlatent.commands import json_arg

log = logging.getLogger("medlatent")

#: Command -> (function of medlatent.train.recipes, whether it starts from a stage-1 file).
STAGES = {
    "train-stage1": ("train_stage1", False),
    "train-stage2-2d": ("train_stage2_2d", True),
    "train-stage2-3d": ("train_stage2_3d", True),
}


def _train_here(args: argparse.Namespace, context) -> None:
    import torch

    from medlatent.train import ddp, recipes
    from medlatent.train.loop import Job

    torch.set_num_threads(max(1, args.threads // context.world))
    job = Job(
        spec=args.spec, train_shards=args.train_shards, val_shards=args.val_shards, manifests=args.manifests,
        checkpoints=Path(args.checkpoints), weights=Path(args.out), losses=Path(args.losses),
        curve=Path(args.curve), card=Path(args.card) if args.card else None,
        parent=Path(args.stage1) if args.stage1 else None, context=context,
        # the CPU computes; on GPUs spare threads feed it data
        workers=max(0, args.threads // context.world - 1) if context.device.type == "cuda" else 0,
    )
    try:
        getattr(recipes, STAGES[args.command][0])(job)
    finally:
        ddp.teardown(context)


def train(args: argparse.Namespace) -> None:
    from medlatent.core import gpus
    from medlatent.train import ddp
    from medlatent.train.data import processes_for

    if ddp.launched_by_torchrun():  # a child of the launch below: its devices are already set
        _train_here(args, ddp.setup())
        return
    settings = args.spec["train"]
    with gpus.granted(settings["gpus"]) as grant:
        processes = processes_for(settings, grant.count)
        os.environ[gpus.VISIBLE] = ",".join(grant.devices[:processes])
        log.info("%s %s: GPUs %s (%s), %d process(es)", args.spec["model"]["id"], args.command,
                 grant.devices or "none, CPU", grant.source, processes)
        if processes > 1:
            status = ddp.launch(processes, dict(os.environ), grant.lock_fds())
            if status:
                raise MedLatentError(f"{args.command}: a training process exited with status {status} (see above)")
            return
        _train_here(args, ddp.setup())


def import_weights(args: argparse.Namespace) -> None:
    from medlatent.core.hashing import file_sha256
    from medlatent.models.card import demo_reasons, write_card
    from medlatent.core.hub import is_hub_path
    from medlatent.models.registry import save_model
    from medlatent.models.serialize import import_model

    model = args.spec["model"]
    medvae, origin = import_model(args.weights, model, is_demo=args.spec["demo"])
    reasons = demo_reasons({"demo": args.spec["demo"]}, {}) + (["the weights file is marked demo"]
                                                                if medvae.is_demo and not args.spec["demo"] else [])
    origin.update(sha256=file_sha256(args.weights), demo_reasons=reasons)
    if is_hub_path(model.get("weights")):
        origin["requested"] = model["weights"]  # `path` is where the hub cache held it
    save_model(args.out, medvae, embedder=None, steps=0)
    write_card(args.card, model, {}, weights=origin)
    log.info("imported %s from %s", model["id"], args.weights)


def gpu_run(args: argparse.Namespace) -> None:
    from medlatent.core.gpus import run_with_gpus

    command = args.command_line[1:] if args.command_line[:1] == ["--"] else args.command_line
    if not command:
        raise MedLatentError("gpu-run: give the command after --, e.g. medlatent gpu-run --gpus 1 -- python x.py")
    status = run_with_gpus(args.gpus, command)
    if status:
        raise MedLatentError(f"gpu-run: {command[0]} exited with status {status}")


def register(commands: argparse._SubParsersAction) -> None:
    for name, (_, needs_stage1) in STAGES.items():
        parser = commands.add_parser(name, help=f"{name.removeprefix('train-')} training of one model")
        parser.add_argument("--spec", type=json_arg, required=True, help="the model's train slice (JSON)")
        parser.add_argument("--train-shards", nargs="+", required=True, help="normalized train-split shards")
        parser.add_argument("--val-shards", nargs="*", default=[], help="normalized val-split shards")
        parser.add_argument("--manifests", nargs="*", default=[], help="manifests of the training sources (card)")
        if needs_stage1:
            parser.add_argument("--stage1", required=True, help="stage1.pt of this model (2D) or its inflate_from model (3D)")
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

    parser = commands.add_parser("gpu-run", help="run a command on N locked GPUs (CUDA_VISIBLE_DEVICES set)")
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("command_line", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    parser.set_defaults(run=gpu_run)
