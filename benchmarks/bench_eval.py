"""`make bench`, evaluation stage: the published 2D classifier on a 1024x1024 image vs its f=64 latent.

HRNet-w64 (the paper's 2D CAD classifier, random weights: timing does not depend on them) on
one 1x1024x1024 image and on the 1x128x128 latent of that image at f=64 (one channel, as the
classifier sees latents). Few iterations and batch 1 keep it under a minute on 2 CPU cores;
the paper's ratio (throughput x70 at f=64, Figure 2) was measured on a GPU at larger batches,
so only the order of magnitude is comparable.
"""

from __future__ import annotations

import os

import torch

from medlatent.cad.classifiers import build_classifier
from medlatent.cad.data import method_shape
from medlatent.evaluate.efficiency import device_name, latency_ms

CLASSIFIER = {"name": "hrnet_w64", "pretrained_path": None}
IMAGE = [1024, 1024]
F = 64
PAPER_THROUGHPUT_GAIN = 70


def run() -> dict:
    device = torch.device("cpu")
    torch.set_num_threads(os.cpu_count() or 1)  # an earlier stage may have pinned one thread
    torch.manual_seed(0)
    model = build_classifier(2, 2, CLASSIFIER)
    latent = method_shape(IMAGE, F, 2)
    image_ms = latency_ms(model, IMAGE, batch_size=1, warmup=1, iterations=1, device=device)
    latent_ms = latency_ms(model, latent, batch_size=1, warmup=1, iterations=5, device=device)
    return {
        "classifier": CLASSIFIER["name"],
        "device": device_name(device),
        "batch_size": 1,
        "image_shape": [1, *IMAGE],
        "latent_shape": [1, *latent],
        "image_ms_per_batch": round(image_ms, 1),
        "latent_ms_per_batch": round(latent_ms, 1),
        "image_samples_per_s": round(1000 / image_ms, 3),
        "latent_samples_per_s": round(1000 / latent_ms, 3),
        "throughput_gain_f64": round(image_ms / latent_ms, 1),
        "paper_throughput_gain_f64": PAPER_THROUGHPUT_GAIN,
        "note": "CPU, batch 1, random weights; the paper's x70 is a GPU figure",
    }
