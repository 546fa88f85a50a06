"""The dataset-level files of a latent dataset: `index.json`, timm's `_info.json`, the card.

Built from the part records of the extraction jobs (see `medlatent.latents.extract`): they
name the tars that exist (empty shards have none) and their sha256, which is checked here
against the files. Nothing time- or machine-dependent goes in, so republishing unchanged
latents gives byte-identical files (and DVC sees no new version).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from medlatent.config import canonical_json
from medlatent.core.atomic import write_text
from medlatent.core.errors import InputError
from medlatent.core.hashing import file_sha256
from medlatent.core.ids import SPLITS
from medlatent.latents.sidecar import SIDECAR_SUFFIX
from medlatent.models.card import weights_statement

#: Format tag of the part records extract_latents writes for index_latents (one per job).
#: /2: one tar member per sample, labels and meta in the shard sidecar (`medlatent.latents.sidecar`).
#: /3: a record holds the entries of the run of shards its job encoded (`latents.shards_per_job`).
PART_FORMAT = "medlatent-latent-part/3"
#: Latents are stored as float16: half the bytes, ample precision for posterior means.
LATENT_DTYPE = np.float16

log = logging.getLogger(__name__)

#: Format tag of a latent dataset's index.json. /2: one tar member per sample, labels and meta in
#: a sidecar per shard. /3: salted item ids (`medlatent.core.ids.salted_key`); a /2 dataset of
#: the same images has other ids.
INDEX_FORMAT = "medlatent-latents/3"
INDEX_FILES = ("index.json", "_info.json", "README.md")


def read_parts(paths: list[str | Path]) -> list[dict]:
    """The shard entries of the part records, in shard order (train, val, test; then shard number).

    Each entry gains `record`: the path of its part record, which the fix of a mismatch names.
    """
    parts = []
    for path in paths:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        if record.get("format") != PART_FORMAT:
            raise InputError(path, f"not a {PART_FORMAT} part record", "delete it and rerun its extract_latents job")
        parts += [{**part, "record": str(path)} for part in record["parts"]]
    return sorted(parts, key=lambda p: (SPLITS.index(p["split"]), p["shard"]))


def _is_shard_file(name: str) -> bool:
    return name.endswith((".tar", SIDECAR_SUFFIX, ".tmp"))


def _check_folder(dataset_dir: Path, parts: list[dict]) -> None:
    """Every recorded tar and sidecar present and unchanged; leftovers of killed or outdated jobs removed."""
    expected = {name for p in parts if p["tar"] for name in (p["tar"], p["sidecar"])} | set(INDEX_FILES)
    for path in sorted(dataset_dir.iterdir()):
        if path.name not in expected and _is_shard_file(path.name):
            log.warning("removing %s: no extraction job of the current configuration made it", path)
            path.unlink()
    for part in parts:
        for name, sha256 in ((part["tar"], part["sha256"]), (part["sidecar"], part["sidecar_sha256"])):
            if name and file_sha256(dataset_dir / name) != sha256:
                raise InputError(
                    dataset_dir / name,
                    "differs from the sha256 its extraction job recorded",
                    f"delete {part['record']} and rerun",
                )


def storage(parts: list[dict]) -> dict:
    """Bytes of the float32 normalized images vs their float16 latents, theoretical and on disk.

    theoretical = float32 input bytes / float16 classifier-latent bytes (the compression of
    the model, f x 2 / C); payload = float32 input bytes / float16 bytes of every stored
    array (the latent plus what `latents.store` keeps: each extra array costs one latent);
    measured = float32 input bytes / bytes on disk (tars and sidecars). Per sample:
    `bytes_per_sample` on disk and `overhead_bytes_per_sample`, what is not stored array
    bytes: a 512-byte tar header and the 128-byte npy header per array member, padding to
    512 bytes, the sidecar entry (labels and meta), the optional timm `json` member and the
    tar's end blocks shared by the shard's samples.
    """
    keys = ("input_float32_bytes", "latent_float16_bytes", "stored_float16_bytes", "normalized_bytes", "num_samples")
    figures = {key: sum(p[key] for p in parts) for key in keys}
    figures["tar_bytes"] = sum(p["bytes"] for p in parts)
    figures["sidecar_bytes"] = sum(p["sidecar_bytes"] for p in parts)
    disk = figures["tar_bytes"] + figures["sidecar_bytes"]
    if figures["latent_float16_bytes"]:
        figures["bytes_per_sample"] = round(disk / figures["num_samples"], 1)
        figures["overhead_bytes_per_sample"] = round(
            (disk - figures["stored_float16_bytes"]) / figures["num_samples"], 1
        )
        figures["theoretical_ratio"] = round(figures["input_float32_bytes"] / figures["latent_float16_bytes"], 4)
        figures["payload_ratio"] = round(figures["input_float32_bytes"] / figures["stored_float16_bytes"], 4)
        figures["measured_ratio"] = round(figures["input_float32_bytes"] / disk, 4)
        figures["measured_over_payload"] = round(figures["measured_ratio"] / figures["payload_ratio"], 4)
    return figures


def precision_error(parts: list[dict]) -> dict | None:
    """The largest error against fp32 over the shards, each measured on its first batch; None at fp32."""
    errors = [p["precision_error"] for p in parts if p.get("precision_error")]
    if not errors:
        return None
    return {
        "max_abs": max(e["max_abs"] for e in errors),
        "max_rel": max(e["max_rel"] for e in errors),
        "items": sum(e["items"] for e in errors),
        "shards": len(errors),
    }


def _one(parts: list[dict], key: str, spec: dict):
    """A fact every shard entry of the part records must agree on (None without parts)."""
    values = {canonical_json(p[key]) for p in parts}
    if len(values) > 1:
        raise InputError(
            f"data/latent_parts/{spec['model']}/{spec['source']}",
            f"shards disagree on {key!r}",
            "rerun the extract_latents jobs of this dataset",
        )
    return parts[0][key] if parts else None


def build_index(spec: dict, parts: list[dict], card_path: str | Path) -> dict:
    """index.json content: shards, counts, hashes, latent shape, licence, storage, provenance."""
    shapes = sorted({tuple(shape) for p in parts for shape in p["latent_shapes"]})
    weights = {p["weights_sha256"] for p in parts}
    if len(weights) > 1:
        raise InputError(
            f"data/latent_parts/{spec['model']}/{spec['source']}",
            "shards were encoded with different weights",
            "rerun the extract_latents jobs of this dataset",
        )
    projected = _one(parts, "projected", spec)
    return {
        "format": INDEX_FORMAT,
        "name": f"{spec['model']}/{spec['source']}",
        "model": spec["model"],
        "source": spec["source"],
        "source_name": spec["source_name"],
        "modality": spec["modality"],
        "anatomy": spec["anatomy"],
        "dims": spec["dims"],
        "shards": [
            {
                "file": p["tar"],
                "split": p["split"],
                "num_samples": p["num_samples"],
                "sha256": p["sha256"],
                "bytes": p["bytes"],
                "sidecar": p["sidecar"],
                "sidecar_sha256": p["sidecar_sha256"],
                "sidecar_bytes": p["sidecar_bytes"],
            }
            for p in parts
            if p["tar"]
        ],
        "splits": {split: sum(p["num_samples"] for p in parts if p["split"] == split) for split in SPLITS},
        "num_samples": sum(p["num_samples"] for p in parts),
        "rejected_items": sorted(item for p in parts for item in p["rejected"]),
        "latent": {
            "dtype": LATENT_DTYPE.__name__,
            "shape": list(shapes[0]) if len(shapes) == 1 else None,
            "shapes": [list(s) for s in shapes],
            "channels_first": True,
            # item pixels or voxels per latent position per item axis (the family protocol's); CAD reads it
            "factors": _one(parts, "factors", spec),
            "projected": projected,
            "classification_scale": spec["classification_scale"],
            "stored": _one(parts, "stored", spec),
            "timm_json": _one(parts, "timm_json", spec),
        },
        "encoding": {
            "method": "posterior_mean",
            **(parts[0]["encoding"] if parts else {}),
            "precision_error": precision_error(parts),
        },
        "normalize": parts[0]["normalize"] if parts else None,
        "weights_sha256": weights.pop() if weights else None,
        "model_card_sha256": file_sha256(card_path),
        "model_weights": weights_statement(json.loads(Path(card_path).read_text(encoding="utf-8"))),
        "config_sha256": spec["config_sha256"],
        "demo_weights": any(p["demo_weights"] for p in parts),
        "demo_data": any(p["demo_data"] for p in parts),
        "license": spec["license"],
        "weights_license": spec.get("weights_license"),
        "autoencoder": _one(parts, "autoencoder", spec),
        "storage": storage(parts),
        "files": {"info": "_info.json", "card": "README.md"},
    }


def build_info(index: dict) -> dict:
    """`_info.json` as timm's WebDataset reader reads it (timm/data/readers/reader_wds.py)."""
    splits = {}
    for split in SPLITS:
        shards = [s for s in index["shards"] if s["split"] == split]
        if shards:
            splits[split] = {
                "name": split,
                "num_samples": sum(s["num_samples"] for s in shards),
                "filenames": [s["file"] for s in shards],
                "shard_lengths": [s["num_samples"] for s in shards],
            }
    return {"name": index["name"], "splits": splits}


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def build_card(index: dict) -> str:
    """README.md of the dataset: what it is, how to load it, its licence and its storage."""
    licence, store, latent = index["license"], index["storage"], index["latent"]
    shape = (
        "x".join(map(str, latent["shape"]))
        if latent["shape"]
        else "varies per volume: " + ", ".join("x".join(map(str, s)) for s in latent["shapes"])
    )
    demo = (
        "**Demo weights: yes.** These latents come from small random-initialised demo networks, trained "
        "for seconds on synthetic data or not at all; they carry no learned meaning and only exercise the pipeline."
        if index["demo_weights"]
        else f"Demo weights: no ({_weights_kind(index)}; sha256 below)."
    )
    lines = [
        f"# Latent dataset {index['model']} / {index['source']}",
        "",
        f"Deterministic latents (posterior means{', after the stage-2 projection' if latent['projected'] else ''}) "
        f"of model `{index['model']}` on the normalized images of `{index['source']}` ({index['source_name']}; "
        f"{index['modality']}, {index['dims']}D). One WebDataset sample per image: `latent.npy` "
        f"({latent['dtype']}, channels first){' and `json` (its labels, for timm)' if latent['timm_json'] else ''}; "
        "its labels and meta (geometry, normalization, provenance; no patient information) are in the "
        "shard's sidecar `<shard>.meta.json`, keyed by `__key__`.",
        "",
        demo,
        "",
        "## Loading",
        "",
        "```python",
        "from medlatent import load_latents",
        f"for latent, labels, meta in load_latents(\"data/latents/{index['model']}/{index['source']}\", "
        "split=\"train\"):",
        "    ...  # latent: float32 tensor (C, h, w) or (C, d, h, w)",
        "```",
        "",
        "With plain `webdataset`, joining the sidecar by `__key__`:",
        "",
        "```python",
        "import json, webdataset as wds",
        "sidecar = json.load(open(\"train-000.meta.json\"))",
        "for sample in wds.WebDataset(\"train-000.tar\", shardshuffle=False).decode():",
        "    entry = sidecar[\"samples\"][sample[\"__key__\"]]",
        "    latent, labels = sample[\"latent.npy\"], entry[\"labels\"]",
        "    meta = {**sidecar[\"meta\"], **entry[\"meta\"], \"item_id\": sample[\"__key__\"]}",
        "```",
        "",
        "`_info.json` lists splits, shard files and sample counts in the layout of timm's WebDataset reader"
        + (
            "; see the project README for `timm.data.create_dataset` on these shards."
            if latent["timm_json"]
            else " (timm takes targets from a per-sample `json` member: extract with `latents.timm_json: true`)."
        ),
        "",
        *_classifier_lines(latent),
        "",
        *_decode_lines(index),
        "",
        *_autoencoder_lines(index),
        "## Licence",
        "",
        f"- Source licence: **{licence['name']}**",
        *_weights_licence_lines(index.get("weights_license")),
        f"- Sharing derived data allowed: {_yes_no(licence.get('share_derived', False))}"
        + (f" (permission recorded: {licence['permission']})" if licence.get("permission") else ""),
        f"- Commercial use: {_yes_no(licence.get('commercial', False))}",
    ]
    if licence.get("notes"):
        lines.append(f"- Notes: {licence['notes']}")
    lines += [
        "",
        "## Contents",
        "",
        "| split | samples | shards |",
        "|---|---|---|",
        *(
            f"| {split} | {index['splits'][split]} | {sum(1 for s in index['shards'] if s['split'] == split)} |"
            for split in SPLITS
        ),  # SPLITS order: the index read back from JSON has its keys sorted
        "",
        f"Latent shape: {shape}. Items that failed normalization (absent): {len(index['rejected_items'])}.",
        "",
        "## Storage",
        "",
    ]
    if "theoretical_ratio" in store:
        extras = [name for name in latent["stored"] if name != "latent"]
        lines += [
            f"- Normalized images as float32: {store['input_float32_bytes']:,} bytes; latents as float16: "
            f"{store['latent_float16_bytes']:,} bytes.",
            "- Theoretical storage ratio (float32 image bytes / float16 latent bytes): "
            f"{store['theoretical_ratio']:.2f}.",
        ]
        if extras:
            lines.append(
                f"- Also stored (`latents.store`): {', '.join(f'`{name}.npy`' for name in extras)}, "
                f"{store['stored_float16_bytes'] - store['latent_float16_bytes']:,} bytes as float16 (one latent's "
                f"bytes each); payload ratio (float32 image bytes / float16 bytes of all stored arrays): "
                f"{store['payload_ratio']:.2f}."
            )
        lines += [
            f"- Measured storage ratio (float32 image bytes / bytes on disk, tars and sidecars): "
            f"{store['measured_ratio']:.2f} ({100 * store['measured_over_payload']:.1f}% of the payload ratio).",
            f"- On disk per sample: {store['bytes_per_sample']:,.0f} bytes, of which "
            f"{store['overhead_bytes_per_sample']:,.0f} bytes of overhead (tar and npy headers, padding to 512 "
            "bytes, the sidecar entry" + (", the `json` member" if latent["timm_json"] else "") + ").",
            f"- The normalized HDF5 shards (Blosc LZ4) take {store['normalized_bytes']:,} bytes.",
        ]
    else:
        lines.append("- Empty dataset: no samples.")
    lines += [
        "",
        "## Provenance",
        "",
        f"- Model weights sha256: `{index['weights_sha256']}`",
        f"- Model card sha256: `{index['model_card_sha256']}`",
        *([f"- Model weights loaded: {index['model_weights']}"] if index.get("model_weights") else []),
        f"- Config sha256: `{index['config_sha256']}`",
        *_precision_lines(index["encoding"]),
        f"- Synthetic demo data: {_yes_no(index['demo_data'])}",
        "- Per-shard sha256 and sample counts: `index.json`.",
        "",
    ]
    return "\n".join(lines)


def _weights_kind(index: dict) -> str:
    record = index.get("autoencoder") or {}
    if record.get("family", "medvae") == "medvae":
        return "trained MedVAE weights"
    return f"released {record['class']} weights, imported"


def _autoencoder_lines(index: dict) -> list[str]:
    """The card's account of the model: family, class, library, input adaptation, scaling, VQ codebook."""
    record = index.get("autoencoder")
    if not record:
        return []
    library = record["library"]
    lines = [
        "## Autoencoder",
        "",
        f"- Family `{record['family']}`, class `{record['class']}` ({library['name']} {library['version']}).",
        f"- Weights sha256 `{index['weights_sha256']}`; origin: {index.get('model_weights') or 'see the model card'}.",
        *(f"- Input {what}: {how}." for what, how in record["adaptation"].items()),
    ]
    if record.get("network"):
        lines.append(f"- Network settings: {record['network']}.")
    scaling = record.get("scaling")
    if scaling:
        rule = (
            "(z - latents_mean) / latents_std per channel"
            if "latents_mean" in scaling
            else f"(z - {scaling['shift_factor']}) * {scaling['scaling_factor']}"
        )
        lines.append(
            f"- Stored: the raw posterior mean. Diffusion-ready latent: {rule}, given by "
            "`load_latents(..., scaled=True)`."
        )
    if record.get("codebook"):
        book = record["codebook"]
        lines.append(
            f"- Vector-quantized: `indices.npy` holds the codes (the lossless compact form), `latent.npy` the "
            f"quantized latent; codebook {book['entries']} x {book['dim']}, sha256 `{book['sha256']}` (in the weights)."
        )
    return [*lines, ""]


def _weights_licence_lines(licence: dict | None) -> list[str]:
    if not licence:
        return []
    return [
        f"- Model weights licence: **{licence['name']}** (sharing data made with them allowed: "
        f"{_yes_no(licence.get('share_derived', False))}"
        + (f"; permission recorded: {licence['permission']}" if licence.get("permission") else "")
        + f"; commercial use: {_yes_no(licence.get('commercial', False))})"
        + (f"; {licence['notes']}" if licence.get("notes") else ""),
    ]


def _classifier_lines(latent: dict) -> list[str]:
    projected = "yes (stage-2 projection)" if latent["projected"] else "no (the posterior mean itself)"
    return [
        "## Classifiers",
        "",
        f"- Latents projected: {projected}.",
        f"- Classification scale: {latent['classification_scale']} (a classifier sees the latent averaged over "
        "channels and divided by it; `evaluation.cad.latent_scale`, 4.6 in the public MedVAE code).",
        "- Both are in `index.json` under `latent` (`projected`, `classification_scale`).",
    ]


def _precision_lines(encoding: dict) -> list[str]:
    if "precision" not in encoding:  # an empty dataset
        return []
    line = f"- Encoder precision (`latents.precision`): {encoding['precision']}"
    error = encoding["precision_error"]
    if error is None:
        return [line + "."]
    return [
        f"{line} under torch.autocast; largest difference from fp32 on the first batch of each shard "
        f"({error['items']} items, {error['shards']} shards): {error['max_abs']:.3g} absolute, "
        f"{100 * error['max_rel']:.3g}% of the largest fp32 latent value."
    ]


def _decode_lines(index: dict) -> list[str]:
    latent = index["latent"]
    if latent["stored"] is None:  # an empty dataset
        return []
    described = {
        "mean": "`mean.npy` (the unprojected posterior mean, what the decoder decodes)",
        "logvar": "`logvar.npy` (the posterior log-variance, to resample)",
        "indices": "`indices.npy` (the VQ codes, what the decoder decodes)",
    }
    extras = [described[name] for name in latent["stored"] if name != "latent"]
    lines = [
        "## Stored arrays and decoding",
        "",
        f"Per sample beside `latent.npy` (`latents.store`): {', '.join(extras) if extras else 'nothing'}.",
        "",
    ]
    if latent["projected"] and "mean" not in latent["stored"]:
        return lines + [
            "Not decodable: the latents are projected (not invertible) and the unprojected mean was not "
            "stored; set `latents.store: [mean]` and rerun the extraction to decode."
        ]
    return lines + [
        "Back to images, on the normalized intensity scale of the model (see the project README):",
        "",
        "```",
        f"medlatent decode data/latents/{index['model']}/{index['source']} --out decoded/ "
        f"--format {'png' if index['dims'] == 2 else 'nifti'}",
        "```",
    ]


def dataset_files(index: dict) -> dict[str, str]:
    """The text of each of `INDEX_FILES` for an index: what is written, and what `verify` expects."""
    return {
        "index.json": json.dumps(index, indent=1, sort_keys=True) + "\n",
        "_info.json": json.dumps(build_info(index), indent=1, sort_keys=True) + "\n",
        "README.md": build_card(index),
    }


def write_dataset_files(
    spec: dict, part_paths: list[str | Path], card_path: str | Path, dataset_dir: str | Path
) -> dict:
    """Check the tars against the part records and write index.json, _info.json and README.md."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    parts = read_parts(part_paths)
    _check_folder(dataset_dir, parts)
    index = build_index(spec, parts, card_path)
    for name, text in dataset_files(index).items():
        write_text(dataset_dir / name, text)
    log.info("%s: %d samples in %d shards", index["name"], index["num_samples"], len(index["shards"]))
    return index
