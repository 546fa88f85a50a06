"""SegSim and SegQC against MONAI's compute_dice, and the bundle segmenter against MONAI's own bundle inference."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_fixtures import REPO_ID, loader_at_initialize, write_bundle
from monai.metrics import compute_dice

from medlatent import config as mlconfig
from medlatent.config.evaluation import segmenter_label
from medlatent.core.errors import ConfigError, InputError
from medlatent.evaluate.bundle import to_bundle_intensities
from medlatent.evaluate.segsim import make_segmenter, structure_scores, threshold_segment

torch.set_num_threads(2)

CT_GRID = {"spacing": [1.0, 1.0, 1.0], "output_range": [-1.0, 1.0], "bundle_range": [-1000.0, 1000.0]}
#: A bundle segmenter's spec as config.slices.segmenter_slice makes it, on one CT source.
BUNDLE_SPEC = {
    "kind": "monai_bundle",
    "bundle": f"hf://{REPO_ID}",
    "volume_change": 0.2,
    "modality": "ct",
    "mem_mb": 32000,
    "sources": {"ct": CT_GRID},
}


def _mask(label_map: torch.Tensor, label: int) -> torch.Tensor:
    return (label_map == label)[None, None].float()


def test_structure_scores_match_compute_dice_and_count_a_missing_structure_as_zero():
    original = torch.zeros(12, 12, 12, dtype=torch.int16)
    original[2:8, 2:8, 2:8] = 1
    original[9:11, 9:11, 9:11] = 2  # lost by the reconstruction
    reconstruction = torch.zeros_like(original)
    reconstruction[3:9, 2:8, 2:8] = 1  # shifted by one voxel
    reconstruction[0:2, 10:12, 0:2] = 3  # appears only in the reconstruction
    scores = structure_scores(original, reconstruction, volume_change=0.2)
    structures = json.loads(scores["segsim_structures"])
    expected = float(compute_dice(_mask(reconstruction, 1), _mask(original, 1))[0, 0])
    assert expected == pytest.approx(2 * 5 / 12)  # 5 of 6 slabs overlap
    assert structures["1"] == {"dice": pytest.approx(expected), "volume_ratio": 1.0}
    assert structures["2"] == {"dice": 0.0, "volume_ratio": 0.0}
    assert structures["3"] == {"dice": 0.0, "volume_ratio": None}
    assert scores["segsim_dice"] == pytest.approx(expected / 3)  # the macro counts both missing structures
    assert scores["segqc_changed"] == 2
    only_1 = structure_scores(original, reconstruction, volume_change=0.2, labels=[1])
    assert only_1["segsim_dice"] == pytest.approx(expected) and only_1["segqc_changed"] == 0


def test_identical_segmentations_score_segsim_one_and_no_changed_structure():
    volume = -torch.ones(16, 16, 16)
    volume[4:12, 4:12, 4:12] = 0.0
    volume[6:10, 6:10, 6:10] = 1.0
    labels = threshold_segment(volume, [-0.5, 0.5])
    assert labels.unique().tolist() == [0, 1, 2]
    scores = structure_scores(labels, labels, volume_change=0.01)
    assert scores["segsim_dice"] == 1.0 and scores["segqc_changed"] == 0
    background = torch.zeros(8, 8, 8, dtype=torch.int16)
    assert structure_scores(background, background, 0.2)["segsim_dice"] == 1.0  # nothing to disagree on
    assert "(stand-in for an anatomical segmenter)" in segmenter_label({"kind": "threshold", "thresholds": [0.5]})


def test_volume_change_beyond_the_fraction_is_counted():
    original = torch.zeros(10, 10, 10, dtype=torch.int16)
    original[:5] = 1
    grown = original.clone()
    grown[5:7] = 1  # 40 % larger
    assert structure_scores(original, grown, volume_change=0.5)["segqc_changed"] == 0
    assert structure_scores(original, grown, volume_change=0.3)["segqc_changed"] == 1


def test_ct_volumes_reach_the_bundle_in_hounsfield_units_through_the_window():
    hu = to_bundle_intensities(torch.tensor([-1.0, 0.0, 1.0]), CT_GRID)
    assert hu.tolist() == [-1000.0, 0.0, 1000.0]


def _phantom(shape=(24, 24, 24)) -> torch.Tensor:
    """A normalized CT-like volume: air, a soft-tissue body, a bone core, some noise."""
    generator = torch.Generator().manual_seed(3)
    volume = -torch.ones(shape)
    volume[3:21, 4:20, 3:21] = 0.05
    volume[9:15, 8:14, 9:15] = 0.7
    return (volume + 0.05 * torch.randn(shape, generator=generator)).clamp(-1, 1)


def _monai_bundle_inference(snapshot: Path, hu: torch.Tensor, spacing: list[float], tmp_path: Path) -> np.ndarray:
    """MONAI's own bundle inference: ConfigWorkflow runs the bundle's inference.json (its dataloader,
    SupervisedEvaluator, CheckpointLoader handler, SaveImaged) on `hu` written as a NIfTI file in its
    dataset_dir; the label map its SaveImaged wrote."""
    from monai.bundle import ConfigWorkflow

    images = tmp_path / "data" / "imagesTs"
    images.mkdir(parents=True)
    nib.save(nib.Nifti1Image(hu.numpy().astype(np.float32), np.diag([*spacing, 1.0])), images / "case.nii.gz")
    workflow = ConfigWorkflow(
        config_file=str(snapshot / "configs" / "inference.json"),
        meta_file=str(snapshot / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(snapshot),
        dataset_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "out"),
    )
    workflow.initialize()
    assert not workflow.check_properties()  # a complete inference bundle by MONAI's own specification
    workflow.run()
    workflow.finalize()
    (saved,) = (tmp_path / "out").rglob("*.nii.gz")
    return np.asarray(nib.load(saved).dataobj)


@pytest.mark.parametrize("layout", [lambda config: config, loader_at_initialize], ids=["loader_handler", "loader_item"])
def test_bundle_segmentation_equals_monai_bundle_inference_label_for_label(tmp_path, monkeypatch, layout):
    cache = tmp_path / "hub"
    snapshot = write_bundle(cache, layout=layout)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # the bundle's `initialize` turns cudnn.benchmark on for the whole process: restored after the test
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    volume = _phantom()
    ours = make_segmenter(BUNDLE_SPEC, torch.device("cpu"))(volume, "ct")
    expected = _monai_bundle_inference(snapshot, to_bundle_intensities(volume, CT_GRID), CT_GRID["spacing"], tmp_path)
    assert ours.shape == volume.shape and len(ours.unique()) > 1
    np.testing.assert_array_equal(ours.numpy(), expected.astype(np.int16))


def test_windows_per_forward_grow_with_the_memory_budget_and_never_change_the_labels(tmp_path, monkeypatch):
    """52x24x24 at 1 mm is 35x16x16 at the bundle's 1.5 mm: 3 windows of 16^3. Every batch's labels are
    MONAI's own bundle inference's; a given sw_batch_size wins over any budget; the most per forward are all."""
    snapshot = write_bundle(tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    volume = _phantom((52, 24, 24))
    expected = _monai_bundle_inference(snapshot, to_bundle_intensities(volume, CT_GRID), CT_GRID["spacing"], tmp_path)
    expected = expected.astype(np.int16)

    explicit = make_segmenter({**BUNDLE_SPEC, "max_memory_gb": 1e-6, "sw_batch_size": 2}, torch.device("cpu"))
    forwards = []  # the batch of every forward: sliding_window_inference's windows, 2 at a time
    explicit.network.register_forward_hook(lambda module, inputs, output: forwards.append(len(inputs[0])))
    np.testing.assert_array_equal(explicit(volume, "ct").numpy(), expected)
    windows = sum(forwards)
    assert forwards == [2, 1]  # 3 windows

    chosen = []
    for budget_gb in (0.002, 1.0):
        segmenter = make_segmenter({**BUNDLE_SPEC, "max_memory_gb": budget_gb}, torch.device("cpu"))
        np.testing.assert_array_equal(segmenter(volume, "ct").numpy(), expected)
        chosen += segmenter.sw_batch_sizes.values()
    assert chosen[0] < chosen[1] == windows

    too_small = make_segmenter({**BUNDLE_SPEC, "max_memory_gb": 0.0005}, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"budget of 0\.5 MB: raise evaluation\.recon\.segmenter\.ct\.max_memory_gb"):
        too_small(volume, "ct")


def test_a_missing_bundle_stops_with_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    spec = {"kind": "monai_bundle", "bundle": "hf://MONAI/wholeBody_ct_segmentation", "sources": {}}
    with pytest.raises(InputError, match="hf download MONAI/wholeBody_ct_segmentation"):
        make_segmenter(spec, torch.device("cpu"))


def test_mri_reaches_the_bundle_in_the_unit_range_for_its_own_normalisation(demo_config):
    demo_config["evaluation"]["recon"]["segmenter"]["mri"] = {"kind": "monai_bundle", "bundle": "/bundles/brain"}
    grid = mlconfig.recon_slice(demo_config, "mri_head")["segmenter"]["sources"]["demo_brainmri"]
    assert grid["bundle_range"] == [0.0, 1.0]
    assert to_bundle_intensities(torch.tensor([-1.0, 1.0]), grid).tolist() == [0.0, 1.0]


def test_a_bundle_per_modality_gets_each_source_grid_and_hu_window(demo_config):
    demo_config["evaluation"]["recon"]["segmenter"]["ct"] = {
        "kind": "monai_bundle",
        "bundle": "hf://MONAI/wholeBody_ct_segmentation",
        "labels": [1, 5],
        "max_memory_gb": 6,
    }
    mlconfig.validate(demo_config)  # the schema knows every key of the entry
    segmenter = mlconfig.recon_slice(demo_config, "ct_head")["segmenter"]
    block = mlconfig.normalize_slice(demo_config, "demo_headct")
    assert segmenter == {
        "kind": "monai_bundle",
        "bundle": "hf://MONAI/wholeBody_ct_segmentation",
        "labels": [1, 5],
        "max_memory_gb": 6,
        "volume_change": 0.2,
        "modality": "ct",
        "mem_mb": demo_config["evaluation"]["recon"]["mem_mb"],
        "sources": {
            "demo_headct": {
                "spacing": block["spacing"],
                "output_range": block["output_range"],
                "bundle_range": block["hu_window"],
            }
        },
    }
