"""How many sliding windows per forward a MONAI bundle's inferer may run within its memory budget.

A bundle's network is arbitrary (SegResNet, UNesT), so the cost of a window is measured, not
derived from a width formula: the network runs on random windows of the inferer's roi_size at
batch 1 and at batch 2, on the job's device; the difference of their peaks is the cost of one more
window, the rest of batch 1 a fixed cost. Beside the windows, the inference of one volume holds
`stitched_bytes`: MONAI's sliding_window_inference accumulates classes x (padded) volume in float32
plus a one-channel count map on `inferer#device` (the job's device), the postprocessing's softmax
(Activationsd) makes a second copy of the classes, and the preprocessed input is there too. For
105 classes on a 300x300x300 volume that alone is 23 GB.

sw_batch_size is the largest b with stitched + fixed + b x window <= budget, at most the volume's
number of windows; where b = 1 does not fit, a ConfigError names the key to raise.

Peak of a probe forward. CUDA: torch.cuda.max_memory_allocated over it (the caching allocator's
own account, cuDNN workspaces included). CPU: there are no allocator statistics, and the job's glibc
heap keeps what is freed (`medlatent.core.allocator`), so the resident peak misses what a forward
reuses. Instead a dispatch mode sums the storages of the tensors alive after every op, and
CPU_SLACK covers what kernels allocate beneath the dispatcher (oneDNN's reordered copies) and the
allocator's rounding. Measured (CPU, allocation tuned as in a job, fresh process per case,
SegResNet of wholeBody_ct_segmentation: 105 classes, blocks_down [1, 2, 2, 4]): the resident memory
rose by 1.87 to 2.0 x the counted peak (init_filters 32: 96^3 x 1 window 1360 vs 717 MB, x 2 windows
2685 vs 1434 MB, 64^3 x 4 windows 1602 vs 850 MB; init_filters 8: 96^3 x 4 windows 3590 vs 1790 MB).

The budget is `evaluation.recon.segmenter.<modality>.max_memory_gb`: the memory one volume's
inference may take on top of what the job holds with its networks loaded. Unset, it is what the
device has left when the first volume of a shape is segmented: CUDA, the GPU's free memory plus what
torch caches unused; CPU, `evaluation.recon.mem_mb` less the job's resident memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from medlatent.core.errors import ConfigError

CPU_SLACK = 2
FLOAT_BYTES = 4  # sliding_window_inference stitches in the input's dtype: float32


class _LiveTensorPeak(TorchDispatchMode):
    """Most bytes of tensor storage alive at once among the tensors made by the ops run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # the freed first: a new storage may take a freed one's address (the key)
        self.live = {key: entry for key, entry in self.live.items() if not entry[0].expired()}
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):  # views and in-place results share a counted storage
                storage = value.untyped_storage()
                self.live.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        self.peak = max(self.peak, sum(nbytes for _, nbytes in self.live.values()))
        return out


def peak_bytes(run: Callable[[], object], device: torch.device) -> int:
    """Peak memory `run` adds on `device` (CPU: counted tensors x CPU_SLACK); its result is dropped."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _LiveTensorPeak() as counter:
        run()
    return counter.peak * CPU_SLACK


def window_costs(
    forward: Callable[[torch.Tensor], torch.Tensor], window: list[int], device: torch.device
) -> tuple[int, int, int]:
    """(fixed bytes, bytes per window, output classes) of `forward` on (batch, *window) inputs.

    The inputs are zeros (the cost does not depend on the values; the job's random state stays untouched).
    """
    classes = []

    def probe(batch: int) -> Callable[[], None]:
        def run() -> None:
            classes.append(forward(torch.zeros(batch, *window, device=device)).shape[1])

        return run

    one, two = peak_bytes(probe(1), device), peak_bytes(probe(2), device)
    per_window = max(two - one, 1)
    return max(one - per_window, 0), per_window, classes[0]


def stitched_bytes(classes: int, channels: int, shape: list[int], roi: list[int]) -> int:
    """Bytes the inference of one volume of `shape` holds besides its windows: the stitched classes
    and their softmax copy, the count map and the input."""
    return (2 * classes + 1 + channels) * math.prod(padded_shape(shape, roi)) * FLOAT_BYTES


def default_budget_bytes(device: torch.device, mem_mb: int) -> int:
    """What the device has left: CUDA free + cached unused memory; CPU the job's mem_mb less its resident memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    resident_kib = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])
    return mem_mb * 2**20 - resident_kib * 2**10


def fitting_windows(stitched: int, fixed: int, per_window: int, budget: int, windows: int, fix: str) -> int:
    """Largest sw_batch_size in [1, windows] whose inference fits `budget` bytes; ConfigError naming `fix` if none."""
    fitting = (budget - stitched - fixed) // per_window
    if fitting < 1:
        raise ConfigError(
            f"segmenting one volume needs about {megabytes(stitched + fixed + per_window)} ({megabytes(stitched)} "
            f"stitched output, {megabytes(fixed + per_window)} for one window), over its budget of "
            f"{megabytes(budget)}: {fix}"
        )
    return min(fitting, windows)


def megabytes(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB"


def padded_shape(shape: list[int], roi: list[int]) -> list[int]:
    """The volume as sliding_window_inference pads it: at least one window per axis."""
    return [max(size, side) for size, side in zip(shape, roi, strict=True)]


def count_windows(shape: list[int], roi: list[int], overlap) -> int:
    """Windows sliding_window_inference cuts from a volume of `shape` (MONAI's own scan)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval
    from monai.utils import ensure_tuple_rep

    padded = padded_shape(shape, roi)
    return len(
        dense_patch_slices(padded, roi, _get_scan_interval(padded, roi, len(roi), ensure_tuple_rep(overlap, len(roi))))
    )
