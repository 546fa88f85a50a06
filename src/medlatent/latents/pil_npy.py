"""A PIL plugin that opens `.npy` latents, so timm's WebDataset reader can read latent shards.

timm's reader opens the input member of every sample with `PIL.Image.open` (and skips samples
it cannot open), so without this plugin a latent dataset yields nothing in timm. Importing
this module registers the format "NPY". The opened image keeps the exact array as `.latent`
(float16, C x h x w or C x d x h x w); its pixels are the same values as mode "F" (float32,
exact for float16) on a 2D grid of width w and height the product of the other axes, so
`np.asarray(image).reshape(image.latent.shape)` gives the latent too. Pass
`input_img_mode=""` to timm: no `convert`, which would make a new image without `.latent`
(timm drops None arguments and would convert to RGB)::

    import medlatent.latents.pil_npy  # noqa: F401  (registers the plugin)
    dataset = timm.data.create_dataset(
        "wds/latents", root="data/latents/<model>/<source>", split="train",
        input_key="latent.npy;jpg", input_img_mode="", target_key="<label>",
        transform=lambda image: torch.from_numpy(image.latent.astype("float32")),
    )

(`input_key` names the member, then `jpg`: the key timm's reader gives the decoded image.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFile

NPY_MAGIC = b"\x93NUMPY"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(NPY_MAGIC)] == NPY_MAGIC


class NpyImageFile(ImageFile.ImageFile):
    """A floating-point .npy array of 2 or more axes as a mode "F" image holding the array as `.latent`."""

    format = "NPY"
    format_description = "NumPy array (MedLatent latent)"

    def _open(self) -> None:
        try:
            array = np.load(self.fp, allow_pickle=False)
        except ValueError as error:  # PIL tries the next plugin on SyntaxError
            raise SyntaxError(f"not a plain .npy array ({error})") from None
        if array.ndim < 2 or array.dtype.kind != "f":
            raise SyntaxError(f"not a floating-point array of 2+ axes: {array.dtype} {array.shape}")
        self.latent = array
        self._mode = "F"
        self._size = (array.shape[-1], int(np.prod(array.shape[:-1])))
        self.tile = []

    def load(self):  # noqa: ANN201 - PIL's signature
        """Fill the pixels from the array (no tile decoder handles float16)."""
        if self._im is None:
            width, height = self.size
            pixels = Image.fromarray(np.ascontiguousarray(self.latent, dtype=np.float32).reshape(height, width))
            self.im = pixels.im
        return Image.Image.load(self)


Image.register_open(NpyImageFile.format, NpyImageFile, _accept)
Image.register_extension(NpyImageFile.format, ".npy")
