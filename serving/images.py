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

#: MAX_PIXELS: far beyond any photo a learner sends, but small enough that a
#: tiny file claiming to be a 100,000 x 100,000 image (a "decompression bomb")
#: is refused before it is decoded into gigabytes (the server's --max-pixels).
#: MAX_ASPECT: a 65535x1 strip has few pixels, but a model reading 224x224 would
#: keep a 1x1 speck of it (or, scaled the naive way, make it 14.7 million x 224
#: pixels): refused with 422 before any work is done.
#: MAX_OWN_SIZE_PIXELS: models that take images of any size (input shape
#: (None, None, 3)) get the picture at its own size, scaled down to at most this.
from serving.limits import MAX_ASPECT, MAX_OWN_SIZE_PIXELS, MAX_PIXELS

#: Working memory of a conversion beyond the decoded pixels: a grayscale copy,
#: its inverse and the ink mask for digits, a mode conversion for palettes.
WORK_BYTES_PER_PIXEL = 4
FIXED_COST_BYTES = 4 * 2**20


class ImageError(ValueError):
    """An upload the service refuses; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def peek(data: bytes, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Read only the header of ``data``: a lazy image whose size and mode are
    known, checked against the limits before a single pixel is decoded.

    415 when the bytes are no image format Pillow knows, 400 when the header is
    broken, 413 when the picture has more than ``max_pixels`` pixels, 422 when
    it is more than ``max_aspect`` times longer than wide.
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
    if max(width, height) > max_aspect * min(width, height):
        raise ImageError(422, f"image is {width}x{height} pixels, more than {max_aspect:g} times longer "
                              "than wide: crop it closer to a square before sending it")
    return image


def decode_cost(image: Image.Image) -> int:
    """Bytes that decoding and converting ``image`` may take at the peak: the
    decoded pixels (Pillow keeps 1, 2 or 4 bytes per pixel) plus working copies."""
    pixels = image.width * image.height
    stored = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    return pixels * (stored + WORK_BYTES_PER_PIXEL) + FIXED_COST_BYTES


def decode(image: Image.Image) -> Image.Image:
    """Decode a lazy image from :func:`peek` (400 if the data is cut short or
    damaged), turned upright when its EXIF data says it was stored sideways."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()  # the actual decode; truncated or damaged data fails here
        # JPEGs from phones are often stored sideways with an "orientation" tag;
        # turned in place, so a large picture is not copied for nothing.
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as err:
        raise ImageError(400, f"corrupt {image.format or ''} image: {err}".replace("  ", " ")) from None
    return image


def open_image(data: bytes, max_pixels: int = MAX_PIXELS, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """:func:`peek` then :func:`decode`: the whole image, or :class:`ImageError`."""
    return decode(peek(data, max_pixels, max_aspect))


def _stretched(image: Image.Image) -> Image.Image:
    """16-bit or float pixels stretched to 0-255 ("L") instead of being clipped."""
    pixels = np.asarray(image, dtype="float32")
    low, high = float(pixels.min()), float(pixels.max())
    if high > low:
        pixels -= low
        pixels *= 255.0 / (high - low)
    else:
        pixels[:] = 0
    return Image.fromarray(pixels.astype("uint8"), "L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode == "P" and "transparency" in image.info)


def _on_white(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """``mode`` ("RGB" or "L") with any transparency laid over white, and 16-bit
    or float pixels stretched to 0-255 instead of being clipped. An image
    already in ``mode`` is returned as it is, not copied."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = _stretched(image)
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image if image.mode == mode else image.convert(mode)


def to_mnist(image: Image.Image, size: int = 28, box: int = 20) -> np.ndarray:
    """A float32 array (size, size) in [0, 1]: a light digit on a dark ground.

    MNIST digits are white on black, photos and scans are usually the reverse:
    when the border of the picture is brighter than its middle, it is inverted.
    The full-size work is done on one byte per pixel.
    """
    pixels = np.asarray(_on_white(image, "L"))  # uint8
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:
        pixels = 255 - pixels
    if pixels.shape == (size, size):
        return pixels.astype("float32") / 255.0  # already MNIST-shaped: no resampling at all
    # Cut to the ink (anything clearly above the background), keep its aspect
    # ratio, fit the longer side into the box, centre in the frame.
    low, high = int(pixels.min()), int(pixels.max())
    if high > low:
        ink = pixels > low + 0.2 * (high - low)
        rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        del ink
        pixels = pixels[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
    height, width = pixels.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.ascontiguousarray(pixels), "L").resize(new_size, Image.LANCZOS)
    frame = np.zeros((size, size), dtype="float32")
    top, left = (size - new_size[1]) // 2, (size - new_size[0]) // 2
    frame[top:top + new_size[1], left:left + new_size[0]] = np.asarray(small, dtype="float32")
    return frame / 255.0


RESIZABLE = ("RGB", "RGBA", "L", "LA")


def to_rgb(image: Image.Image, height: int, width: int) -> np.ndarray:
    """A float32 array (height, width, 3) with values 0-255: scaled so the
    picture covers the target, then centre-cropped.

    The crop is chosen on the original and only that part is resampled, straight
    to the target size: the work is bounded by the target, whatever the picture's
    shape (a 10000x500 strip is not first blown up to 4480x224)."""
    if image.mode not in RESIZABLE:  # palettes, 16-bit, CMYK...: to a mode Pillow resamples well
        image = _on_white(image)
    scale = max(height / image.height, width / image.width)
    crop_w, crop_h = width / scale, height / scale
    left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
    small = image.resize((width, height), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h),
                         reducing_gap=3.0)
    return np.asarray(_on_white(small), dtype="float32")


def to_gray(image: Image.Image, height: int, width: int) -> np.ndarray:
    """A float32 array (height, width) with values 0-255, for one-channel
    models that are not MNIST-sized: the RGB recipe, then luminance."""
    rgb = to_rgb(image, height, width).astype("uint8")
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"), dtype="float32")


def to_own_size(image: Image.Image, channels: int, max_pixels: int = MAX_OWN_SIZE_PIXELS) -> np.ndarray:
    """For models that take any image size: (height, width, channels) float32 0-255
    at the picture's own size, scaled down (keeping its shape) to at most
    ``max_pixels`` pixels."""
    if image.mode not in RESIZABLE:
        image = _on_white(image)
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = (max_pixels / pixels) ** 0.5
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))),
                             Image.BILINEAR, reducing_gap=3.0)
    array = np.asarray(_on_white(image, "RGB" if channels == 3 else "L"), dtype="float32")
    return array if channels == 3 else array[..., None]


def describe(image: Image.Image) -> dict:
    """What arrived, for the answer: format, size and mode."""
    return {"format": image.format, "width": image.width, "height": image.height, "mode": image.mode}
