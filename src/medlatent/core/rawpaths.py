"""Relative paths of raw files as exact bytes: names that are not UTF-8 (Latin-1 on old PACS
exports) survive as surrogate-escaped strings (`os.fsdecode`'s convention) and round-trip to
the bytes on disk; a valid UTF-8 name is its own UTF-8 encoding."""

from __future__ import annotations


def to_bytes(relative: str) -> bytes:
    """The bytes of a relative path as the file system holds them."""
    return relative.encode("utf-8", "surrogateescape")


def from_bytes(raw: bytes) -> str:
    """The path string that opens the file whose name is `raw` (surrogate-escaped where not UTF-8)."""
    return raw.decode("utf-8", "surrogateescape")


def printable(relative: str) -> str:
    """A valid UTF-8 string for tables and logs: bytes that are not UTF-8 shown as \\xNN."""
    return to_bytes(relative).decode("utf-8", "backslashreplace")
