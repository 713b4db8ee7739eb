"""Reading photos of any size and colour mode into the array a network expects."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utils.errors import ImageReadError

#: More pixels than any photo needs (a 48-megapixel camera gives 48,000,000),
#: yet small enough that a small file claiming a gigantic size (a "decompression
#: bomb") is refused from its header, before gigabytes are decoded.
MAX_PIXELS = 60_000_000


def open_image(path: Path | str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image file at ``path``, fully decoded and turned upright (EXIF orientation).

    Raises :class:`ImageReadError`, naming the file, for a missing file, a folder,
    a file that is no image, one that is truncated or damaged, and one larger than
    ``max_pixels`` pixels.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path} is a folder, not an image")
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit and refuses at twice it; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError(f"{path} claims {width}x{height} = {width * height:,} pixels, "
                                         f"more than the {max_pixels:,} accepted: shrink it first")
                if width == 0 or height == 0:
                    raise ImageReadError(f"{path} is damaged: it claims a size of {width}x{height}")
                image.load()  # decode now, so a truncated file fails here
                return ImageOps.exif_transpose(image)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path} is not an image PIL can read (JPEG, PNG, GIF, BMP, TIFF, WebP ...)") \
            from None
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path} is too large to decode ({err})") from None
    except PermissionError:
        raise ImageReadError(f"{path} cannot be read: permission denied") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # truncated or corrupt data
        raise ImageReadError(f"{path} is damaged or truncated ({' '.join(str(err).split())})") from None


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
    rgb = to_rgb(open_image(path))
    fitted = ImageOps.fit(rgb, (size, size), Image.BICUBIC)
    return np.asarray(fitted, dtype="float32"), np.asarray(rgb)
