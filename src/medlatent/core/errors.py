"""Error types that name the offending file and the fix, so a user can act on them."""

from __future__ import annotations

from pathlib import Path


class MedLatentError(Exception):
    """Base class: every error raised on purpose by MedLatent."""


class InputError(MedLatentError):
    """A file cannot be used; says which file, why, and what to do about it."""

    def __init__(self, path: str | Path, reason: str, fix: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        message = f"{self.path}: {reason}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)


def library_error(error: BaseException) -> str:
    """How a rejection reason names an exception raised inside a library: by its type alone.

    Library messages quote absolute paths (nibabel), file bytes and header values, and reasons
    are stored beside the data (rejected.parquet, shard attributes) and logged: the one place
    where a library's message is dropped.
    """
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


class ConfigError(MedLatentError):
    """The configuration is wrong; names the key and what is expected."""


class CredentialsError(MedLatentError):
    """Credentials for a source are missing or refused; names what to set."""
