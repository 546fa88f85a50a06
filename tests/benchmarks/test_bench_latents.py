"""`make bench`'s extraction stage at tiny sizes: the timing and shard-bytes cases run and report."""

from __future__ import annotations

import bench_latents

TINY_2D = {
    "id": "tinybench",
    "dims": 2,
    "f": 4,
    "latent_channels": 1,
    "ch": 4,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "norm_groups": 2,
}


def test_timing_case_reports_the_latent_shape_and_each_ratio_beside_its_goal(monkeypatch):
    monkeypatch.setattr(bench_latents, "REPEATS", 1)
    monkeypatch.setattr(bench_latents, "WORKERS", 1)
    figures = bench_latents._time_case(TINY_2D, (16, 16), 3)
    assert figures["items"] == 3 and figures["latent_shape"] == [1, 8, 8]
    assert figures["goal_pipeline_vs_bare"] == bench_latents.GOAL_PIPELINE
    assert figures["pipeline_vs_bare"] > 0 and figures["pipeline_vs_bare_1_workers"] > 0
    assert figures["tar_mb"] > 0 and figures["loader_samples_per_s"] > 0


def test_shard_bytes_case_counts_the_tar_and_the_sidecar_per_sample():
    figures = bench_latents._shard_bytes_case((16, 16), timm_json=False)
    assert figures["latent_bytes"] == 128 and not figures["timm_json"]  # 1 x 8 x 8 float16
    per_sample = figures["tar_bytes_per_sample"] + figures["sidecar_bytes_per_sample"]
    assert abs(figures["bytes_per_sample"] - per_sample) <= 0.1
    assert figures["overhead_bytes_per_sample"] == figures["bytes_per_sample"] - figures["latent_bytes"]
