"""A MONAI bundle in the hub-cache layout: wholeBody_ct_segmentation's inference config, tiny random weights.

The config keeps the structure of MONAI/wholeBody_ct_segmentation's `configs/inference.json`
(model-zoo, Apache-2.0): SegResNet, LoadImaged / EnsureTyped / EnsureChannelFirstd /
Orientationd / Spacingd / NormalizeIntensityd / ScaleIntensityd, a Gaussian sliding-window
inferer, Activationsd / AsDiscreted / Invertd / SaveImaged, the CheckpointLoader handler and the
SupervisedEvaluator. Only sizes shrink: 4 output labels, 8 initial filters (the group norm has 8 groups), 16^3 windows.
Its `configs/metadata.json` has the keys MONAI's ConfigWorkflow requires, so MONAI's own bundle
inference runs the folder unchanged but for its paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hub_fixtures import fill_hub_cache

REPO_ID = "MONAI/tiny_ct_segmentation"
OUT_CHANNELS = 4

NETWORK = {
    "_target_": "SegResNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": OUT_CHANNELS,
    "init_filters": 8,
    "blocks_down": [1, 2, 2, 4],
    "blocks_up": [1, 1, 1],
    "dropout_prob": 0.2,
}

INFERENCE = {
    "displayable_configs": {"highres": True, "sw_overlap": 0.25, "sw_batch_size": 1},
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "sampledata",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "pixdim": "$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]",
    "modelname": "$'model.pt' if @displayable_configs#highres else 'model_lowres.pt'",
    "network_def": NETWORK,
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "EnsureTyped", "keys": "image"},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim", "mode": "bilinear"},
            {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True},
            {"_target_": "ScaleIntensityd", "keys": "image", "minv": -1.0, "maxv": 1.0},
        ],
    },
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {
        "_target_": "DataLoader",
        "dataset": "@dataset",
        "batch_size": 1,
        "shuffle": False,
        "num_workers": 1,
    },
    "inferer": {
        "_target_": "SlidingWindowInferer",
        "roi_size": [16, 16, 16],
        "sw_batch_size": "@displayable_configs#sw_batch_size",
        "overlap": "@displayable_configs#sw_overlap",
        "padding_mode": "replicate",
        "mode": "gaussian",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    },
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "meta_key_postfix": "meta_dict",
                "nearest_interp": True,
                "to_tensor": True,
            },
            {"_target_": "SaveImaged", "keys": "pred", "meta_keys": "pred_meta_dict", "output_dir": "@output_dir"},
        ],
    },
    "handlers": [
        {
            "_target_": "CheckpointLoader",
            "load_path": "$@bundle_root + '/models/' + @modelname",
            "load_dict": {"model": "@network"},
        },
        {"_target_": "StatsHandler", "iteration_log": False},
    ],
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
        "amp": True,
    },
    "initialize": ["$setattr(torch.backends.cudnn, 'benchmark', True)"],
    "run": ["$@evaluator.run()"],
}

METADATA = {
    "version": "0.1.0",
    "monai_version": "1.6.1",
    "pytorch_version": "2.14.1",
    "numpy_version": "2.4.6",
    "required_packages_version": {"nibabel": "5.4.2", "pytorch-ignite": "0.5.5"},
    "name": "Tiny CT segmentation (random weights, for tests)",
    "task": "Segmentation",
    "description": "wholeBody_ct_segmentation's inference config with a tiny random-weight SegResNet",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": OUT_CHANNELS}},
    },
}


def loader_at_initialize(config: dict) -> dict:
    """The same config in wholeBody_ct_segmentation's layout from 0.2.2 on: the CheckpointLoader is a
    top-level item that `initialize` calls on the evaluator, no longer an evaluator handler."""
    loader, *handlers = config["handlers"]
    return {
        **config,
        "checkpointloader": loader,
        "handlers": handlers,
        "initialize": [*config["initialize"], "$@checkpointloader(@evaluator)"],
    }


def write_bundle(cache: Path, seed: int = 0, layout=lambda config: config) -> Path:
    """The bundle's snapshot folder in `cache` (random SegResNet weights saved as models/model.pt);
    `layout` rewrites the inference config (e.g. `loader_at_initialize`)."""
    from monai.networks.nets import SegResNet

    torch.manual_seed(seed)
    network = SegResNet(**{key: value for key, value in NETWORK.items() if key != "_target_"})
    weights = cache.parent / f"{cache.name}-model.pt"
    torch.save(network.state_dict(), weights)
    files = {
        "configs/inference.json": json.dumps(layout(INFERENCE), indent=4).encode(),
        "configs/metadata.json": json.dumps(METADATA, indent=4).encode(),
        "models/model.pt": weights,
    }
    return fill_hub_cache(cache, REPO_ID, files)
