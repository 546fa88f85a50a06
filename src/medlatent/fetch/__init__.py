"""Fetch one source into data/raw/<id> and write its receipt.

Each access method (config `access.method`) is one small module here exposing
`fetch(source, raw_dir, *, seed) -> Path`, which brings the files in (or checks they are in
place) and returns the folder holding them. `fetch_source` dispatches, then writes the
receipt last, so a receipt on disk means the fetch completed. Modules are imported on
demand: boto3 or the kaggle package are needed only by the sources that use them.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from medlatent.core.errors import ConfigError
from medlatent.fetch.receipt import RECEIPT, write_receipt

METHODS = (
    "synthetic",
    "local",
    "manual",
    "https",
    "zenodo",
    "figshare",
    "physionet",
    "tcia",
    "kaggle",
    "s3",
    "azure_blob",
)


def fetch_source(source: dict, raw_dir: Path, *, seed: int = 0) -> dict:
    """Fetch `source` (one `sources:` entry or its fetch slice) into `raw_dir`; returns the receipt.

    Re-running continues an interrupted fetch: finished files are kept, partial ones resume.
    """
    method = source.get("access", {}).get("method")
    if method not in METHODS:
        raise ConfigError(f"sources[{source.get('id')}].access.method={method!r} is not one of {list(METHODS)}")
    raw_dir = Path(raw_dir)
    (raw_dir / RECEIPT).unlink(missing_ok=True)  # the receipt must only ever describe a finished fetch
    raw_dir.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"{__name__}.{method}")
    root = module.fetch(source, raw_dir, seed=seed)
    return write_receipt(source, root, raw_dir)
