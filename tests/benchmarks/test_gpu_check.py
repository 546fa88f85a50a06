"""`make gpu-check` in its CPU quick mode: every phase runs and lands in the one output folder."""

from __future__ import annotations

import json

import pytest
import torch

torch.set_num_threads(2)


@pytest.mark.workflow
def test_gpu_check_quick_cpu_runs_every_phase_into_one_folder(tmp_path, monkeypatch):
    import bench_gpu
    import gpu_check

    # the published classifiers take a minute at any size on 2 cores: the same code on small networks
    monkeypatch.setitem(bench_gpu.CLASSIFIERS, 2, ({"name": "test_resnet", "pretrained_path": None}, 64, {}))
    monkeypatch.setitem(bench_gpu.CLASSIFIERS, 3, ({"name": "seresnet50", "layers": [1, 1, 1, 1]}, 512, {}))
    out = tmp_path / "gpu-check"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out), "--train-seconds", "0"]) == 0

    results = json.loads((out / "gpu-check.json").read_text())
    assert results["phases"] == list(gpu_check.PHASES) and all(results[p]["ok"] for p in gpu_check.PHASES)
    bf16 = json.loads((out / "bench_bf16.json").read_text())
    fp32 = json.loads((out / "bench_fp32.json").read_text())
    assert [r["precision"] for r in bf16["extraction"]] == ["bf16", "bf16"] and len(bf16["classifiers"]) == 2
    # fp32 beside bf16 for the two 2D C1 architectures, extraction only
    assert [r["model"] for r in fp32["extraction"]] == gpu_check.FP32_MODELS and fp32["classifiers"] == []

    stages = results["train_smoke"]["stages"]
    assert stages["stage1_f16_c1"]["input"] == [2, 1, 32, 32] and stages["stage2_3d_f64_c1"]["input"][2:] == [24] * 3
    for row in stages.values():  # from disc_start on: generator and discriminator steps, finite losses
        assert row["steps"] >= 2 and row["losses_finite"] and row["peak_rss_gb"] > 0

    demo = results["demo_extraction"]
    # both runs on this CPU: the same bytes; on a GPU the first run's devices say cuda
    assert demo["run_with_gpu_slot_devices"] == demo["cpu_rerun_devices"] == ["cpu"]
    assert demo["tars"] > 0 and demo["identical"] == demo["tars"] and demo["max_abs_latent_difference"] == 0

    summary = (out / "summary.md").read_text()
    assert "NOT the paper's conditions" in summary and "| train_smoke | True |" in summary
    assert f"tars identical: {demo['tars']} of {demo['tars']}" in summary


def test_compare_tars_reports_the_largest_latent_difference(tmp_path):
    import io
    import tarfile

    import numpy as np
    from gpu_check import compare_tars

    def tar_of(value: float) -> bytes:
        buffer, array = io.BytesIO(), io.BytesIO()
        np.save(array, np.full((2, 2), value, dtype=np.float16))
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("item.latent.npy")
            info.size = len(array.getvalue())
            tar.addfile(info, io.BytesIO(array.getvalue()))
        return buffer.getvalue()

    same = compare_tars({"a.tar": tar_of(1.0)}, {"a.tar": tar_of(1.0)})
    assert same["identical"] == 1 and same["different"] == [] and same["max_abs_latent_difference"] == 0
    moved = compare_tars({"a.tar": tar_of(1.0), "b.tar": tar_of(0.0)}, {"a.tar": tar_of(1.5)})
    assert moved["different"] == ["a.tar", "b.tar"] and moved["missing_in_second"] == ["b.tar"]
    assert moved["max_abs_latent_difference"] == 0.5
