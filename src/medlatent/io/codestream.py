"""The image size a JPEG or JPEG 2000 codestream declares in its own header, read without decoding.

A decoder allocates what the codestream declares, whatever the DICOM header says, so a
compressed frame is measured by its SOF marker (JPEG baseline, extended, lossless; JPEG-LS
SOF55) or its SIZ marker (JPEG 2000, HTJ2K; ITU-T T.800 A.5.1) before it is decoded.
"""

from __future__ import annotations

import struct

#: Bytes of a fragment read to find its size: JPEG APPn segments (EXIF, ICC) come before the SOF.
HEAD_BYTES = 65536
_J2K_SIZ = b"\xff\x4f\xff\x51"  # SOC then SIZ
_JPEG_SOI = b"\xff\xd8"
#: Start-of-frame markers: SOF0-3, 5-7, 9-11, 13-15 (not DHT C4, JPG C8, DAC CC) and JPEG-LS SOF55 (F7).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
#: Markers without a length field: TEM, RSTn, SOI, EOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def declared_size(head: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) declared by the codestream starting `head`; None when `head`
    starts no JPEG / JPEG 2000 codestream or its size marker is not within it. A JPEG height of
    0 (set later by a DNL marker) is returned as 0."""
    if head.startswith(_JPEG_SOI):
        return _jpeg_frame_size(head)
    if _J2K_SIZ in head:  # a raw codestream, or one inside a JP2 box
        siz = head.index(_J2K_SIZ) + 4
        if len(head) < siz + 38:
            return None
        x_siz, y_siz, x_offset, y_offset = struct.unpack_from(">4I", head, siz + 4)
        (components,) = struct.unpack_from(">H", head, siz + 36)
        return max(0, x_siz - x_offset), max(0, y_siz - y_offset), components
    return None


def _jpeg_frame_size(head: bytes) -> tuple[int, int, int] | None:
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            return None  # not at a marker: corrupt, the decoder will say so
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_STANDALONE:
            at += 2
            continue
        (length,) = struct.unpack_from(">H", head, at + 2)
        if marker in _JPEG_SOF:
            if at + 10 > len(head):
                return None
            height, width = struct.unpack_from(">HH", head, at + 5)
            return width, height, head[at + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        at += 2 + length
    return None
