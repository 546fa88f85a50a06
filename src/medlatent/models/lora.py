"""LoRA adapters on the autoencoder (MedVAE f16C3 / f64C4 fine-tuning), through ``peft``.

As in the public MedVAE code: rank 4, alpha 4 (scale alpha / rank = 1), dropout 0.1, on the
convs inside the res blocks (conv1, conv2, nin_shortcut) and the mid-block attention
(q, k, v, proj_out) of encoder and decoder. peft freezes the base weights and zero-initialises
the up-projection (lora_B), so a freshly wrapped model computes exactly the base model.
Adapters are injected in place: the model stays an ``AutoencoderKL`` with its own API.

The released f16C3 / f64C4 checkpoints store their adapters in the format of cloneofsimo's
``lora_diffusion`` (the public MedVAE code): each adapted layer ``<name>`` becomes
``<name>.conv.*`` (or ``.linear.*``) plus ``<name>.lora_down.weight`` (same kernel, stride and
padding as the base, C_in -> r) and ``<name>.lora_up.weight`` (1x1 or linear, r -> C_out),
applied as ``base(x) + scale * up(down(x))`` with scale 1.0. ``merge_lora_pairs`` folds those
into plain weights; the composition is linear, so the merged layer computes the same map.
"""

from __future__ import annotations

import sys

import torch

from medlatent.models.autoencoder import AutoencoderKL

#: The scale lora_diffusion applies to ``up(down(x))``; the public MedVAE code keeps the default.
RELEASED_LORA_SCALE = 1.0
_UP, _DOWN = ".lora_up.weight", ".lora_down.weight"

#: Module names (full match) that get adapters: res-block and attention convs only.
TARGET_MODULES = r".*\.(block(\.\d+|_\d)\.(conv1|conv2|nin_shortcut)|attn_1\.(q|k|v|proj_out))"


def apply_lora(model: AutoencoderKL, rank: int = 4, alpha: float = 4.0, dropout: float = 0.1) -> AutoencoderKL:
    """Inject LoRA adapters into ``model`` in place; only adapter parameters stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model  # peft costs seconds to import: only LoRA jobs pay

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=TARGET_MODULES)
    return inject_adapter_in_model(config, model)


def lora_layers(model: torch.nn.Module) -> dict:
    """The adapted layers (peft ``LoraLayer``) by module name (empty for a plain model)."""
    if "peft" not in sys.modules:
        return {}  # no adapter exists before apply_lora has imported peft
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with adapters folded in, in the plain LDM layout (for saving).

    ``W = W_base + scale * B @ A`` per adapted conv; the model itself is left untouched.
    """
    layers = lora_layers(model)
    merged = {
        key.replace(".base_layer.", "."): tensor.detach().clone()
        for key, tensor in model.state_dict().items()
        if ".lora_" not in key
    }
    with torch.no_grad():
        for name, layer in layers.items():
            if layer.merged:
                continue  # base weight already holds the delta
            for adapter in layer.active_adapters:
                merged[f"{name}.weight"] += layer.get_delta_weight(adapter).to(merged[f"{name}.weight"].dtype)
    return merged


def lora_delta(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """The base-weight change that ``up(down(x))`` equals: (O, r[,1..]) x (r, I, *k) -> (O, I, *k)."""
    return torch.einsum("or,ri...->oi...", up.flatten(1).double(), down.double()).to(down.dtype)


def merge_lora_pairs(
    state_dict: dict[str, torch.Tensor], scale: float = RELEASED_LORA_SCALE
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fold lora_diffusion adapter pairs into their base layers; also the names of merged layers.

    ``<name>.conv.weight`` (or ``.linear.weight``) becomes ``<name>.weight`` = W + scale * up @ down
    (bias renamed likewise). Keys of other layers are returned unchanged, so a half pair or an
    adapter without its base stays behind under its own name for the caller's strict check.
    """
    merged = dict(state_dict)
    names = sorted(key[: -len(_UP)] for key in state_dict if key.endswith(_UP))
    done = []
    for name in names:
        base = next((f"{name}.{kind}" for kind in ("conv", "linear") if f"{name}.{kind}.weight" in merged), None)
        if base is None or f"{name}{_DOWN}" not in merged:
            continue
        up, down = merged.pop(f"{name}{_UP}"), merged.pop(f"{name}{_DOWN}")
        weight = merged.pop(f"{base}.weight")
        merged[f"{name}.weight"] = weight + scale * lora_delta(up, down).to(weight.dtype)
        if f"{base}.bias" in merged:
            merged[f"{name}.bias"] = merged.pop(f"{base}.bias")
        done.append(name)
    return merged, done
