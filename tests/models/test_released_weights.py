"""Released MedVAE checkpoints import exactly: the authors' code (medvae==0.1.7) is the oracle.

Each of the seven released architectures is built by the authors' classes with random
weights (LoRA up-projections non-zero), saved as the authors save it, imported by the
`medlatent import-weights` command that the import_weights rule runs, and compared in float32.
"""

from __future__ import annotations

import json

import pytest
import torch
from medvae_oracle import LORA_MODELS, RGB_MODELS, authors, file_name, model_entry, mvae, released_model, save_released
from train_helpers import make_config, one_thread  # noqa: F401  (fixture)

from medlatent import cli
from medlatent import config as mlconfig
from medlatent.core.errors import InputError
from medlatent.latents.window import encode_volume, medvae_window
from medlatent.models.registry import PUBLISHED, build_medvae, load_model
from medlatent.models.serialize import import_model

TOLERANCE = 1e-4


def import_through_the_command(tmp_path, name: str, model: torch.nn.Module):
    """Save `model` as its released file, run `medlatent import-weights` with the rule's params."""
    path = save_released(model, tmp_path / file_name(name))
    entry = model_entry(name, str(path))
    spec = mlconfig.canonical_json(mlconfig.import_weights_slice(make_config(tmp_path, [entry]), entry["id"]))
    out, card = tmp_path / "stage2.pt", tmp_path / "card.json"
    assert (
        cli.main(["import-weights", "--spec", spec, "--weights", str(path), "--out", str(out), "--card", str(card)])
        == 0
    )
    return load_model(out), json.loads(card.read_text())


def gray_input(name: str, seed: int = 1) -> torch.Tensor:
    shape = (2, 1, 32, 32) if PUBLISHED[name]["dims"] == 2 else (1, 1, 16, 16, 16)
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def as_authors_input(name: str, x: torch.Tensor) -> torch.Tensor:
    """Gray replicated to RGB for the files the authors feed RGB (`merge_channels` false)."""
    return x.repeat(1, 3, *[1] * (x.ndim - 2)) if name in RGB_MODELS else x


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_released_checkpoint_gives_the_authors_latent_and_decode(tmp_path, name):
    authors_model = released_model(name)
    ours, card = import_through_the_command(tmp_path, name, authors_model)
    x = gray_input(name)
    with torch.no_grad():
        z, posterior, projected = authors_model(as_authors_input(name, x), sample_posterior=False, decode=False)
        expected = projected if PUBLISHED[name]["dims"] == 2 else z  # MVAE: 2D takes [2], 3D takes [0]
        torch.testing.assert_close(ours.encode_latent(x), expected, atol=TOLERANCE, rtol=0)
        decoded = authors_model.decode(posterior.mode())
        decoded = decoded.mean(dim=1, keepdim=True) if name in RGB_MODELS else decoded
        torch.testing.assert_close(ours.decode(posterior.mode()), decoded, atol=TOLERANCE, rtol=0)
    origin = card["imported_from"]
    assert origin["layout"] == "ldm" and origin["tensors"] == len(authors_model.state_dict())
    expected_projection = "from the file" if PUBLISHED[name]["dims"] == 2 else "not applied"
    assert origin["projection"].startswith(expected_projection)
    assert (origin["lora"] is not None) == (name in LORA_MODELS)
    assert bool(origin["adapted"]) == (name in RGB_MODELS)
    if name in LORA_MODELS:  # every res-block and attention conv of encoder and decoder
        adapters = [key for key in authors_model.state_dict() if key.endswith("lora_up.weight")]
        assert origin["lora"]["merged_layers"] == len(adapters) > 0


def test_a_tensor_the_import_would_not_use_is_an_error_that_lists_it(tmp_path):
    model = released_model("f16_c3")
    state = model.state_dict()
    state["model_ema.decay"] = torch.tensor(0.999)
    orphan = next(key for key in state if key.endswith("lora_up.weight"))
    del state[orphan]  # its lora_down and base conv are left without a pair
    path = tmp_path / "extra.ckpt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(InputError, match="would not be used") as error:
        import_model(path, model_entry("f16_c3"), is_demo=False)
    message = str(error.value)
    assert "model_ema.decay" in message and orphan.replace("lora_up", "lora_down") in message


@pytest.mark.parametrize("name", ["f64_c1_3d", "f512_c1_3d"])
def test_windowed_3d_extraction_with_the_medvae_rule_equals_the_authors_process_3d(tmp_path, name):
    authors_model = released_model(name)
    ours, _ = import_through_the_command(tmp_path, name, authors_model)
    volume = gray_input(name, seed=2).repeat(1, 1, 12, 1, 1)[0, 0]  # 192 x 16 x 16: three 96-voxel windows
    with torch.no_grad():
        expected = mvae(authors_model, name)._process_3d(volume[None, None])
    latent, info = encode_volume(ours, volume, "medvae", overlap=0.25, blend="gaussian")
    assert info["window"] == authors().extras.roi_size_calc(volume.shape) == [96, 16, 16] and info["windows"] == 3
    torch.testing.assert_close(latent[0], expected, atol=TOLERANCE, rtol=0)


def test_medvae_window_rule_is_roi_size_calc_and_off_grid_windows_shrink_onto_the_latent_grid():
    roi_size_calc = authors().extras.roi_size_calc
    for shape in ([192, 16, 16], [160, 161, 320], [321, 400, 1000], [700, 20, 159], [176, 200, 96]):
        assert medvae_window(shape) == roi_size_calc(shape), shape
    tiny = build_medvae(
        {
            "id": "tiny3d",
            "dims": 3,
            "f": 64,
            "latent_channels": 1,
            "ch": 8,
            "ch_mult": [1, 1, 1],
            "num_res_blocks": 1,
            "norm_groups": 4,
        }
    ).eval()
    # 176 voxels: their window is 88, stride int(0.75 * 88) = 66, not a multiple of 4
    latent, info = encode_volume(tiny, torch.zeros(176, 8, 8), "medvae", overlap=0.25)
    assert info["medvae_window"] == [88, 8, 8] and info["window"] == [80, 8, 8] and latent.shape == (1, 44, 2, 2)
