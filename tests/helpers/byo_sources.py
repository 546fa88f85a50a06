"""The README's bring-your-own-images sources, as a user copies them, and small folders of images for them."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from pydicom.uid import generate_uid
from workflow_helpers import REPO, snakemake

from medlatent.demo.dicom import write_dicom

#: The folder under the test's `images/` each README source reads, and test-size normalization for it.
FOLDERS = {"my_xrays": "xrays", "my_mri": "mri"}
SMALL = {"my_xrays": {"size": [32, 32]}, "my_mri": {"spacing": None, "size": [16, 16, 16]}}


def readme_sources() -> list[dict]:
    """The `my-sources.yaml` block of the README, as a user would copy it."""
    section = (REPO / "README.md").read_text().split("### Bring your own images", 1)[1]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1))["sources"]


def write_radiographs(folder, count: int = 3) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        uid = generate_uid()
        attrs = {
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1",
            "SOPInstanceUID": uid,
            "Modality": "DX",
            "PatientID": f"P{i}",
            "StudyInstanceUID": generate_uid(),
            "SeriesInstanceUID": generate_uid(),
            "BitsStored": 12,
            "PixelRepresentation": 0,
        }
        write_dicom(folder / f"patient{i}" / "image.dcm", rng.integers(0, 4096, (40, 36)), attrs)


def write_volumes(folder, count: int = 2) -> None:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for i in range(count):
        volume = rng.uniform(0, 500, (18, 16, 14)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.diag([1.5, 1.5, 2.0, 1.0])), folder / f"subject{i}.nii.gz")


def write_readme_sources(root: Path) -> Path:
    """Images under `root/images` and `root/my-sources.yaml`: the README sources reading them, at test size."""
    write_radiographs(root / "images" / "xrays")
    write_volumes(root / "images" / "mri")
    sources = readme_sources()
    for entry in sources:
        path = str(root / "images" / FOLDERS[entry["id"]])
        entry.update(access={**entry["access"], "path": path}, normalize=SMALL[entry["id"]])
    (root / "my-sources.yaml").write_text(yaml.safe_dump({"sources": sources}))
    return root / "my-sources.yaml"


def run_readme_latents(root: Path, preset: Path, models: list[dict], cache: Path) -> list[Path]:
    """`snakemake latents` in `root/run`: config.yaml, `preset`, the README sources and `models` (hf:// from `cache`).

    Returns the config files, in the order given to Snakemake.
    """
    (root / "test-width-models.yaml").write_text(yaml.safe_dump({"models": models}))
    configs = [REPO / "config.yaml", preset, root / "my-sources.yaml", root / "test-width-models.yaml"]
    run_readme_targets(root, configs, cache, "latents")
    return configs


def run_readme_targets(root: Path, configs: list[Path], cache: Path, *targets: str) -> None:
    """`snakemake targets` in `root/run` with `configs`, the hf:// weights served from `cache`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(cache))
        patch.delenv("HF_HOME", raising=False)
        snakemake(root / "run", *targets, configfile=configs)
