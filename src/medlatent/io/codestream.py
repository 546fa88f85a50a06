"""The image size a JPEG or JPEG 2000 codestream declares in its own header, read without decoding.

A decoder allocates what the codestream declares, whatever the DICOM header says, so a
compressed frame is measured by its SOF marker (JPEG baseline, extended, lossless; JPEG-LS
SOF55) or its SIZ marker (JPEG 2000, HTJ2K; ITU-T T.800 A.5.1) before it is decoded. Only the
marker segments' headers are read: a JPEG's other segments are skipped by their lengths.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

#: Bytes searched for the SIZ marker: right after SOC in a raw codestream, after the boxes in JP2.
J2K_HEAD_BYTES = 4096
#: JPEG segments walked before the frame header at most (APPn, DQT, DHT, ... come first).
MAX_JPEG_SEGMENTS = 64
_J2K_SIZ = b"\xff\x4f\xff\x51"  # SOC then SIZ
_JPEG_SOI = b"\xff\xd8"
#: Start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (not DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55 (F7).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
#: Markers without a length field: TEM, RSTn, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def declared_size(stream: BinaryIO) -> tuple[int, int, int] | None:
    """(width, height, components) declared by the codestream starting at `stream`'s position;
    None when none starts there (a continuation fragment) or its size marker is not found. A
    JPEG height of 0 (set later by a DNL marker) is returned as 0."""
    start = stream.read(2)
    if start == _JPEG_SOI:
        return _jpeg_frame_size(stream)
    head = start + stream.read(J2K_HEAD_BYTES)
    siz = head.find(_J2K_SIZ)  # a raw codestream, or one inside a JP2 box
    if siz < 0 or len(head) < siz + 42:
        return None
    x_siz, y_siz, x_offset, y_offset = struct.unpack_from(">4I", head, siz + 8)
    (components,) = struct.unpack_from(">H", head, siz + 40)
    return max(0, x_siz - x_offset), max(0, y_siz - y_offset), components


def _jpeg_frame_size(stream: BinaryIO) -> tuple[int, int, int] | None:
    for _ in range(MAX_JPEG_SEGMENTS):
        marker = stream.read(2)
        while marker[1:] == b"\xff":  # fill bytes before a marker
            marker = marker[1:] + stream.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None  # not at a marker: corrupt, the decoder will say so
        if marker[1] in _JPEG_STANDALONE:
            continue
        segment = stream.read(2)
        if len(segment) < 2 or marker[1] == 0xDA:  # the end, or a scan before any frame header
            return None
        (length,) = struct.unpack(">H", segment)
        if length < 2:
            return None
        if marker[1] in _JPEG_SOF:
            frame = stream.read(6)
            if len(frame) < 6:
                return None
            _, height, width, components = struct.unpack(">BHHB", frame)
            return width, height, components
        stream.seek(length - 2, io.SEEK_CUR)
    return None
