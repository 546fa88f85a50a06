"""PNG (8/16-bit) and JPEG radiographs through Pillow; colour becomes grey by `types.COLOUR_RULE`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medlatent.core.errors import InputError
from medlatent.io.types import COLOUR_RULE, HeaderInfo, LoadedImage, colour_to_grey, image_meta

_GREY_BITS = {"1": 1, "L": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
_FIX = "re-export the image as PNG or JPEG, or exclude the file"


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        raise InputError(
            path,
            f"not an image file: Pillow cannot identify the content of {path.name}",
            "remove non-image files from the image folder",
        ) from None
    except OSError as error:
        raise InputError(path, f"unreadable image file ({error})", _FIX) from None


def _header(image: Image.Image) -> HeaderInfo:
    grey = image.mode in _GREY_BITS or image.mode == "LA"  # LA: grey with an alpha channel
    return HeaderInfo(
        kind="raster",
        dims=2,
        shape=(int(image.height), int(image.width)),
        photometric="MONOCHROME2" if grey else image.mode,
        bits_stored=_GREY_BITS.get(image.mode, 8),
    )


def read_header(path: Path) -> HeaderInfo:
    with _open(path) as image:
        return _header(image)


def read_image(path: Path) -> LoadedImage:
    with _open(path) as image:
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError) as error:
            raise InputError(path, f"truncated or corrupt {image.format} data ({error})", _FIX) from None
        header = _header(upright)
        meta = image_meta(header)
        if upright.mode in _GREY_BITS:
            array = np.asarray(upright, dtype=np.float32)
        elif upright.mode == "LA":
            array = np.asarray(upright.getchannel("L"), dtype=np.float32)
        else:
            array = colour_to_grey(np.asarray(upright.convert("RGB")))
            meta["colour_rule"] = COLOUR_RULE
    return LoadedImage(np.ascontiguousarray(array, dtype=np.float32), None, None, meta)
