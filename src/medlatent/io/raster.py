"""PNG (8/16-bit) and JPEG radiographs through Pillow; colour becomes grey by `types.COLOUR_RULE`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medlatent.core.errors import InputError, library_error
from medlatent.io.budget import DecodeBudget, TooLargeError
from medlatent.io.types import COLOUR_RULE, HeaderInfo, LoadedImage, colour_to_grey, image_meta, require_shape

_GREY_BITS = {"1": 1, "L": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 32, "F": 32}
_FIX = "re-export the image as PNG or JPEG, or exclude the file"


def _open(path: Path, budget: DecodeBudget) -> Image.Image:
    """The image with its header read, nothing decoded yet; its declared size checked against `budget`."""
    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        raise InputError(
            path,
            "not an image file: Pillow cannot identify its content",
            "remove non-image files from the image folder",
        ) from None
    except Image.DecompressionBombError:
        raise TooLargeError(
            path,
            "too large to decode: the image declares more pixels than Pillow's decompression-bomb limit "
            f"({Image.MAX_IMAGE_PIXELS:,} x 2)",
            "downsample the image at the source, or exclude the file",
        ) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(path, f"unreadable image file ({library_error(error)})", _FIX) from None
    try:
        require_shape((image.height, image.width), path, f"{image.format} image")
        budget.check_samples(path, image.height * image.width * len(image.getbands()), f"{image.format} image")
    except InputError:
        image.close()
        raise
    return image


def _header(image: Image.Image) -> HeaderInfo:
    grey = image.mode in _GREY_BITS or image.mode == "LA"  # LA: grey with an alpha channel
    return HeaderInfo(
        kind="raster",
        dims=2,
        shape=(int(image.height), int(image.width)),
        photometric="MONOCHROME2" if grey else image.mode,
        bits_stored=_GREY_BITS.get(image.mode, 8),
    )


def read_header(path: Path, budget: DecodeBudget) -> HeaderInfo:
    with _open(path, budget) as image:
        return _header(image)


def read_image(path: Path, budget: DecodeBudget) -> LoadedImage:
    with _open(path, budget) as image:
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError) as error:
            raise InputError(path, f"truncated or corrupt {image.format} data ({library_error(error)})", _FIX) from None
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
