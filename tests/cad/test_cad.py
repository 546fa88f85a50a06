"""Downstream CAD: labels from manifests, method inputs, classifiers, training and metrics."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from cad_fixtures import TINY_2D, TINY_3D, cad_spec, write_latent_dataset, write_model, write_source
from family_fixtures import autoencoder_kl, save_diffusers, vq_model

from medlatent import config as mlconfig
from medlatent.cad.classifiers import build_classifier
from medlatent.cad.data import ItemDataset, class_targets, fit, method_shape, resize, task_items
from medlatent.cad.run import classification_metrics, method_inputs, run_cad, train_loader
from medlatent.core.errors import ConfigError, InputError
from medlatent.models.families import import_family
from medlatent.models.registry import create_autoencoder

torch.set_num_threads(2)

HIGHRES = {"id": "highres", "kind": "highres", "f": 1}
#: timm's own tiny test network: the plumbing tests need a classifier, not HRNet's cost.
TIMM_TEST_NET = {"name": "test_resnet", "pretrained_path": None}


def blob_task(name: str, dims: int, shape: tuple[int, ...], **extra) -> dict:
    return {
        "id": name,
        "dims": dims,
        "source": name,
        "label": "finding",
        "classes": 2,
        "input_size": list(shape),
        **extra,
    }


# --- acceptance: planted findings are found from high-resolution inputs ---------------------------


@pytest.mark.parametrize("dims,shape,patients,epochs", [(2, (32, 32), 40, 3), (3, (16, 16, 16), 32, 3)])
def test_highres_auroc_is_clearly_above_chance_on_planted_findings(tmp_path, dims, shape, patients, epochs):
    name = f"blob{dims}d"
    source = write_source(tmp_path, name, shape, patients)
    out = tmp_path / "results" / "metrics.json"
    metrics = run_cad(
        cad_spec(blob_task(name, dims, shape), HIGHRES, epochs=epochs), source["manifest"], source["shards"], None, out
    )
    assert metrics["auroc"] > 0.75
    assert json.loads(out.read_text()) == metrics
    assert metrics["n_train"] + metrics["n_test"] == patients
    assert metrics["test_class_counts"] == [
        metrics["n_test"] - sum(metrics["test_class_counts"][1:]),
        metrics["test_class_counts"][1],
    ]
    assert metrics["input_shape"] == [1, *shape] and len(metrics["train_loss"]) == epochs
    assert metrics["demo_data"] is True and metrics["demo_weights"] is False
    assert metrics["classifier"] == ("hrnet_w18_small" if dims == 2 else "seresnet50")


# --- every method kind feeds the same classifier -----------------------------------------------


def test_every_method_kind_trains_on_its_own_input_shape(tmp_path):
    model_2d = write_model(tmp_path / "m2.pt", TINY_2D)
    model_3d = write_model(tmp_path / "m3.pt", TINY_3D)
    ldm = tmp_path / "kl.pt"
    torch.manual_seed(1)
    torch.save({"state_dict": create_autoencoder({**TINY_2D, "in_channels": 1}).state_dict()}, ldm)
    external = {
        "id": "kl_f16",
        "dims": 2,
        "f": 16,
        "latent_channels": 2,
        "ch": 8,
        "ch_mult": [1, 2, 2],
        "num_res_blocks": 1,
        "norm_groups": 4,
        "weights": str(ldm),
    }
    cases = {
        2: (
            write_source(tmp_path, "img", (32, 32), 20, rejected=1, val_fraction=0.2),
            (32, 32),
            [
                ({"id": "nearest_f16", "kind": "interpolation", "mode": "nearest", "f": 16}, None, [1, 8, 8], False),
                ({"id": "tiny_f16", "kind": "medvae", "model": "tiny_f16", "f": 16}, "latents2d", [1, 8, 8], True),
                ({"id": "kl_f16", "kind": "external", "f": 16, "external": external}, str(ldm), [1, 8, 8], False),
            ],
        ),
        3: (
            write_source(tmp_path, "vol", (16, 16, 12), 12, rejected=1),
            (16, 16, 12),
            [
                (
                    {"id": "bicubic_f512", "kind": "interpolation", "mode": "bicubic", "f": 512},
                    None,
                    [1, 2, 2, 2],
                    False,
                ),
                (
                    {"id": "tiny3d_f64", "kind": "medvae", "model": "tiny3d_f64", "f": 64},
                    "latents3d",
                    [1, 4, 4, 3],
                    True,
                ),
                (
                    {"id": "tiny_f16_slicewise", "kind": "slicewise", "model": "tiny_f16", "f": 16},
                    str(model_2d),
                    [1, 4, 4, 12],
                    True,
                ),
            ],
        ),
    }
    latents = {
        "latents2d": write_latent_dataset(tmp_path, cases[2][0], "img", model_2d, TINY_2D),
        "latents3d": write_latent_dataset(tmp_path, cases[3][0], "vol", model_3d, TINY_3D),
    }
    for dims, (source, shape, methods) in cases.items():
        name = "img" if dims == 2 else "vol"
        for method, model_input, input_shape, demo_weights in methods:
            spec = cad_spec(blob_task(name, dims, shape), method, epochs=1, batch_size=4, classifier_2d=TIMM_TEST_NET)
            shards = [s for s in source["shards"] if "/val-" not in s]  # as the rule passes them: val is unused
            metrics = run_cad(
                spec,
                source["manifest"],
                shards,
                str(latents.get(model_input, model_input)) if model_input else None,
                tmp_path / f"{method['id']}.json",
            )
            assert metrics["input_shape"] == input_shape, method["id"]
            assert metrics["demo_weights"] is demo_weights, method["id"]
            # one item of the train and one of the test shard failed normalization: left out, not an error
            frame = source["manifest_frame"]
            assert metrics["n_train"] + metrics["n_test"] == (frame["split"] != "val").sum() - 2
            assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["kind"] == method["kind"]


def test_family_latents_are_read_like_medvae_ones_at_the_factors_their_extraction_recorded(tmp_path):
    """A diffusers AutoencoderKL's dataset, its entry without f: f, latent shape and compression
    come from the protocol's geometry (recorded by the extraction), not from a config entry."""
    source = write_source(tmp_path, "img", (32, 32), 12)
    save_diffusers(autoencoder_kl("sd", seed=3), tmp_path / "kl")
    entry = {"id": "kl", "family": "diffusers", "weights": str(tmp_path / "kl"), "apply": "images", "dims": 2,
             "license": {"name": "test"}}  # fmt: skip
    model, _ = import_family(tmp_path / "kl", entry, False, tmp_path / "kl.pt")
    index = write_latent_dataset(tmp_path, source, "img", tmp_path / "kl.pt", entry)
    spec = cad_spec(blob_task("img", 2, (32, 32)), {"id": "kl", "kind": "family", "model": "kl"}, epochs=1)
    metrics = run_cad(spec, source["manifest"], [], str(index), tmp_path / "m.json")
    grid = [32 // factor for factor in model.factors]
    assert metrics["f"] == math.prod(model.factors) == 16 and metrics["kind"] == "family"
    assert metrics["input_shape"] == [1, *grid] and metrics["latent_shape"] == [model.latent_channels, *grid]
    assert metrics["compression_ratio"] == pytest.approx(32 * 32 / (model.latent_channels * math.prod(grid)))


def test_a_vq_models_classifier_input_is_its_stored_quantized_latent_not_the_codes(tmp_path):
    """VQModel: the dataset keeps the integer codes (indices.npy) and the quantized latent; CAD feeds the
    latter, channel mean over the latent scale, which equals diffusers' own quantize of the encoded item."""
    source = write_source(tmp_path, "img", (32, 32), 6)
    vq = vq_model(seed=4)
    save_diffusers(vq, tmp_path / "vq")
    entry = {"id": "vq", "family": "diffusers", "weights": str(tmp_path / "vq"), "apply": "images", "dims": 2,
             "license": {"name": "test"}}  # fmt: skip
    import_family(tmp_path / "vq", entry, False, tmp_path / "vq.pt")
    index = write_latent_dataset(tmp_path, source, "img", tmp_path / "vq.pt", entry)
    spec = cad_spec(blob_task("img", 2, (32, 32)), {"id": "vq", "kind": "family", "model": "vq"})
    items = task_items(source["manifest_frame"], spec["task"], source["manifest"])
    inputs = method_inputs(spec, items, [], str(index), torch.device("cpu"))
    assert inputs.shape == [16, 16] and inputs.channels == vq.config.latent_channels and inputs.f == 4
    with torch.inference_mode():
        for item_id in inputs.items["item_id"]:  # 32 x 32: a multiple of the factor, nothing padded
            x = torch.from_numpy(source["arrays"][item_id])[None, None].float().repeat(1, 3, 1, 1)
            quantized, _, (_, _, codes) = vq.quantize(vq.encode(x).latents)
            expected = quantized[0].mean(dim=0, keepdim=True) / spec["latent_scale"]
            torch.testing.assert_close(inputs.load(item_id), expected, rtol=1e-3, atol=1e-4)  # stored as float16
            assert not torch.allclose(inputs.load(item_id), codes.float().reshape(1, 16, 16) / spec["latent_scale"])
    stored = json.loads(index.read_text())["latent"]["stored"]
    assert "indices" in stored and "latent" in stored


def test_missing_latents_of_labelled_items_are_an_error_naming_the_dataset(tmp_path):
    model = write_model(tmp_path / "m2.pt", TINY_2D)
    source = write_source(tmp_path, "img", (32, 32), 12)
    index = write_latent_dataset(tmp_path, source, "img", model, TINY_2D)
    frame = source["manifest_frame"].copy()
    extra = frame.iloc[[0]].assign(item_id="img_ffffffffffffffff")
    pd.concat([frame, extra]).to_parquet(source["manifest"], index=False)
    method = {"id": "tiny_f16", "kind": "medvae", "model": "tiny_f16", "f": 16}
    with pytest.raises(InputError, match="missing.*img_ffffffffffffffff"):
        run_cad(
            cad_spec(blob_task("img", 2, (32, 32)), method, epochs=1),
            source["manifest"],
            [],
            str(index),
            tmp_path / "m.json",
        )


# --- labels and splits ----------------------------------------------------------------------------


def test_class_targets_map_integers_booleans_strings_and_explicit_orders():
    task = {"id": "t", "classes": 2}
    assert class_targets(pd.Series([0, 1, 1.0]), task, "m").tolist() == [0, 1, 1]
    assert class_targets(pd.Series([True, False]), task, "m").tolist() == [1, 0]
    birads = {"id": "b", "classes": 5}
    values = pd.Series(["BI-RADS 3", "BI-RADS 1", "BI-RADS 5"])
    assert class_targets(values, birads, "m").tolist() == [1, 0, 2]
    ordered = {**birads, "label_values": [f"BI-RADS {k}" for k in range(1, 6)]}
    assert class_targets(values, ordered, "m").tolist() == [2, 0, 4]
    with pytest.raises(InputError, match="not in label_values"):
        class_targets(pd.Series(["BI-RADS 0"]), ordered, "m")
    with pytest.raises(InputError, match="3 distinct labels .* for 2 classes"):
        class_targets(pd.Series(["a", "b", "c"]), task, "manifest.parquet")


def test_task_items_use_the_manifest_split_and_drop_unlabelled_items(tmp_path):
    source = write_source(tmp_path, "img", (16, 16), 10)
    manifest = source["manifest_frame"].copy()
    manifest.loc[0, "label_finding"] = None
    items = task_items(manifest, blob_task("img", 2, (16, 16)), source["manifest"])
    assert len(items) == 9 and set(items["split"]) == {"train", "test"}
    assert items.set_index("item_id")["split"].to_dict() == {r.item_id: r.split for r in manifest.iloc[1:].itertuples()}
    with pytest.raises(InputError, match="no label column 'label_malignancy'.*finding"):
        task_items(manifest, {**blob_task("img", 2, (16, 16)), "label": "malignancy"}, source["manifest"])
    with pytest.raises(InputError, match="no labelled item in the test split"):
        task_items(manifest.assign(split="train"), blob_task("img", 2, (16, 16)), source["manifest"])


# --- geometry -----------------------------------------------------------------------------------


def test_method_shapes_follow_the_compression_factor_per_dims():
    assert method_shape([1024, 512], 16, 2) == [256, 128]
    assert method_shape([1024, 512], 64, 2) == [128, 64]
    assert method_shape([224, 224, 160], 64, 3) == [56, 56, 40]
    assert method_shape([224, 224, 44], 512, 3) == [28, 28, 6]  # 5.5 rounds up, as padding does
    assert method_shape([32, 32, 20], 16, 3, slice_axis=2) == [8, 8, 20]
    with pytest.raises(ConfigError, match="f=32 is not a 2D power"):
        method_shape([64, 64], 32, 2)


def test_fit_pads_and_crops_like_monai_resize_with_pad_or_crop():
    from monai.transforms import ResizeWithPadOrCrop

    torch.manual_seed(0)
    for size in ([3, 4], [6, 9], [5, 5]):
        x = torch.rand(2, 5, 6)
        for value, options in ((-1.0, {"value": -1.0}), (None, {"mode": "replicate"})):
            expected = torch.as_tensor(ResizeWithPadOrCrop(size, **options)(x)).float()
            assert torch.equal(fit(x, size, value), expected)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_volume_resize_is_the_2d_kernel_applied_separably(mode):
    torch.manual_seed(0)
    plane = torch.rand(1, 1, 16, 12)
    volume = plane[..., None].expand(1, 1, 16, 12, 8).contiguous()  # constant along the last axis
    small = resize(volume, [4, 3, 8], mode)
    expected = resize(plane, [4, 3], mode)
    assert torch.allclose(small[..., 0], expected, atol=1e-5)
    assert torch.allclose(small, small[..., :1].expand_as(small), atol=1e-6)
    assert torch.allclose(resize(volume, [16, 12, 8], mode), volume, atol=1e-5)


# --- classifiers and metrics ------------------------------------------------------------------


def test_classifiers_accept_small_latents_and_refuse_missing_pretrained_weights(tmp_path):
    hrnet = build_classifier(2, 5, {"name": "hrnet_w18_small", "pretrained_path": None}).eval()
    with torch.inference_mode():
        assert hrnet(torch.randn(2, 1, 8, 4)).shape == (2, 5)  # padded to HRNet's stride 32
        senet = build_classifier(3, 2, {"name": "seresnet50", "layers": [1, 1, 1, 1]}).eval()
        assert senet(torch.randn(2, 1, 2, 2, 2)).shape == (2, 1)  # binary 3D: one logit (BCE); edge padded to 4
    with pytest.raises(InputError, match="pretrained classifier weights not found"):
        build_classifier(2, 2, {"name": "hrnet_w18_small", "pretrained_path": str(tmp_path / "none.pth")})


def test_classification_metrics_binary_multiclass_and_one_class_test_split():
    targets = torch.tensor([0, 0, 1, 1])
    perfect = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert classification_metrics(perfect, targets, 2) == {
        "auroc": 1.0,
        "accuracy": 1.0,
        "macro_f1": 1.0,
        "test_classes_present": 2,
    }
    inverted = classification_metrics(perfect.flip(1), targets, 2)
    assert inverted["auroc"] == 0.0 and inverted["accuracy"] == 0.0
    probs = torch.eye(3)[[0, 1, 2, 2]] * 0.8 + 0.2 / 3
    multi = classification_metrics(probs, torch.tensor([0, 1, 2, 1]), 3)
    assert multi["auroc"] == pytest.approx((1 + 0.75 + 5 / 6) / 3, abs=1e-6) and multi["accuracy"] == 0.75
    assert classification_metrics(perfect, torch.tensor([1, 1, 1, 1]), 2)["auroc"] is None


# --- config slices: what reruns when -------------------------------------------------------------


def test_cad_methods_per_task_and_slices_that_rerun_only_the_edited_task(demo_config):
    methods = {t["id"]: [m["id"] for m in mlconfig.cad_methods(demo_config, t["id"])] for t in demo_config["cad_tasks"]}
    # the demo compares one 2D model and both 3D models (evaluation.cad.models)
    assert methods["demo_wrist_fracture"] == ["highres", "bicubic_f64", "demo_f64_c4"]
    assert methods["demo_headct_fracture"] == [
        "highres",
        "bicubic_f64",
        "bicubic_f512",
        "demo3d_f64_c1",
        "demo3d_f512_c1",
        "demo_f64_c4_slicewise",
    ]
    every_model = copy.deepcopy(demo_config)
    every_model["evaluation"]["cad"]["models"] = None
    wrist_methods = [m["id"] for m in mlconfig.cad_methods(every_model, "demo_wrist_fracture")]
    assert wrist_methods[3:] == ["demo_f16_c1", "demo_f16_c3", "demo_f64_c1", "demo_f64_c4", "demo_sd_kl"]
    assert {m["id"] for m in mlconfig.cad_methods(every_model, "demo_headct_fracture")} >= {
        "demo_f64_c1_slicewise",
        "demo_f64_c4_slicewise",
    }
    before = {job: mlconfig.cad_slice(demo_config, *job) for job in mlconfig.cad_jobs(demo_config)}
    assert "latent_scale" not in before[("demo_wrist_fracture", "highres", 0)]
    assert before[("demo_wrist_fracture", "demo_f64_c4", 0)]["latent_scale"] == 4.6
    assert (
        before[("demo_headct_fracture", "highres", 0)]["batch_size"]
        == demo_config["evaluation"]["cad"]["batch_size_3d_images"]
    )
    edited = copy.deepcopy(demo_config)
    mlconfig.cad_task(edited, "demo_wrist_fracture")["lr"] = 0.5
    after = {job: mlconfig.cad_slice(edited, *job) for job in mlconfig.cad_jobs(edited)}
    changed = {job for job in before if mlconfig.canonical_json(before[job]) != mlconfig.canonical_json(after[job])}
    assert changed and {task for task, _, _ in changed} == {"demo_wrist_fracture"}
    assert len(changed) == len(methods["demo_wrist_fracture"]) * len(demo_config["evaluation"]["cad"]["seeds"])


def test_a_model_named_like_a_baseline_is_refused(demo_config):
    clash = copy.deepcopy(demo_config)
    clash["models"][0]["id"] = "highres"
    clash["evaluation"]["cad"]["models"] = None  # compare every model, the renamed one too
    with pytest.raises(ConfigError, match="highres"):
        mlconfig.cad_methods(clash, "demo_wrist_fracture")


def test_weighted_sampling_balances_the_classes_seen_in_training():
    targets = np.array([1] + [0] * 11)  # one positive in twelve
    dataset = ItemDataset([f"i{k}" for k in range(12)], targets, lambda item: torch.zeros(1))
    spec = cad_spec(blob_task("img", 2, (8, 8), weighted_sampling=True), HIGHRES, batch_size=4)
    drawn = torch.cat([y for _ in range(50) for _, y in train_loader(dataset, spec, torch.Generator().manual_seed(0))])
    assert 0.4 < drawn.float().mean().item() < 0.6
    plain = torch.cat(
        [
            y
            for _, y in train_loader(
                dataset,
                {**spec, "task": {**spec["task"], "weighted_sampling": False}},
                torch.Generator().manual_seed(0),
            )
        ]
    )
    assert sorted(plain.tolist()) == [0] * 11 + [1]  # without weighting: each item once per epoch
