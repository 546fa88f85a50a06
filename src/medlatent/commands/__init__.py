"""Subcommands of the `medlatent` CLI, one module per workflow stage.

Each module defines `register(commands)` adding its subparsers; every subparser sets
`run=<function(args)>`. Rules call these with their config slice as JSON (`--spec`).
"""

import argparse
import json

#: Modules registering subcommands, in the order of the pipeline.
MODULES = ("sources", "data", "train", "latents", "evaluate", "workdir")


def json_arg(text: str) -> dict:
    """argparse type: a JSON object given on the command line."""
    return json.loads(text)


def bool_arg(text: str) -> bool:
    """argparse type: Snakemake renders Python booleans as True/False."""
    if text not in ("True", "False", "true", "false"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text.lower() == "true"
