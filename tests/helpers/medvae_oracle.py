"""The authors' MedVAE code (PyPI medvae==0.1.7) as the oracle for released-weights tests.

``medvae/__init__.py`` imports ``MVAE``, whose factory pulls the hub downloader, omegaconf and
polars (training-data loaders). The model classes need only torch and einops, so a bare
``medvae`` package module is registered with the installed folder as its path and the
submodules are imported from it; for ``MVAE`` itself the factory module is replaced by a
stub (its builder downloads from the hub; tests set ``MVAE.model`` themselves).

``released_model`` builds each released architecture the way ``medvae.utils.factory`` does
(ddconfig of its file, LoRA injected for f16C3/f64C4, 3-channel in/out where
``merge_channels`` is false) at width ``ch=32`` (the authors' GroupNorm has 32 groups, so 32
is the smallest width), randomises every tensor (LoRA up-projections included) and saves it
as the authors' checkpoints are saved: ``{"state_dict": model.state_dict()}``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from medlatent.models.registry import PUBLISHED, RELEASED

WIDTH = 32
#: Released files with 3-channel conv_in/conv_out (the authors' `merge_channels` is false for them).
RGB_MODELS = {"f16_c3", "f64_c4", "f16_c4"}
#: Released files whose res/attention convs carry lora_diffusion adapters (factory.build_model).
LORA_MODELS = {"f16_c3", "f64_c4"}


def authors() -> types.SimpleNamespace:
    """The authors' modules, imported offline; skips the test when medvae is not installed."""
    spec = importlib.util.find_spec("medvae") if "medvae" not in sys.modules else sys.modules["medvae"].__spec__
    if spec is None:
        pytest.skip("medvae==0.1.7 is not installed (`make test` installs it: pip install --no-deps medvae==0.1.7)")
    if "medvae" not in sys.modules:
        package = types.ModuleType("medvae")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["medvae"] = package
    if "medvae.utils.factory" not in sys.modules:
        factory = types.ModuleType("medvae.utils.factory")
        factory.create_model_and_transform = None  # MVAE.__init__ downloads; tests never call it
        sys.modules["medvae.utils.factory"] = factory
    return types.SimpleNamespace(
        models=importlib.import_module("medvae.models"),
        lora=importlib.import_module("medvae.utils.lora"),
        extras=importlib.import_module("medvae.utils.extras"),
        main=importlib.import_module("medvae.medvae_main"),
    )


def ddconfig(name: str) -> dict[str, Any]:
    """The ddconfig of a released file (LDM AutoencoderKL keys), at test width."""
    arch = PUBLISHED[name]
    channels = 3 if name in RGB_MODELS else 1
    return {
        "double_z": True,
        "z_channels": arch["latent_channels"],
        "resolution": 256,
        "in_channels": channels,
        "out_ch": channels,
        "ch": WIDTH,
        "ch_mult": list(arch["ch_mult"]),
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
    }


def released_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The authors' model of a released file, every tensor random, in eval mode (dropout off)."""
    oracle = authors()
    torch.manual_seed(seed)
    config = ddconfig(name)
    classes = {2: oracle.models.AutoencoderKL_2D, 3: oracle.models.AutoencoderKL_3D}
    model = classes[PUBLISHED[name]["dims"]](ddconfig=config, embed_dim=config["z_channels"])
    if name in LORA_MODELS:
        oracle.lora.inject_trainable_lora_extended(model, {"ResnetBlock", "AttnBlock"}, r=4)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))  # lora_up starts at zero: now it is not
    return model.eval()


def save_released(model: torch.nn.Module, path: Path) -> Path:
    """Save as the authors' released checkpoints are: a Lightning-style state_dict entry."""
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def model_entry(name: str, weights: str | None = None) -> dict[str, Any]:
    """Our `models:` entry for a released file at test width."""
    entry = {"id": f"medvae_{name}", **PUBLISHED[name], "ch": WIDTH, "num_res_blocks": 2, "norm_groups": 32}
    return {**entry, "weights": weights} if weights else entry


def file_name(name: str) -> str:
    return Path(RELEASED[name]).name


class PosteriorMode(torch.nn.Module):
    """The authors' model with ``sample_posterior=False``: ``MVAE`` calls ``model(x, decode=...)``,
    which samples; latent datasets hold the posterior mean (mode), so the oracle does too."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, decode: bool = True):
        return self.model(x, sample_posterior=False, decode=decode)


def mvae(model: torch.nn.Module, name: str, gpu_dim: int = 160) -> torch.nn.Module:
    """The authors' ``MVAE`` around ``model`` at the posterior mode (its constructor would download)."""
    wrapper = authors().main.MVAE.__new__(authors().main.MVAE)
    torch.nn.Module.__init__(wrapper)
    wrapper.model, wrapper.gpu_dim, wrapper.model_name = PosteriorMode(model), gpu_dim, f"medvae_{name}_3d"
    return wrapper
