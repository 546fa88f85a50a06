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


class ConfigError(MedLatentError):
    """The configuration is wrong; names the key and what is expected."""


class CredentialsError(MedLatentError):
    """Credentials for a source are missing or refused; names what to set."""
