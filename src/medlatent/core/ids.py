"""Stable identifiers: salted item keys and ids, salted patient keys, patient-level splits and shards.

Everything is a pure function of (salt, config, file path, patient id), so adding items to a
source never moves an existing item to another split or shard. Every key written outside
data/raw is an HMAC under the installation's salt (`medlatent.curate.salt`): the same salt
gives the same keys on every rerun; without it no key links back to a path or a patient.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from medlatent.core.rawpaths import to_bytes

#: The scheme of the salted item keys; curation's slice carries it, so a new scheme reruns curation.
ITEM_KEYS = "hmac-sha256/1"
#: Patient-level splits, in shard order.
SPLITS = ("train", "val", "test")

_NOT_KEY_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def _unit_interval(text: str) -> float:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _keyed_digest(salt: str, *parts: str) -> str:
    return hmac.new(salt.encode("utf-8"), "\x00".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()


def file_key(relative_path: str) -> str:
    """16 hex chars naming a file or series directory under the raw root, from the bytes of its
    name (so a name that is not UTF-8 has a key too)."""
    return hashlib.sha1(to_bytes(relative_path)).hexdigest()[:16]


def salted_key(salt: str, source_id: str, key: str) -> str:
    """16 hex chars: HMAC-SHA256 of a `file_key` under the salt.

    A `file_key` is an unsalted digest of a path, so anyone who guesses the path can confirm
    it: it is never written. Files and items are known by their salted key instead (manifest,
    rejections, files index, item ids).
    """
    return _keyed_digest(salt, "item", source_id, key)[:16]


def item_id(source_id: str, key: str) -> str:
    """`<source>_<salted key>` with every character outside [A-Za-z0-9_-] replaced.

    No dots: WebDataset splits a sample's file names at the first dot.
    """
    return f"{_NOT_KEY_SAFE.sub('-', source_id)}_{key}"


def patient_key(salt: str, source_id: str, raw_patient_id: str) -> str:
    """HMAC-SHA256 of the raw id: linkable within an installation, never reversible."""
    return _keyed_digest(salt, source_id, raw_patient_id)[:20]


def patient_split(seed: int, key: str, fractions: dict[str, float]) -> str:
    """Deterministic split of a patient: all of a patient's items land together."""
    u = _unit_interval(f"split\x00{seed}\x00{key}")
    edge = 0.0
    for split in SPLITS:
        edge += fractions[split]
        if u < edge:
            return split
    return next(s for s in reversed(SPLITS) if fractions[s] > 0)


def shard_id(split: str, number: int) -> str:
    """The id of a normalized shard: `<split>-<number, at least three digits>`."""
    return f"{split}-{number:03d}"


def shard_of(item: str, split: str, n_shards: int) -> str:
    return shard_id(split, int(_unit_interval("shard\x00" + item) * n_shards))


PROVIDED_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
