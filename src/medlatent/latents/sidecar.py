"""The shard-level sidecar `<shard>.meta.json`: every sample's labels and meta beside its tar.

Why a sidecar: a tar member costs a 512-byte header plus its data padded to 512 bytes, so
per-sample `meta.json` and `labels.json` members would add >= 2 KiB to every sample, which
dwarfs a small latent (512 bytes for a 1x16x16 float16 latent). The tar keeps one member per
sample (`<key>.latent.npy`, plus the `latents.store` extras) and the sidecar holds the rest,
as canonical JSON (byte-reproducible)::

    {"format": SIDECAR_FORMAT, "tar": "train-000.tar",
     "meta": {fields equal in every sample of the shard: source, model, weights sha256, ...},
     "samples": {"<__key__>": {"labels": {...}, "meta": {the sample's other fields}}}}

A sample's meta is `{**sidecar["meta"], **sidecar["samples"][key]["meta"], "item_id": key}`
(the key is the item id, so it is not stored twice): exactly the per-sample meta.json of
earlier versions, nothing lost.
"""

from __future__ import annotations

import json
from pathlib import Path

from medlatent.config import canonical_json
from medlatent.core.errors import InputError

SIDECAR_FORMAT = "medlatent-latent-sidecar/1"
SIDECAR_SUFFIX = ".meta.json"


def sidecar_path(tar_path: str | Path) -> Path:
    """`<folder>/<shard>.meta.json` of `<folder>/<shard>.tar`."""
    tar_path = Path(tar_path)
    return tar_path.with_name(tar_path.stem + SIDECAR_SUFFIX)


def build_sidecar(tar_name: str, samples: dict[str, tuple[dict, dict]]) -> str:
    """Sidecar text of a shard; `samples`: {key: (labels, meta without item_id)}; shared meta fields hoisted once."""
    metas = [meta for _, meta in samples.values()]
    # compared as canonical JSON: 1 and 1.0 or True are equal in Python, not in the file
    shared = {
        name: value
        for name, value in (metas[0].items() if metas else ())
        if all(name in m and canonical_json(m[name]) == canonical_json(value) for m in metas)
    }
    return canonical_json(
        {
            "format": SIDECAR_FORMAT,
            "tar": tar_name,
            "meta": shared,
            "samples": {
                key: {"labels": labels, "meta": {k: v for k, v in meta.items() if k not in shared}}
                for key, (labels, meta) in samples.items()
            },
        }
    )


def read_sidecar(path: str | Path) -> dict:
    """The parsed sidecar; InputError naming the file when it is missing, unreadable or of another format."""
    try:
        sidecar = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(
            path, f"not a readable shard sidecar ({error})", "fetch the dataset again or rerun its extraction"
        ) from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
        raise InputError(path, f"not a {SIDECAR_FORMAT} shard sidecar", "rerun the extraction of this dataset")
    return sidecar


def sample_entry(sidecar: dict, key: str, path: str | Path) -> tuple[dict, dict]:
    """(labels, meta) of sample `key`; InputError naming the sidecar when it lacks the key."""
    entry = sidecar["samples"].get(key)
    if entry is None:
        raise InputError(
            path,
            f"has no entry for sample {key!r} of its tar",
            "run `medlatent verify` on the dataset and fetch it again",
        )
    return entry["labels"], {**sidecar["meta"], **entry["meta"], "item_id": key}


class SidecarJoin:
    """Adds each raw WebDataset sample's (labels, meta) from the sidecar of its tar (`__url__`).

    One sidecar is held at a time and read once per shard pass: samples of a shard arrive
    together, in every worker.
    """

    def __init__(self) -> None:
        self._path: Path | None = None
        self._sidecar: dict = {}

    def __call__(self, sample: dict) -> tuple[dict, dict]:
        """(labels, meta) of one raw sample."""
        path = sidecar_path(sample["__url__"])
        if path != self._path:
            self._sidecar, self._path = read_sidecar(path), path
        return sample_entry(self._sidecar, sample["__key__"], path)
