"""Atomic writes: nothing half-written is ever visible, and weights files depend on their content alone."""

from __future__ import annotations

import hashlib

import pytest
import torch

from medlatent.core.atomic import atomic_path, save_torch


def test_weights_files_of_identical_payloads_are_byte_identical_whatever_their_names(tmp_path):
    payload = {"format": "x/1", "weights": {"conv.weight": torch.arange(24.0).view(2, 3, 4)}, "steps": 3}
    first, second = tmp_path / "a" / "stage2.pt", tmp_path / "b" / "other-name.pt"
    save_torch(first, payload)
    save_torch(second, payload)
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    loaded = torch.load(second, weights_only=True)
    assert torch.equal(loaded["weights"]["conv.weight"], payload["weights"]["conv.weight"])
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["stage2.pt"]  # no temporary left behind


def test_a_failed_write_leaves_neither_the_target_nor_a_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
