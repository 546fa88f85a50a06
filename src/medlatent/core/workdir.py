"""Recovery of a Snakemake working directory after a hard kill.

Snakemake locks its working directory (`.snakemake/locks/`) for the length of a run. A run
killed with SIGKILL, an OOM kill or a power loss cannot remove the lock, and the next run
stops with "Directory cannot be locked". The lock is stale exactly when no Snakemake process
works in that directory any more: then it is safe to remove (what `snakemake --unlock` does),
and the next run continues (`rerun-incomplete` redoes the jobs the kill interrupted; training
resumes from its last checkpoint). Processes are found through /proc (Linux); where there is
none, nothing is removed and the message says what to check and run.
"""

from __future__ import annotations

import os
from pathlib import Path

from medlatent.core.errors import InputError

LOCKS = Path(".snakemake") / "locks"


def lock_files(workdir: str | Path) -> list[Path]:
    """The lock files of a working directory (none when no run holds or left a lock)."""
    folder = Path(workdir) / LOCKS
    return sorted(folder.glob("*.lock")) if folder.is_dir() else []


def _is_snakemake(argv: list[str]) -> bool:
    return any(Path(arg).name == "snakemake" for arg in argv[:3]) or "snakemake" in argv[1:3]


def snakemake_processes(workdir: str | Path) -> list[int] | None:
    """Pids of Snakemake processes whose current directory is `workdir` (Snakemake chdirs into
    its -d directory); None where processes cannot be listed (no /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    target, found = Path(workdir).resolve(), []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if _is_snakemake(argv) and Path(os.readlink(entry / "cwd")).resolve() == target:
                found.append(int(entry.name))
        except OSError:  # the process ended meanwhile, or is not ours to inspect
            continue
    return sorted(found)


def unlock_if_stale(workdir: str | Path) -> str | None:
    """Remove a lock that no live Snakemake process holds; say what was done (None: no lock).

    Raises:
        InputError: a Snakemake process still works in `workdir`, or processes cannot be listed.
    """
    locks = lock_files(workdir)
    if not locks:
        return None
    holders = snakemake_processes(workdir)
    if holders is None:
        raise InputError(
            workdir,
            "locked, and running processes cannot be listed here",
            f"if no Snakemake run works in it, run `snakemake --unlock -d {workdir}`, then rerun",
        )
    if holders:
        raise InputError(
            workdir,
            f"locked by a running Snakemake (pid {', '.join(map(str, holders))})",
            "wait for it to finish or stop it, then rerun",
        )
    for lock in locks:
        lock.unlink(missing_ok=True)
    return (
        f"{workdir}: removed the lock left by a killed Snakemake run (no Snakemake process works there); "
        "continuing: interrupted jobs rerun, training resumes from its last checkpoint"
    )
