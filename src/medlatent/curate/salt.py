"""The secret salt of patient keys: never part of params or logs (Snakemake records params)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SALT_FILE = ".patient_salt"


def patient_salt(project: dict, raw_root: Path) -> str:
    """The salt for patient keys: env var, else a per-installation file under data/raw.

    Args:
        project: the config's `project` block (`salt_env`, and `salt` for the demo only).
        raw_root: data/raw, where the per-installation salt file lives.

    Returns:
        The salt; a new random one is written (mode 600) on the first call without one.
    """
    from_env = os.environ.get(project["salt_env"])
    if from_env:
        return from_env
    if project.get("salt"):
        return project["salt"]
    salt_file = raw_root / SALT_FILE
    if not salt_file.exists():
        raw_root.mkdir(parents=True, exist_ok=True)
        temporary = raw_root / f"{SALT_FILE}.{os.getpid()}.tmp"
        temporary.write_text(secrets.token_hex(32), encoding="utf-8")
        os.chmod(temporary, 0o600)
        try:  # link, not replace: concurrent first runs must agree on one salt
            os.link(temporary, salt_file)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return salt_file.read_text(encoding="utf-8").strip()
