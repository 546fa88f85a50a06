"""Shared fixtures: the repository paths and a loaded, validated demo configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlatent import config as mlconfig

REPO = Path(__file__).resolve().parents[1]
FULL_CONFIG = REPO / "config.yaml"
DEMO_CONFIG = REPO / "workflow" / "demo" / "config.yaml"


@pytest.fixture()
def full_config() -> dict:
    return mlconfig.load(FULL_CONFIG)


@pytest.fixture()
def demo_config() -> dict:
    return mlconfig.load(FULL_CONFIG, DEMO_CONFIG)
