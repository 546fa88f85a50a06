"""One CAD job: train the task's classifier on one method's inputs with one seed, then test it.

Published protocol (Table 1): AdamW, fixed epochs and batch size, cross-entropy (2D) or BCE on
one logit (3D binary), weighted sampling where configured, the FINAL checkpoint (no model
selection on the test split), AUROC (macro over classes for multi-class) with torchmetrics;
accuracy and macro-F1 as MediBench reports them. The val split is not used.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

from medlatent.cad.classifiers import build_classifier, num_outputs
from medlatent.cad.data import (
    ImageLoader,
    ItemDataset,
    ShardStore,
    classifier_latent,
    encode_slicewise,
    encode_whole,
    fit,
    grid_shape,
    is_demo_model,
    load_autoencoder,
    method_shape,
    read_latent_dataset,
    task_items,
)
from medlatent.core.atomic import write_text
from medlatent.core.errors import InputError

log = logging.getLogger(__name__)

METRICS_FORMAT = "medlatent-cad-metrics/1"


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- inputs


def _available(items: pd.DataFrame, present: set[str], rejected: set[str], where: str | Path) -> pd.DataFrame:
    """Items with an input; items rejected upstream are dropped (logged), anything else missing is an error."""
    absent = set(items["item_id"]) - present
    unexplained = sorted(absent - rejected)
    if unexplained:
        raise InputError(
            where,
            f"{len(unexplained)} labelled items of the manifest are missing (e.g. {unexplained[:3]})",
            "the manifest changed after normalization or extraction: rerun those jobs",
        )
    if absent:
        log.warning("%d items were rejected upstream (normalization) and are left out", len(absent))
    return items[items["item_id"].isin(present)].reset_index(drop=True)


@dataclass
class MethodInputs:
    """What one method feeds the classifier: an input per item id, the items that have one, the
    inputs' spatial shape, the channels and f of what they were made from (1 and 1 for images)
    and whether demo weights made them."""

    load: Callable[[str], torch.Tensor]
    items: pd.DataFrame
    shape: list[int]
    channels: int
    f: int
    demo_weights: bool

    def geometry(self, input_size: list[int]) -> dict:
        """Latent shape (channels first) and compression ratio: input elements / latent elements,
        channels included (MediBench's Table 6)."""
        latent_shape = [self.channels, *self.shape]
        return {"latent_shape": latent_shape, "compression_ratio": math.prod(input_size) / math.prod(latent_shape)}


def method_inputs(
    spec: dict, items: pd.DataFrame, shard_paths: list[str], model_input: str | None, device: torch.device
) -> MethodInputs:
    """The method's inputs. Latents of every family are read from their latent datasets at the
    factors their extraction recorded (the protocol's); only full-size images are read lazily,
    every smaller input is computed once and kept in memory.
    """
    task, method = spec["task"], spec["method"]
    dims, size, kind = task["dims"], task["input_size"], method["kind"]
    if kind in ("medvae", "family"):
        latents, demo, rejected, index = read_latent_dataset(model_input, set(items["item_id"]))
        items = _available(items, set(latents), rejected, model_input)
        factors = index["latent"]["factors"]
        shape = grid_shape(size, factors)
        inputs = {i: classifier_latent(latents[i], spec["latent_scale"], shape) for i in items["item_id"]}
        channels = next(iter(latents.values())).shape[0]
        return MethodInputs(inputs.__getitem__, items, shape, channels, math.prod(factors), demo)
    store = ShardStore(shard_paths)
    items = _available(items, set(store.where), store.rejected, shard_paths[0] if shard_paths else "<no shards>")
    if kind == "highres":
        return MethodInputs(ImageLoader(store, size), items, list(size), 1, 1, False)
    if kind == "interpolation":
        shape = method_shape(size, method["f"], dims)
        loader = ImageLoader(store, size, method["mode"], shape)
        inputs = {i: loader(i) for i in items["item_id"]}
        return MethodInputs(inputs.__getitem__, items, shape, 1, method["f"], False)
    model = load_autoencoder(method, model_input).to(device)
    if kind == "slicewise":
        axis = task["slice_axis"]
        shape = method_shape(size, method["f"], dims, slice_axis=axis)

        def encode(image: torch.Tensor) -> torch.Tensor:
            return encode_slicewise(model, image, axis, spec["batch_size"])
    else:
        shape = method_shape(size, method["f"], dims)

        def encode(image: torch.Tensor) -> torch.Tensor:
            return encode_whole(model, image)

    latents = {i: encode(fit(torch.from_numpy(store.read(i))[None], size)[0]) for i in items["item_id"]}
    inputs = {i: classifier_latent(latent, spec["latent_scale"], shape) for i, latent in latents.items()}
    channels = next(iter(latents.values())).shape[0]
    return MethodInputs(inputs.__getitem__, items, shape, channels, method["f"], is_demo_model(model))


# ----------------------------------------------------------------------------- training and testing


def train_loader(dataset: ItemDataset, spec: dict, generator: torch.Generator) -> DataLoader:
    """Shuffled batches; with `weighted_sampling` every class is drawn equally often in expectation
    (inverse class frequency, with replacement), as published for head fracture and knee."""
    batch_size = min(spec["batch_size"], len(dataset))
    sampler = None
    if spec["task"].get("weighted_sampling"):
        counts = torch.bincount(dataset.targets, minlength=spec["task"]["classes"]).clamp(min=1)
        sampler = WeightedRandomSampler((1.0 / counts)[dataset.targets].double(), len(dataset), generator=generator)
    # drop_last: a last batch of one sample breaks BatchNorm in training mode
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(dataset) > batch_size,
        num_workers=spec["num_workers"],
        generator=generator,
    )


def train_classifier(
    model: nn.Module, dataset: ItemDataset, spec: dict, device: torch.device, generator: torch.Generator
) -> list[float]:
    """AdamW for `epochs` epochs; returns the mean training loss of every epoch."""
    loader = train_loader(dataset, spec, generator)
    # foreach: one fused update over all tensors; PyTorch only defaults to it on CUDA
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"], foreach=True)
    binary_logit = num_outputs(spec["task"]["dims"], spec["task"]["classes"]) == 1
    criterion = nn.BCEWithLogitsLoss() if binary_logit else nn.CrossEntropyLoss()
    history = []
    for epoch in range(spec["epochs"]):
        model.train()
        total, seen = 0.0, 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            logits = model(inputs)
            loss = criterion(logits[:, 0], targets.float()) if binary_logit else criterion(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(targets)
            seen += len(targets)
        history.append(total / max(seen, 1))
        log.info("epoch %d/%d: loss %.4f", epoch + 1, spec["epochs"], history[-1])
    return history


def predict(model: nn.Module, dataset: ItemDataset, batch_size: int, device: torch.device) -> torch.Tensor:
    """Class probabilities (N, classes); a single logit becomes [1 - p, p]."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for inputs, _ in DataLoader(dataset, batch_size=batch_size):
            outputs.append(model(inputs.to(device)).float().cpu())
    logits = torch.cat(outputs)
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, classes: int) -> dict:
    """AUROC (binary, or macro one-vs-rest), accuracy and macro-F1; AUROC is None when the test
    split holds fewer than two classes (undefined, not 0.5)."""
    targets = targets.long()
    present = int(torch.unique(targets).numel())
    if present < 2:
        auroc = None
    elif classes == 2:
        auroc = float(binary_auroc(probs[:, 1], targets))
    else:
        auroc = float(multiclass_auroc(probs, targets, num_classes=classes, average="macro"))
    return {
        "auroc": None if auroc is None else round(auroc, 6),
        "accuracy": round(float(multiclass_accuracy(probs, targets, num_classes=classes, average="micro")), 6),
        "macro_f1": round(float(multiclass_f1_score(probs, targets, num_classes=classes, average="macro")), 6),
        "test_classes_present": present,
    }


def run_cad(
    spec: dict,
    manifest_path: str | Path,
    shard_paths: list[str],
    model_input: str | None,
    out: str | Path,
    device: torch.device = torch.device("cpu"),
) -> dict:
    """Train and test one (task, method, seed) on `device`; writes metrics.json atomically and returns it."""
    started = time.perf_counter()
    task, method = spec["task"], spec["method"]
    items = task_items(pd.read_parquet(manifest_path), task, manifest_path)
    items = items[items["split"].isin(("train", "test"))].reset_index(drop=True)  # val is not used
    inputs = method_inputs(spec, items, shard_paths, model_input, device)
    splits = {split: inputs.items[inputs.items["split"] == split] for split in ("train", "test")}
    datasets = {
        split: ItemDataset(rows["item_id"].tolist(), rows["target"].to_numpy(), inputs.load)
        for split, rows in splits.items()
    }
    generator = seed_everything(spec["seed"])
    model = build_classifier(task["dims"], task["classes"], spec["classifier"]).to(device)
    history = train_classifier(model, datasets["train"], spec, device, generator)
    probs = predict(model, datasets["test"], spec["batch_size"], device)
    metrics = {
        "format": METRICS_FORMAT,
        "task": task["id"],
        "method": method["id"],
        "kind": method["kind"],
        "f": inputs.f,
        **inputs.geometry(task["input_size"]),
        "seed": spec["seed"],
        **classification_metrics(probs, datasets["test"].targets, task["classes"]),
        "n_train": len(datasets["train"]),
        "n_test": len(datasets["test"]),
        "train_class_counts": np.bincount(splits["train"]["target"], minlength=task["classes"]).tolist(),
        "test_class_counts": np.bincount(splits["test"]["target"], minlength=task["classes"]).tolist(),
        "input_shape": [1, *inputs.shape],
        "classifier": spec["classifier"]["name"],
        "classifier_pretrained": bool(spec["classifier"].get("pretrained_path")),
        "epochs": spec["epochs"],
        "train_loss": [round(loss, 6) for loss in history],
        "demo_data": bool(spec["demo"]),
        "demo_weights": inputs.demo_weights,
        "device": device.type,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_text(out, json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    log.info("%s / %s / seed %d: AUROC %s", task["id"], method["id"], spec["seed"], metrics["auroc"])
    return metrics
