"""Model cards (`results/models/{model}/card.json`): how a model's final weights came about.

A card names the config slice of every training stage, the sha256 of the manifests of the
training sources, the code version (package version, git commit, dirty flag), steps, final
losses and the device, and says plainly whether the weights are demo weights and why
(synthetic data, random stand-ins for BiomedCLIP / LPIPS, a random LoRA base).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medlatent.core.atomic import write_text
from medlatent.core.hashing import code_version, manifest_hashes

FORMAT = "medlatent-card/1"


def demo_reasons(spec: dict[str, Any], networks: dict[str, Any]) -> list[str]:
    """Why weights are not a real model (empty for a real one).

    `networks`: {"embedder"/"perceptual": (name, is_demo) or None}.
    """
    reasons = ["project.demo: synthetic data and shrunken models"] if spec.get("demo") else []
    for role, network in networks.items():
        if network is not None and network[1]:
            reasons.append(f"{role} is a random stand-in: {network[0]}")
    model = spec.get("model", {})
    if model.get("lora") and model.get("init", "scratch") == "scratch":
        reasons.append("LoRA adapters on a randomly initialised base (init: scratch), not natural-image weights")
    return reasons


def stage_record(
    spec: dict[str, Any],
    steps: int,
    final_losses: dict[str, dict[str, float]],
    device: dict[str, Any],
    manifests: Sequence[str | Path],
    networks: dict[str, Any],
) -> dict[str, Any]:
    """Everything one training stage contributes to the card."""
    return {
        "config": spec,
        "training_data": {"sources": spec.get("sources", []), "manifests_sha256": manifest_hashes(manifests)},
        "steps": steps,
        "final_losses": final_losses,
        "device": device,
        "networks": {role: None if n is None else {"name": n[0], "demo": bool(n[1])} for role, n in networks.items()},
        "demo_reasons": demo_reasons(spec, networks),
        "code": code_version(),
    }


def write_card(
    path: str | Path, model: dict[str, Any], stages: dict[str, dict[str, Any]], weights: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write card.json; `stages`: {"stage1": record, "stage2": record}; `weights`: an import's origin."""
    reasons = sorted({reason for record in stages.values() for reason in record.get("demo_reasons", [])})
    if weights is not None:
        reasons = sorted(set(reasons) | set(weights.get("demo_reasons", [])))
    card = {
        "format": FORMAT,
        "model": model["id"],
        "architecture": {
            key: model.get(key)
            for key in ("dims", "f", "latent_channels", "ch", "ch_mult", "num_res_blocks", "norm_groups")
        },
        "weights": "demo" if reasons else ("imported" if weights is not None else "trained"),
        "demo": bool(reasons),
        "demo_reasons": reasons,
        "imported_from": weights,
        "stages": stages,
        "code": code_version(),
    }
    write_text(path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return card


def weights_statement(card: dict[str, Any]) -> str:
    """One line of what a model's weights are: trained here, or imported and what of the file was used."""
    origin = card.get("imported_from")
    if not origin:
        kind = card.get("weights")
        return f"{kind} by this workflow (see the model card's stages)" if kind else "not stated by the model card"
    parts = [f"imported from {origin.get('requested') or origin['path']} ({origin['layout']})"]
    if origin.get("projection"):
        parts.append(f"stage-2 projection {origin['projection']}")
    if origin.get("lora"):
        parts.append(f"LoRA merged into {origin['lora']['merged_layers']} layers ({origin['lora']['rule']})")
    parts += origin.get("adapted") or []
    parts += [f"discarded {count} tensors: {what}" for what, count in (origin.get("discarded") or {}).items()]
    return "; ".join(parts)
