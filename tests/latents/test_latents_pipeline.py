"""Extraction pipeline: shard reading in DataLoader workers, and `latents.precision` with its error against fp32."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from latent_fixtures import CC0, extract_spec, index_spec, tiny_model, write_source

from medlatent import config as mlconfig
from medlatent.latents.extract import extract_shards
from medlatent.latents.index import write_dataset_files
from medlatent.latents.sidecar import read_sidecar, sample_entry, sidecar_path


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Seven 2D items (one rejected) in a shard, and tiny weights: batches of 3, 3 and a last one of 1."""
    root = tmp_path_factory.mktemp("pipeline")
    folder, manifest = write_source(root, "src", {"train-000": 8}, (32, 32))
    return {"shard": folder / "train-000.h5", "manifest": manifest, "weights": tiny_model(root / "m" / "stage2.pt")}


def _extract(source, tmp_path, name: str, workers: int = 0, **spec) -> dict:
    [part] = extract_shards(
        extract_spec("tiny", "src", **spec),
        [source["shard"]],
        source["manifest"],
        source["weights"],
        tmp_path / name,
        tmp_path / f"{name}.json",
        workers=workers,
    )
    return part


def _latents(tar_path) -> dict[str, np.ndarray]:
    with tarfile.open(tar_path) as tar:
        return {
            member.name.split(".")[0]: np.load(io.BytesIO(tar.extractfile(member).read()))
            for member in tar.getmembers()
            if member.name.endswith(".latent.npy")
        }


def test_reader_workers_write_the_same_bytes_as_the_encoding_process(source, tmp_path):
    in_process = _extract(source, tmp_path, "w0", workers=0)
    in_workers = _extract(source, tmp_path, "w2", workers=2)
    assert in_process["num_samples"] == 7
    assert (tmp_path / "w0" / "train-000.tar").read_bytes() == (tmp_path / "w2" / "train-000.tar").read_bytes()
    assert (tmp_path / "w0.json").read_bytes() == (tmp_path / "w2.json").read_bytes()
    assert in_workers["encoding"]["precision"] == "fp32" and in_workers["precision_error"] is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_lower_precision_latents_stay_close_to_fp32_and_the_card_reports_the_error(source, tmp_path, precision):
    reference = _extract(source, tmp_path, "fp32")
    part = _extract(source, tmp_path, precision, workers=1, precision=precision)
    error = part["precision_error"]
    # bf16 keeps 8 mantissa bits (relative step 2**-8 = 0.4%), fp16 11: a few roundings through
    # the encoder's convolutions stay well under 5% of the largest latent value, and are not zero
    assert 0 < error["max_rel"] < 0.05 and error["items"] == 3
    assert part["encoding"]["precision"] == precision and reference["precision_error"] is None
    low, full = _latents(tmp_path / precision / "train-000.tar"), _latents(tmp_path / "fp32" / "train-000.tar")
    first_batch = sorted(full)[:3]
    measured = max(float(np.abs(low[key].astype(np.float32) - full[key]).max()) for key in first_batch)
    scale = max(float(np.abs(full[key]).max()) for key in first_batch)
    # the stored latents differ as recorded, up to their float16 rounding (2**-11 relative)
    assert measured == pytest.approx(error["max_abs"], abs=2 * 2**-11 * scale + 1e-3 * error["max_abs"])
    sidecar_file = sidecar_path(tmp_path / precision / "train-000.tar")
    _, meta = sample_entry(read_sidecar(sidecar_file), first_batch[0], sidecar_file)
    assert meta["encoding"]["precision"] == precision
    index = write_dataset_files(
        index_spec("tiny", "src", CC0),
        [tmp_path / f"{precision}.json"],
        source["weights"].parent / "card.json",
        tmp_path / precision,
    )
    assert index["encoding"]["precision_error"] == {**error, "shards": 1}
    card = (tmp_path / precision / "README.md").read_text()
    assert f"- Encoder precision (`latents.precision`): {precision} under torch.autocast" in card
    assert f"{error['max_abs']:.3g} absolute, {100 * error['max_rel']:.3g}% of the largest fp32 latent value" in card


def test_precision_is_in_the_slice_and_workers_only_in_the_thread_request(demo_config):
    edited = {**demo_config, "latents": {**demo_config["latents"], "workers": 5}}
    slices = [mlconfig.latents_extract_slice(config, "demo_f16_c1", "demo_cxr") for config in (demo_config, edited)]
    assert slices[0] == slices[1] and slices[0]["precision"] == "fp32"  # editing workers reruns nothing
    assert mlconfig.latents_threads(edited) == 6  # the encoder plus one per worker
