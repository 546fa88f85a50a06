"""Frozen image embedders for the embedding-consistency losses (BiomedCLIP or a demo CNN).

``load_embedder({kind: biomedclip, path, hub_id})`` builds only BiomedCLIP's IMAGE tower with
open_clip (the text tower would need ``transformers`` and PubMedBERT files we never use) and
loads its ``visual.*`` weights from a local directory / file (or an ``hf://`` path), or from a
Hugging Face hub cache that already holds them (``medlatent.core.hub``: nothing is ever downloaded).
``{kind: demo}`` is a small seeded random CNN, labelled as a stand-in everywhere it is named.

Input handling follows the public MedVAE code: images in [-1, 1] are mapped to [0, 1] and
clamped, a single channel is replicated to RGB, the shorter side is resized (bicubic,
antialiased) to the network's input size and centre-cropped, then mean/std-normalised.
``embed_unit`` skips the [-1, 1] mapping for inputs already on a [0, 1]-like scale (the
stage-2 latent), without clamping so gradients reach every value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from medlatent.core.errors import InputError, MedLatentError
from medlatent.core.hub import SCHEME, resolve

BIOMEDCLIP_HUB_ID = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: CLIP (OpenAI) normalisation, which BiomedCLIP uses.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FrozenModule(nn.Module):
    """A fixed network: parameters never train and ``.train()`` keeps it in eval mode."""

    def freeze(self) -> None:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenModule:
        return super().train(False)


class Embedder(FrozenModule):
    """Frozen image network + the preprocessing it expects; gradients flow to the input."""

    def __init__(
        self,
        network: nn.Module,
        input_size: int,
        name: str,
        is_demo: bool,
        mean: tuple[float, ...] = CLIP_MEAN,
        std: tuple[float, ...] = CLIP_STD,
    ) -> None:
        super().__init__()
        self.network = network
        self.input_size = input_size
        self.name = name
        self.is_demo = is_demo
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of images in [-1, 1] with 1 or 3 channels."""
        return self.embed_unit(((images + 1.0) / 2.0).clamp(0.0, 1.0))

    def embed_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, D) of 2D inputs on a [0, 1] scale with 1 or 3 channels."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"embedder {self.name} takes (N, 1|3, H, W) tensors, got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1)
        x = TF.resize(x, [self.input_size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        x = TF.center_crop(x, [self.input_size, self.input_size])
        return self.network((x - self.mean) / self.std)


def demo_network(seed: int, dim: int) -> nn.Module:
    """Small CNN with seeded random weights (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, dim),
        )


def _missing_biomedclip(detail: str) -> MedLatentError:
    return MedLatentError(
        f"BiomedCLIP weights not found: {detail}. Put the files of the Hugging Face repo "
        f"microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 ({OPEN_CLIP_CONFIG} and "
        f"{' or '.join(OPEN_CLIP_WEIGHTS)}) in a directory and set `embedder.path` to it in config.yaml, "
        "or pre-populate the hub cache (HF_HOME) on a machine with internet; "
        "to run without them, set `embedder: {kind: demo}` (a random stand-in, labelled as such)."
    )


def _local_files(path: Path) -> tuple[Path, Path]:
    """(config, weights) from a repo-layout directory, or a weights file beside its config."""
    folder = path if path.is_dir() else path.parent
    config = folder / OPEN_CLIP_CONFIG
    weights = path if path.is_file() else next((folder / n for n in OPEN_CLIP_WEIGHTS if (folder / n).is_file()), None)
    if not path.exists() or weights is None or not config.is_file():
        raise _missing_biomedclip(
            f"{path} must be a directory holding {OPEN_CLIP_CONFIG} and a weights file, "
            f"or a weights file with {OPEN_CLIP_CONFIG} beside it"
        )
    return config, weights


def _hub_cache_files(hub_id: str) -> tuple[Path, Path]:
    """(config, weights) from the local Hugging Face cache only (``medlatent.core.hub``)."""
    repo = f"{SCHEME}{hub_id.removeprefix('hf-hub:')}"
    try:
        config = resolve(f"{repo}/{OPEN_CLIP_CONFIG}")
    except InputError as error:
        raise _missing_biomedclip(f"`embedder.path` is null and {error}") from None
    for name in OPEN_CLIP_WEIGHTS:
        try:
            return config, resolve(f"{repo}/{name}")
        except InputError:
            continue
    raise _missing_biomedclip(f"the Hugging Face cache holds {config} but no weights file of {repo}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def biomedclip_image_tower(config_path: Path, weights_path: Path) -> Embedder:
    """BiomedCLIP's image tower (open_clip, vision config only) with its released weights."""
    from open_clip.model import _build_vision_tower

    from medlatent.models.ldm_layout import load_strict

    config = json.loads(config_path.read_text(encoding="utf-8"))
    model_cfg, preprocess = config["model_cfg"], config.get("preprocess_cfg", {})
    visual = _build_vision_tower(model_cfg["embed_dim"], model_cfg["vision_cfg"])
    state = _read_weights(weights_path)
    state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    load_strict(visual, state, weights_path)
    size = model_cfg["vision_cfg"].get("image_size", 224)
    return Embedder(
        visual,
        size if isinstance(size, int) else size[0],
        name=f"biomedclip:{weights_path}",
        is_demo=False,
        mean=tuple(preprocess.get("mean", CLIP_MEAN)),
        std=tuple(preprocess.get("std", CLIP_STD)),
    )


def load_embedder(spec: dict[str, Any]) -> Embedder:
    """The embedder a config ``embedder:`` entry names (``kind: biomedclip | demo``)."""
    kind = spec.get("kind")
    if kind == "demo":
        seed, size, dim = spec.get("seed", 0), spec.get("input_size", 64), spec.get("dim", 128)
        return Embedder(
            demo_network(seed, dim), size, name=f"demo-cnn(seed={seed}, random init, not pretrained)", is_demo=True
        )
    if kind == "biomedclip":
        path = spec.get("path")
        files = _local_files(resolve(path)) if path else _hub_cache_files(spec.get("hub_id") or BIOMEDCLIP_HUB_ID)
        return biomedclip_image_tower(*files)
    raise MedLatentError(f"unknown embedder kind {kind!r}: use `embedder: {{kind: biomedclip}}` or `{{kind: demo}}`")
