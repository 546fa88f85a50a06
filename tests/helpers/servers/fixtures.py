"""Pytest fixtures shared by the fetch tests (import them into a test module to use them)."""

from __future__ import annotations

import pytest

from medlatent.fetch import transfer

from . import clean_env
from .host import FakeHost


@pytest.fixture()
def home(monkeypatch, tmp_path):
    """An empty HOME, with credential and proxy variables unset; retries back off quickly."""
    monkeypatch.setattr(transfer, "BACKOFF_S", 0.01)
    return clean_env(monkeypatch, tmp_path / "home")


@pytest.fixture()
def host(home):
    """A running FakeHost in a clean environment."""
    with FakeHost() as server:
        yield server
