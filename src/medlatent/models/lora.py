"""LoRA adapters on the autoencoder (MedVAE f16C3 / f64C4 fine-tuning), through ``peft``.

As in the public MedVAE code: rank 4, alpha 4 (scale alpha / rank = 1), dropout 0.1, on the
convs inside the res blocks (conv1, conv2, nin_shortcut) and the mid-block attention
(q, k, v, proj_out) of encoder and decoder. peft freezes the base weights and zero-initialises
the up-projection (lora_B), so a freshly wrapped model computes exactly the base model.
Adapters are injected in place: the model stays an ``AutoencoderKL`` with its own API.
"""

from __future__ import annotations

import sys

import torch

from .autoencoder import AutoencoderKL

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
    merged = {key.replace(".base_layer.", "."): tensor.detach().clone()
              for key, tensor in model.state_dict().items() if ".lora_" not in key}
    with torch.no_grad():
        for name, layer in layers.items():
            if layer.merged:
                continue  # base weight already holds the delta
            for adapter in layer.active_adapters:
                merged[f"{name}.weight"] += layer.get_delta_weight(adapter).to(merged[f"{name}.weight"].dtype)
    return merged
