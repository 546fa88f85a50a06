"""The decode budget: how large an image one file may decode to, checked on declared sizes before decoding.

A file of a few hundred KB can declare gigabytes (a deflated DICOM, a JPEG 2000 or JPEG
codestream, a PNG, a gzip NIfTI of zeros). Every reader compares what the file declares with
the budget before it inflates or decodes anything, so a job's memory stays bounded by the
memory it asked for: the budget is a share of the memory of the process reading the file
(`curate.mem_mb`, the `mem_mb` resource the curate and normalize rules request).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medlatent.core.errors import InputError

FLOAT32_BYTES = 4
MIB = 2**20
GIB = 2**30
#: A decode holds about this many float32 copies of the image at its peak (the stored values,
#: the float64 modality LUT result, the float32 image; normalization its scaled copy and the
#: resampling grid): the budget is the process memory over this. Measured by benchmarks/bench_hostile.py.
DECODE_OVERHEAD = 4
#: The configuration key that sets the budget, named in every rejection it causes.
KNOB = "curate.mem_mb"
#: Readers called outside a job (decoding, notebooks) allow 2**29 samples: e.g. 1024 CT slices
#: of 512 x 512, 2 GiB as float32.
DEFAULT_MAX_SAMPLES = 2**29


class TooLargeError(InputError):
    """A file declares more than the decode budget allows: rejected before anything that size is allocated."""


@dataclass(frozen=True)
class DecodeBudget:
    """The bytes one file's decoded float32 image may take, and the setting they come from."""

    max_bytes: int
    setting: str

    @classmethod
    def for_process(cls, mem_mb: int) -> DecodeBudget:
        """The budget of a process that may use `mem_mb` MB (a job's `mem_mb` over its processes)."""
        return cls(mem_mb * MIB // DECODE_OVERHEAD, f"1/{DECODE_OVERHEAD} of {mem_mb} MB per process, {KNOB}")

    def check_samples(self, path: Path, samples: int, what: str) -> None:
        """Refuse an image of `samples` values (all frames and colour samples) over the budget as float32."""
        self.check_bytes(path, samples * FLOAT32_BYTES, f"{what}: {samples:,} samples, as float32")

    def check_bytes(self, path: Path, needed: int, what: str) -> None:
        """Refuse `needed` bytes (described by `what`) over the budget."""
        if needed > self.max_bytes:
            raise TooLargeError(
                path,
                f"too large to decode: {what} {needed / GIB:.2f} GiB, over the decode budget of "
                f"{self.max_bytes / GIB:.2f} GiB per file ({self.setting})",
                f"raise {KNOB} if the image is really that large; otherwise the header is corrupt: exclude the file",
            )


DEFAULT_BUDGET = DecodeBudget(DEFAULT_MAX_SAMPLES * FLOAT32_BYTES, "the readers' default outside a workflow job")
