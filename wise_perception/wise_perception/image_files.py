"""Reading an image file as the robot's camera would have seen it: decoded in full, upright, RGB.

Used by the CLI and by training's data loaders, so a photo is read the same way everywhere:

* the whole file must decode: a truncated or corrupt file is refused with the decoder's reason
  (OpenCV would fill the missing rows with grey and only print libjpeg's warning, so a mask
  would be computed on half a picture);
* the EXIF orientation is applied (a phone photo stored sideways is served upright, as the
  authors' release reads its data through ``datasets``, which applies it);
* palette, grey, 16-bit and alpha images become 8-bit RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageFileError(ValueError):
    """The file cannot be served as an image; the message names the file and says why."""


def read_rgb(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of an image file, upright; :class:`ImageFileError` otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"{path} does not exist")
    if not path.is_file():
        raise ImageFileError(f"{path} is not a file")
    try:
        with Image.open(path) as image:
            image.load()  # decodes everything: a truncated file raises here
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
    except UnidentifiedImageError:
        raise ImageFileError(f"{path} is not an image file that can be read") from None
    except Image.DecompressionBombError as exc:
        raise ImageFileError(f"{path}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways of saying "corrupt"
        raise ImageFileError(f"{path} is truncated or corrupt ({exc})") from None
