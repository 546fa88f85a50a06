"""Memory-aware extraction batches: derived from latents.max_memory_gb, capped, recorded, and refused clearly."""

from __future__ import annotations

import pytest
from latent_fixtures import extract_spec, tiny_model, write_source

from medlatent.core.errors import ConfigError
from medlatent.latents.extract import extract_shards
from medlatent.latents.memory import encoder_item_bytes
from medlatent.models import load_model
from medlatent.models.autoencoder import AutoencoderKL


def _budget_gb(weights, shape, items: float) -> float:
    """A budget holding the weights and `items` items of `shape`."""
    autoencoder = load_model(weights).autoencoder
    weight_bytes = sum(p.numel() * p.element_size() for p in autoencoder.parameters())
    return (weight_bytes + items * encoder_item_bytes(autoencoder, shape)) / 2**30


def test_budget_sets_the_images_per_forward_below_the_cap_and_the_part_records_it(tmp_path, monkeypatch):
    weights = tiny_model(tmp_path / "m" / "stage2.pt")
    folder, manifest = write_source(tmp_path, "src", {"train-000": 6}, (32, 32))
    forwards = []
    encode_padded = AutoencoderKL.encode_padded
    monkeypatch.setattr(
        AutoencoderKL, "encode_padded", lambda self, x: forwards.append(len(x)) or encode_padded(self, x)
    )
    spec = extract_spec("tiny", "src", batch_size=3, max_memory_gb=_budget_gb(weights, (32, 32), 2.5))
    [part] = extract_shards(spec, [folder / "train-000.h5"], manifest, weights, tmp_path / "ds", tmp_path / "part.json")
    assert forwards == [2, 2, 1] and part["batch_sizes"] == {"32x32": 2}  # 5 kept items, 2 fit, cap 3
    forwards.clear()
    spec = extract_spec("tiny", "src", batch_size=3, max_memory_gb=8)
    [part] = extract_shards(spec, [folder / "train-000.h5"], manifest, weights, tmp_path / "ds", tmp_path / "part.json")
    assert part["batch_sizes"] == {"32x32": 3} and forwards == [3, 2]


@pytest.mark.parametrize(
    ("dims", "shape", "knob"), [(2, (32, 32), "latents.max_memory_gb"), (3, (16,) * 3, "latents.window")]
)
def test_an_item_over_the_budget_is_a_config_error_naming_the_knobs(tmp_path, dims, shape, knob):
    weights = tiny_model(tmp_path / "m" / "stage2.pt", dims=dims)
    folder, manifest = write_source(tmp_path, "src", {"train-000": 2}, shape)
    spec = extract_spec("tiny", "src", dims=dims, max_memory_gb=_budget_gb(weights, shape, 0.5))
    with pytest.raises(ConfigError, match=knob):
        extract_shards(spec, [folder / "train-000.h5"], manifest, weights, tmp_path / "ds", tmp_path / "part.json")
    assert not (tmp_path / "part.json").exists()
