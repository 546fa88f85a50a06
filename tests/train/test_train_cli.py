"""The training CLI: two gloo processes (launched by the command itself on two granted fake
GPUs) compute what one process accumulating two micro-batches computes; released weights
are imported into the final weights format with a card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from train_helpers import (
    TINY_2D,
    TINY_3D,
    make_config,
    make_data,
    make_job,
    one_thread,  # noqa: F401 (autouse fixture)
    train_spec,
)

from medlatent import cli
from medlatent import config as mlconfig
from medlatent.models import load_model
from medlatent.models.registry import create_autoencoder
from medlatent.train import recipes
from medlatent.train.shard_lists import write_shard_list


def test_two_gloo_processes_match_one_process_with_accumulation(tmp_path):
    model = {
        **TINY_2D,
        "lora": {"rank": 2, "alpha": 2, "dropout": 0.1},
        "stage1": {"steps": 3, "batch_size": 4, "gpus": 2, "lr": 5.0e-4, "disc_start": 1, "perceptual_weight": 0},
    }
    spec = train_spec(make_config(tmp_path, [model]), "tiny2d", "stage1")
    shards = make_data(tmp_path, (32, 32))
    reference = recipes.train_stage1(make_job(tmp_path / "one", spec, shards))
    assert reference.device["processes"] == 1 and reference.device["accumulation"] == 2

    out = tmp_path / "two" / "stage1.pt"
    train_list, val_list = tmp_path / "train.shards.json", tmp_path / "val.shards.json"
    write_shard_list(shards[0], train_list)
    write_shard_list(shards[1], val_list)
    env = {
        **os.environ,
        "MEDLATENT_FAKE_GPUS": "2",
        "MEDLATENT_GPU_LOCK_DIR": str(tmp_path / "locks"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    command = [
        sys.executable,
        "-m",
        "medlatent.cli",
        "train-stage1",
        "--spec",
        mlconfig.canonical_json(spec),
        "--train-lists",
        str(train_list),
        "--val-lists",
        str(val_list),
        "--out",
        str(out),
        "--losses",
        str(out.with_suffix(".csv")),
        "--curve",
        str(out.with_suffix(".png")),
        "--checkpoints",
        str(tmp_path / "two" / "checkpoints"),
        "--threads",
        "2",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "2 process(es)" in result.stderr and "launching 2 processes" in result.stderr

    one = torch.load(tmp_path / "one" / "results" / "models" / "tiny2d" / "stage1.pt", weights_only=True)
    two = torch.load(out, weights_only=True)
    assert two["record"]["device"]["processes"] == 2 and two["record"]["device"]["accumulation"] == 1
    for key, tensor in one["autoencoder"].items():
        torch.testing.assert_close(two["autoencoder"][key], tensor, rtol=1e-4, atol=1e-6, msg=key)
    # logged losses are global-batch means in both runs
    losses = [run["record"]["final_losses"]["train"]["rec_l1"] for run in (one, two)]
    assert abs(losses[0] - losses[1]) < 1e-5


def test_released_ldm_weights_are_imported_with_an_identity_projection(tmp_path):
    torch.manual_seed(3)
    released = create_autoencoder(TINY_2D)
    path = tmp_path / "released.ckpt"
    torch.save({"state_dict": released.state_dict()}, path)
    config = make_config(tmp_path, [{**TINY_2D, "weights": str(path)}])
    assert mlconfig.trained_models(config, 2) == [] and mlconfig.imported_models(config) == ["tiny2d"]
    out, card = tmp_path / "models" / "stage2.pt", tmp_path / "models" / "card.json"
    spec = mlconfig.canonical_json(mlconfig.import_weights_slice(config, "tiny2d"))
    assert (
        cli.main(["import-weights", "--spec", spec, "--weights", str(path), "--out", str(out), "--card", str(card)])
        == 0
    )
    model = load_model(out)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.encode_latent(x), released.eval().encode(x).mean)
    written = json.loads(card.read_text())
    assert written["imported_from"]["layout"] == "ldm" and "identity" in written["imported_from"]["projection"]
    assert written["weights"] == "demo" and written["demo_reasons"]  # the demo config is project.demo


def test_a_3d_medlatent_weights_file_is_imported_as_is(tmp_path):
    shards = make_data(tmp_path, (24, 24, 24), 2, 0)
    model2d = {**TINY_2D, "stage1": {"steps": 1, "batch_size": 1, "lr": 1e-4, "perceptual_weight": 0, "disc_start": 5}}
    model3d = {
        **TINY_3D,
        "stage2": {
            "steps": 1,
            "batch_size": 1,
            "lr": 1e-4,
            "perceptual_weight": 0,
            "disc_start": 5,
            "patch": [24, 24, 24],
        },
    }
    config = make_config(tmp_path, [model2d, model3d])
    shards2d = make_data(tmp_path, (32, 32), 2, 0)
    recipes.train_stage1(make_job(tmp_path, train_spec(config, "tiny2d", "stage1"), shards2d))
    recipes.train_stage2_3d(
        make_job(
            tmp_path,
            train_spec(config, "tiny3d", "stage2"),
            shards,
            parent=tmp_path / "results" / "models" / "tiny2d" / "stage1.pt",
        )
    )
    trained = tmp_path / "results" / "models" / "tiny3d" / "stage2.pt"
    imported = make_config(tmp_path, [model2d, {**model3d, "weights": str(trained)}])
    out, card = tmp_path / "imported" / "stage2.pt", tmp_path / "imported" / "card.json"
    spec = mlconfig.canonical_json(mlconfig.import_weights_slice(imported, "tiny3d"))
    assert (
        cli.main(["import-weights", "--spec", spec, "--weights", str(trained), "--out", str(out), "--card", str(card)])
        == 0
    )
    a, b = torch.load(trained, weights_only=True), torch.load(out, weights_only=True)
    assert all(torch.equal(a["autoencoder"][k], b["autoencoder"][k]) for k in a["autoencoder"])
    assert b["projection"] is None and json.loads(card.read_text())["imported_from"]["layout"] == "medlatent-model/1"
