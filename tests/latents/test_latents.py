"""Latent extraction into WebDataset tars, the dataset index and card, and load_latents."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from latent_fixtures import (
    CC0,
    PHI_STRINGS,
    demo_dataset,
    extract_per_split,
    extract_spec,
    index_spec,
    tiny_model,
    write_source,
)

from medlatent import cli, load_latents
from medlatent.core.errors import InputError
from medlatent.latents import extract as latents_module
from medlatent.latents.extract import extract_shards
from medlatent.latents.index import write_dataset_files

SOURCE = "demo.wrist"  # the dot is deliberate: it must never reach a sample key
SHARDS = {"train-000": 5, "train-001": 0, "val-000": 2, "test-000": 3}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A 2D dataset built once: weights, shards, manifest, tars, part records, index files."""
    tmp = tmp_path_factory.mktemp("latents")
    weights = tiny_model(tmp / "models" / "tiny" / "stage2.pt")
    folder, manifest = write_source(tmp, SOURCE, SHARDS, (32, 32))
    dataset = tmp / "latents" / "tiny" / SOURCE
    # one extraction job per split: train-000 and train-001 share one
    records, parts = extract_per_split(
        extract_spec("tiny", SOURCE), folder, SHARDS, manifest, weights, dataset, tmp / "parts"
    )
    index = write_dataset_files(index_spec("tiny", SOURCE, CC0), records, weights.parent / "card.json", dataset)
    return {
        "tmp": tmp,
        "weights": weights,
        "folder": folder,
        "manifest": manifest,
        "dataset": dataset,
        "parts": parts,
        "index": index,
    }


def tar_members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as archive:
        return archive.getmembers()


def test_samples_hold_float16_latents_allowlisted_meta_and_labels(built):
    members = tar_members(built["dataset"] / "train-000.tar")
    keys = [m.name.split(".", 1)[0] for m in members]
    assert keys == sorted(keys)  # sorted samples, two members each; labels and meta in the sidecar
    assert [m.name.split(".", 1)[1] for m in members] == ["latent.npy", "mean.npy"] * 4
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "medlatent", "medlatent")}
    latent, labels, meta = next(iter(load_latents(built["dataset"], split="train")))
    assert latent.dtype == torch.float32 and tuple(latent.shape) == (2, 16, 16)  # C x H/2 x W/2
    assert set(labels) == {"finding", "grade"}
    assert meta["source"] == SOURCE and meta["split"] == "train" and meta["model"] == "tiny"
    assert meta["weights_sha256"] == built["index"]["weights_sha256"] and meta["demo_weights"] is True
    assert meta["encoding"]["method"] == "posterior_mean" and meta["encoding"]["projection"] is True
    assert meta["encoding"]["stored"] == ["latent", "mean"] and meta["encoding"]["normalized_shape"] == [32, 32]
    assert meta["normalization"] == {
        "intensity": {"window": [0.0, 4095.0], "output_range": [-1.0, 1.0]},
        "scale": 0.5,
        "pad_offset": [1, 2],
        "resized_shape": [32, 32],
    }
    row = built["manifest"].set_index("item_id").loc[meta["item_id"]]
    assert labels["finding"] == row["label_finding"]
    assert (labels["grade"] is None) == bool(np.isnan(row["label_grade"]))


def test_latent_is_the_deterministic_projected_posterior_mean(built):
    from medlatent.io.h5 import ShardReader
    from medlatent.models.registry import load_model

    latent, _, meta = next(iter(load_latents(built["dataset"], split="test")))
    with ShardReader(built["folder"] / "test-000.h5") as reader:
        image, _ = reader.read(meta["item_id"])
    with torch.inference_mode():
        expected = load_model(built["weights"]).encode_latent(torch.from_numpy(image)[None, None])[0]
    # Batched and single-item encodings differ in float32 rounding, which can flip one float16
    # rounding step; a sample instead of the mean would be off by the posterior std, far beyond this.
    torch.testing.assert_close(latent, expected.float(), rtol=2**-9, atol=1e-3)


def test_every_kept_item_appears_exactly_once_and_empty_shards_write_no_tar(built):
    manifest = built["manifest"]
    rejected = set(built["index"]["rejected_items"])
    keys = [
        Path(m.name).name.split(".", 1)[0]
        for s in built["index"]["shards"]
        for m in tar_members(built["dataset"] / s["file"])
        if m.name.endswith(".latent.npy")
    ]
    assert sorted(keys) == sorted(set(manifest["item_id"]) - rejected)
    assert len(rejected) == 1 and rejected <= set(manifest["item_id"])
    assert not (built["dataset"] / "train-001.tar").exists()
    empty = next(p for p in built["parts"] if p["shard"] == "train-001")
    assert empty["tar"] is None and empty["num_samples"] == 0
    assert [s["file"] for s in built["index"]["shards"]] == ["train-000.tar", "val-000.tar", "test-000.tar"]
    assert built["index"]["splits"] == {"train": 4, "val": 2, "test": 3}


def test_dotted_source_id_round_trips_every_sample_key(built):
    seen = [
        meta["item_id"]
        for split in ("train", "val", "test")
        for _, _, meta in load_latents(built["dataset"], split=split)
    ]
    assert all("." not in key and key.startswith("demo-wrist_") for key in seen)
    assert sorted(seen) == sorted(set(built["manifest"]["item_id"]) - set(built["index"]["rejected_items"]))
    assert {meta["source"] for _, _, meta in load_latents(built["dataset"], split="val")} == {SOURCE}


def test_rerun_gives_byte_identical_tars_and_part_records(built, tmp_path):
    parts = extract_shards(
        extract_spec("tiny", SOURCE),
        [built["folder"] / "train-000.h5", built["folder"] / "train-001.h5"],
        built["manifest"],
        built["weights"],
        tmp_path / "again",
        tmp_path / "part.json",
    )
    for name in ("train-000.tar", "train-000.meta.json"):
        assert (tmp_path / "again" / name).read_bytes() == (built["dataset"] / name).read_bytes()
    assert parts == [p for p in built["parts"] if p["split"] == "train"]
    assert (tmp_path / "part.json").read_bytes() == (built["tmp"] / "parts" / "train.json").read_bytes()


def test_killed_extraction_leaves_no_partial_tar_and_no_part_record(built, tmp_path, monkeypatch):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    old_tar = (built["dataset"] / "train-000.tar").read_bytes()
    (dataset / "train-000.tar").write_bytes(old_tar)  # an earlier complete run
    real = latents_module.encode_items

    def dies_after_two(*args, **kwargs):
        for count, item in enumerate(real(*args, **kwargs)):
            if count == 2:
                raise RuntimeError("killed mid-write")
            yield item

    monkeypatch.setattr(latents_module, "encode_items", dies_after_two)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        extract_shards(
            extract_spec("tiny", SOURCE, batch_size=1),
            [built["folder"] / "train-000.h5"],
            built["manifest"],
            built["weights"],
            dataset,
            tmp_path / "part.json",
        )
    assert sorted(p.name for p in dataset.iterdir()) == ["train-000.tar"]  # no temporary left behind
    assert (dataset / "train-000.tar").read_bytes() == old_tar
    assert not (tmp_path / "part.json").exists()


def test_no_phi_reaches_tars_index_info_or_card(built):
    files = sorted(built["dataset"].iterdir())
    assert {f.suffix for f in files} == {".tar", ".json", ".md"}
    for path in files:
        data = path.read_bytes()
        for phi in PHI_STRINGS:
            assert phi.encode() not in data, f"{phi!r} leaked into {path.name}"
        assert b"raw_patient_id" not in data and b"patient_key" not in data


def test_index_and_card_name_licence_demo_weights_and_loading(built):
    index = json.loads((built["dataset"] / "index.json").read_text())
    assert index["license"] == CC0 and index["latent"] == {
        "dtype": "float16",
        "shape": [2, 16, 16],
        "shapes": [[2, 16, 16]],
        "channels_first": True,
        "factors": [2, 2],
        "projected": True,
        "classification_scale": 4.6,
        "stored": ["latent", "mean"],
        "timm_json": False,
    }
    assert all(len(s["sha256"]) == 64 for s in index["shards"]) and len(index["model_card_sha256"]) == 64
    card = (built["dataset"] / "README.md").read_text()
    assert "synthetic (CC0)" in card and "Demo weights: yes" in card
    assert "- Latents projected: yes (stage-2 projection)." in card and "- Classification scale: 4.6 (" in card
    assert f"medlatent decode data/latents/tiny/{SOURCE} --out decoded/ --format png" in card
    assert f'load_latents("data/latents/tiny/{SOURCE}", split="train")' in card


def test_info_json_is_read_by_timms_webdataset_reader(built):
    from timm.data.readers.reader_wds import _parse_split_info

    info = json.loads((built["dataset"] / "_info.json").read_text())
    train = _parse_split_info("train", info)
    assert train.num_samples == 4 and train.filenames == ("train-000.tar",) and train.shard_lengths == (4,)
    assert _parse_split_info("test", info).num_samples == 3


def test_loader_splits_shards_across_ranks_without_overlap(built, monkeypatch):
    everything = sorted(m["item_id"] for _, _, m in load_latents(built["dataset"], split="test"))
    dataset = built["tmp"] / "two_shards"
    dataset.mkdir(exist_ok=True)
    index = json.loads((built["dataset"] / "index.json").read_text())
    for shard in ("val-000", "test-000"):  # a test split of two shards: relabel val as test
        for name in (f"{shard}.tar", f"{shard}.meta.json"):
            (dataset / name).write_bytes((built["dataset"] / name).read_bytes())
    index["shards"] = [{**s, "split": "test"} for s in index["shards"] if s["split"] in ("val", "test")]
    (dataset / "index.json").write_text(json.dumps(index))
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_rank.append([m["item_id"] for _, _, m in load_latents(dataset, split="test")])
    assert per_rank[0] and per_rank[1] and not set(per_rank[0]) & set(per_rank[1])
    assert set(everything) <= set(per_rank[0]) | set(per_rank[1]) and sum(map(len, per_rank)) == 5


@pytest.mark.parametrize("store", [[], ["mean", "logvar"]])
def test_storage_ratio_in_card_is_within_5_percent_of_theoretical(tmp_path, store):
    weights = tiny_model(tmp_path / "m" / "stage2.pt", latent_channels=16, model_id="wide")
    folder, manifest = write_source(tmp_path, "big", {"train-000": 6}, (128, 128), rejected=0)
    part = tmp_path / "part.json"
    extract_shards(
        extract_spec("wide", "big", store=store), [folder / "train-000.h5"], manifest, weights, tmp_path / "ds", part
    )
    index = write_dataset_files(index_spec("wide", "big", CC0), [part], weights.parent / "card.json", tmp_path / "ds")
    store_figures = index["storage"]
    assert store_figures["theoretical_ratio"] == pytest.approx(
        4 * 4 / (2 * 16)
    )  # f=4 pixels per latent, C=16, fp32/fp16
    # every stored array costs one latent: the payload ratio is the model's ratio over their count
    assert store_figures["payload_ratio"] == pytest.approx(
        store_figures["theoretical_ratio"] / (1 + len(store)), abs=1e-4
    )
    assert store_figures["measured_over_payload"] == pytest.approx(1.0, abs=0.05)
    card = (tmp_path / "ds" / "README.md").read_text()
    assert (
        "Theoretical storage ratio (float32 image bytes / float16 latent bytes): "
        f"{store_figures['theoretical_ratio']:.2f}" in card
    )
    assert f"{100 * store_figures['measured_over_payload']:.1f}% of the payload ratio" in card
    assert ("- Also stored (`latents.store`): `mean.npy`, `logvar.npy`," in card) == bool(store)
    assert ("Not decodable: the latents are projected" in card) == (not store)  # and names latents.store


def test_shard_not_matching_the_manifest_is_refused(built, tmp_path):
    manifest = built["manifest"].copy()
    manifest.loc[manifest["shard"] == "train-000", "shard"] = "train-001"
    with pytest.raises(InputError, match="rerun the normalize_shard job"):
        extract_shards(
            extract_spec("tiny", SOURCE),
            [built["folder"] / "train-000.h5"],
            manifest,
            built["weights"],
            tmp_path / "ds",
            tmp_path / "part.json",
        )


def test_index_refuses_a_tar_changed_after_extraction(built, tmp_path):
    dataset = tmp_path / "ds"
    dataset.mkdir()
    (dataset / "test-000.tar").write_bytes(b"\0" * 1024)
    (dataset / ".train-000.tar.999.tmp").write_bytes(b"junk")  # leftover of a killed job
    parts = [built["tmp"] / "parts" / "test.json"]
    with pytest.raises(InputError, match="differs from the sha256"):
        write_dataset_files(index_spec("tiny", SOURCE, CC0), parts, built["weights"].parent / "card.json", dataset)
    assert not (dataset / ".train-000.tar.999.tmp").exists()


def test_verify_accepts_the_dataset_as_written(built, capsys):
    assert cli.main(["verify", str(built["dataset"])]) == 0
    assert (
        json.loads(capsys.readouterr().out)["splits"] == built["index"]["splits"] == {"train": 4, "val": 2, "test": 3}
    )


def test_verify_names_every_tampered_truncated_missing_or_edited_file(built, tmp_path, capsys):
    copy = shutil.copytree(built["dataset"], tmp_path / "copy")
    with (
        tarfile.open(built["dataset"] / "train-000.tar") as original,
        tarfile.open(copy / "train-000.tar", "w", format=tarfile.USTAR_FORMAT) as tampered,
    ):
        members = original.getmembers()
        first_key = members[0].name.split(".")[0]
        for member in members:  # every member of one sample dropped
            if member.name.split(".")[0] != first_key:
                tampered.addfile(member, original.extractfile(member))
    truncated = (copy / "test-000.tar").read_bytes()
    (copy / "test-000.tar").write_bytes(truncated[: len(truncated) // 2 + 100])
    (copy / "val-000.tar").unlink()
    (copy / "README.md").write_text("edited\n")
    (copy / "stray-000.tar").write_bytes(b"")
    assert cli.main(["verify", str(copy)]) == 1
    error = capsys.readouterr().err
    assert "train-000.tar: sha256 differs" in error and "train-000.tar: 3 samples, index.json says 4" in error
    assert "test-000.tar: sha256 differs" in error and "val-000.tar: missing" in error
    assert "README.md: does not match index.json" in error and "stray-000.tar: a shard file that index.json" in error
    assert "train-000.meta.json: keys differ from train-000.tar (0 samples without an entry" in error
    assert "dvc pull" in error


def test_no_phi_from_synthetic_dicom_headers_reaches_the_dataset(demo_config, tmp_path):
    """Real synthetic DICOMs (patient names, ids, dates in their headers) through curate,
    normalize and extraction: none of their PHI is in any file of the latent dataset."""
    from medlatent.demo.registry import phi_strings

    built = demo_dataset(
        demo_config,
        "demo_cxr",
        tmp_path,
        {"n_patients": 6, "images_per_patient": 2},
        tiny_model(tmp_path / "model" / "stage2.pt"),
    )
    phi = phi_strings(built["raw"])
    assert built["index"]["num_samples"] == len(built["manifest"]) - len(built["index"]["rejected_items"]) > 0
    assert len(phi) > 5
    for path in sorted(built["dataset"].iterdir()):
        data = path.read_bytes()
        assert not [value for value in phi if value.encode() in data], path.name
