"""Resident memory of this process from /proc/self/status (Linux).

Not getrusage's ru_maxrss: Linux carries a parent's peak across fork and exec into its children,
so a fresh process started by a large one would report the parent's peak. VmHWM belongs to this
process's own address space and can be reset.
"""

from __future__ import annotations

from pathlib import Path


def resident_gb(field: str = "VmHWM") -> float:
    """`VmRSS` (resident memory now) or `VmHWM` (its peak since the start or the last `reset_peak`)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 2**20  # KiB


def reset_peak() -> None:
    """Forget the peak so far (e.g. loading a weights file holds two copies of them for a moment)."""
    Path("/proc/self/clear_refs").write_text("5")
