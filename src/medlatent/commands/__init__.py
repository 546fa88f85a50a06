"""Subcommands of the `medlatent` CLI: one module per rule file, plus `sources` and `workdir`.

Each module defines `register(commands)` adding its subparsers; every subparser sets
`run=<function(args)>`. Rules call these with their config slice as JSON (`--spec`).
The modules parse arguments only; the work is done in the stage packages.
"""

import argparse
import json

#: Modules registering subcommands, in the order of the DAG (the order `medlatent --help` lists them in).
MODULES = (
    "sources",
    "fetch",
    "curate",
    "normalize",
    "train",
    "latents",
    "publish",
    "cad",
    "evaluate",
    "report",
    "workdir",
)


def json_arg(text: str) -> dict:
    """argparse type: a JSON object given on the command line."""
    return json.loads(text)


def bool_arg(text: str) -> bool:
    """argparse type: Snakemake renders Python booleans as True/False."""
    if text not in ("True", "False", "true", "false"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text.lower() == "true"


def spec_command(
    commands: argparse._SubParsersAction,
    name: str,
    help_text: str,
    run,
    device: bool = False,
    outputs: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand taking its config slice (`--spec`), required outputs and, for compute jobs, threads and GPUs.

    Args:
        commands: the CLI's subparsers.
        name: the subcommand.
        help_text: its line in `medlatent --help`.
        run: the function the subcommand calls with the parsed arguments.
        device: whether the job computes (adds `--threads` and `--gpus`).
        outputs: required output options, without the leading `--`.

    Returns:
        The subparser, for the subcommand's own options.
    """
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("--spec", type=json_arg, required=True, help="the job's config slice (JSON)")
    if device:
        parser.add_argument("--threads", type=int, default=1)
        parser.add_argument(
            "--gpus", type=int, default=0, help="GPUs to lock for the job (medlatent.core.gpus); 0: CPU"
        )
    for output in outputs:
        parser.add_argument(f"--{output}", required=True)
    parser.set_defaults(run=run)
    return parser
