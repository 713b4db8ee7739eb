"""Reading photos of any size and colour mode into the array a network expects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.errors import ImageReadError


def to_rgb(image: Image.Image) -> Image.Image:
    """Three 8-bit channels, whatever the file held.

    Transparent pixels are laid on white: dropping the alpha channel instead
    would reveal whatever colour the transparent pixels happen to store
    (often black). 16-bit and float greyscale is stretched to 0-255.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype="float64")
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype("uint8"), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_image(path: Path | str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(network input of shape (size, size, 3), float32 0-255; the RGB photo as uint8 for figures).

    The photo is scaled so its shorter side is ``size`` and the middle is cut
    out, which keeps its proportions; squeezing a wide photo into a square
    would distort the shapes the network looks for.
    Raises :class:`ImageReadError` for a file that cannot be read as an image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path} is a folder, not an image")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here
            rgb = to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise ImageReadError(f"{path} is not an image PIL can read (JPEG, PNG, GIF, BMP, TIFF, WebP ...)") \
            from None
    except PermissionError:
        raise ImageReadError(f"{path} cannot be read: permission denied") from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise ImageReadError(f"{path} is damaged or truncated ({err})") from None
    fitted = ImageOps.fit(rgb, (size, size), Image.BICUBIC)
    return np.asarray(fitted, dtype="float32"), np.asarray(rgb)
