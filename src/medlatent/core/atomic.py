"""Atomic outputs: a killed job must never leave a file a later step could take for done."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(text, encoding="utf-8")


def save_torch(target: str | Path, payload: Any) -> None:
    """`torch.save` to `target` atomically, with bytes that depend on the payload alone.

    `torch.save` to a path names the zip archive inside the file after that path, and the
    temporary path carries the process id: saving through a buffer gives the fixed name
    `archive/`, so identical tensors and metadata give identical files (and sha256) in any run.
    """
    import torch  # lazy: most jobs that write atomically never touch torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(target) as temporary:
        temporary.write_bytes(buffer.getbuffer())
