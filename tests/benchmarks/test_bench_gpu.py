"""`make bench-gpu` in its CPU quick mode, at tiny sizes, through its main function."""

from __future__ import annotations

import json

import pytest
import torch

torch.set_num_threads(2)


def test_bench_gpu_quick_cpu_writes_each_figure_beside_its_goal(tmp_path, monkeypatch):
    import bench_gpu

    # the published classifiers take a minute at any size on 2 cores: the same code on small networks
    monkeypatch.setitem(
        bench_gpu.CLASSIFIERS, 2, ({"name": "test_resnet", "pretrained_path": None}, 64, {"throughput": 70})
    )
    monkeypatch.setitem(
        bench_gpu.CLASSIFIERS, 3, ({"name": "seresnet50", "layers": [1, 1, 1, 1]}, 512, {"throughput": 55})
    )
    out = tmp_path / "bench-gpu.json"
    argv = ["--device", "cpu", "--quick", "--out", str(out), "--models", "f16_c1", "f512_c1_3d", "--precision", "bf16"]
    assert bench_gpu.main([*argv, "--image", "64", "--volume", "32", "--ch", "8", "--items-2d", "2"]) == 0

    results = json.loads(out.read_text())
    assert results["quick"] and results["device"].startswith("cpu") and results["sizes"]["ch"] == 8
    f16, f512 = results["extraction"]
    # latent shapes follow the released architectures: f=16 halves each side twice, f=512 each axis three times
    assert (f16["latent_shape"], f512["latent_shape"]) == ([1, 16, 16], [1, 4, 4, 4])
    # the 2D batch is the budget's (16 GB holds many 64^2 images): the latents.batch_size cap; 3D one window
    assert (f16["batch_size"], f512["batch_size"]) == (16, 1)
    for row in results["extraction"]:  # pipeline/bare is the ratio of the two throughputs
        assert row["pipeline_vs_bare"] == pytest.approx(
            row["extract_items_per_s"] / row["bare_encoder_items_per_s"], rel=0.02
        )
        # the process's own peak (VmHWM, reset per architecture): above the weights and an input, far below 16 GB
        assert 0.05 < row["peak_rss_gb"] < 4 and "peak_gpu_gb" not in row
        assert row["precision"] == "bf16" and 0 < row["precision_error"]["max_rel"] < 0.05
    hrnet, seresnet = results["classifiers"]
    assert hrnet["latent"]["shape"] == [8, 8] and seresnet["latent"]["shape"] == [4, 4, 4]
    assert seresnet["paper_gain"] == {"throughput": 55} and "lower bound" in hrnet["note"]

    table = out.with_suffix(".md").read_text()
    assert "NOT the paper's conditions" in table
    assert "| f16_c1 | 8 | 64x64 | 16 | bf16 |" in table and "| >= 0.95 |" in table
    assert f"| {f16['peak_rss_gb']} RSS | {f16['precision_error']['max_abs']} / " in table
    assert f"| x{seresnet['gain']['throughput']} | x55 |" in table
