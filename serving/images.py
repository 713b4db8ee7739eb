"""Turn an uploaded image of any size, mode and format into what a model reads.

Two targets:

* **MNIST-like** (a 28x28x1 input, or 784 numbers): the image becomes a white
  digit on black, cut to the ink, scaled to fit a 20x20 box and centred in a
  28x28 frame, the way MNIST itself was made. A picture that already is a
  28x28 white-on-black image is passed through untouched, so a test image saved
  as PNG comes back as exactly the array the model was tested on.
* **Colour photos** for the ImageNet applications: RGB, the shorter side scaled
  to the model's size and the centre cropped, so the photo is not squashed.

Nothing here knows about HTTP: problems are raised as :class:`ImageError`
with the status code the service should answer.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Far beyond any photo a learner sends, but small enough that a tiny file
#: claiming to be a 100,000 x 100,000 image (a "decompression bomb") is refused
#: before it is decoded into gigabytes.
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """An upload the service refuses; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``data`` fully, or raise :class:`ImageError`.

    415 when the bytes are no image format Pillow knows, 400 when they start
    like an image but are cut short or damaged, 413 when the picture is larger
    than ``max_pixels``.
    """
    if not data:
        raise ImageError(400, "the uploaded file is empty")
    try:
        # Pillow warns at MAX_IMAGE_PIXELS and refuses at twice that; the size
        # check below gives the clearer message, so silence its warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads only the header
    except UnidentifiedImageError:
        raise ImageError(415, "the upload is not an image Pillow can read "
                              "(send a PNG, JPEG, GIF, BMP, TIFF or WebP file)") from None
    except Image.DecompressionBombError as err:
        raise ImageError(413, f"image too large: {err}") from None
    except Exception as err:  # a header so broken that even identification fails
        raise ImageError(400, f"corrupt image: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(413, f"image too large: {width}x{height} pixels, "
                              f"the limit is {max_pixels:,} pixels")
    if width == 0 or height == 0:
        raise ImageError(400, f"corrupt image: it claims a size of {width}x{height}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()  # the actual decode; truncated or damaged data fails here
        # JPEGs from phones are often stored sideways with an "orientation" tag.
        upright = ImageOps.exif_transpose(image)
        upright.format = image.format  # the copy forgets where it came from
    except Exception as err:
        raise ImageError(400, f"corrupt {image.format or ''} image: {err}".replace("  ", " ")) from None
    return upright


def _on_white(image: Image.Image) -> Image.Image:
    """RGB with any transparency laid over white, and 16-bit or float pixels
    stretched to 0-255 instead of being clipped."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(image, dtype="float64")
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        image = Image.fromarray(scaled.astype("uint8"), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def to_mnist(image: Image.Image, size: int = 28, box: int = 20) -> np.ndarray:
    """A float32 array (size, size) in [0, 1]: a light digit on a dark ground.

    MNIST digits are white on black, photos and scans are usually the reverse:
    when the border of the picture is brighter than its middle, it is inverted.
    """
    gray = _on_white(image).convert("L")
    pixels = np.asarray(gray, dtype="float32")
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:
        pixels = 255.0 - pixels
    if pixels.shape == (size, size):
        return pixels / 255.0  # already MNIST-shaped: no resampling at all
    # Cut to the ink (anything clearly above the background), keep its aspect
    # ratio, fit the longer side into the box, centre in the frame.
    ink = np.argwhere(pixels > pixels.min() + 0.2 * (pixels.max() - pixels.min()))
    if len(ink) and pixels.max() > pixels.min():
        (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0) + 1
        pixels = pixels[top:bottom, left:right]
    height, width = pixels.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(pixels.astype("uint8"), "L").resize(new_size, Image.LANCZOS)
    frame = np.zeros((size, size), dtype="float32")
    top, left = (size - new_size[1]) // 2, (size - new_size[0]) // 2
    frame[top:top + new_size[1], left:left + new_size[0]] = np.asarray(small, dtype="float32")
    return frame / 255.0


def to_rgb(image: Image.Image, height: int, width: int) -> np.ndarray:
    """A float32 array (height, width, 3) with values 0-255: scaled so the
    picture covers the target, then centre-cropped."""
    rgb = _on_white(image)
    scale = max(height / rgb.height, width / rgb.width)
    resized = rgb.resize((max(width, round(rgb.width * scale)), max(height, round(rgb.height * scale))),
                         Image.BILINEAR)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return np.asarray(resized.crop((left, top, left + width, top + height)), dtype="float32")


def to_gray(image: Image.Image, height: int, width: int) -> np.ndarray:
    """A float32 array (height, width) with values 0-255, for one-channel
    models that are not MNIST-sized: the RGB recipe, then luminance."""
    rgb = to_rgb(image, height, width).astype("uint8")
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype="float32")


def describe(image: Image.Image) -> dict:
    """What arrived, for the answer: format, size and mode."""
    return {"format": image.format, "width": image.width, "height": image.height, "mode": image.mode}
