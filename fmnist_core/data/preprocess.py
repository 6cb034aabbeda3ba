"""Turn a drawing or an uploaded picture into a 28x28 image in Fashion-MNIST's style."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_PIXELS = 4_000_000  # far below Pillow's ~89 MP default: a decompression bomb is refused
SIZE = 28


class ImageError(ValueError):
    """The file cannot be used as an image; the message is meant for the user."""


def decode_upload(data: bytes) -> Image.Image:
    """Open PNG, JPEG or WebP bytes safely; raise ImageError with a one-line reason otherwise."""
    if not data:
        raise ImageError("the file is empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise ImageError("the image is far too large") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(_inflating(error) or "this is not a PNG, JPEG or WebP image") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"the image is {width}x{height}; at most {MAX_PIXELS // 1_000_000} megapixels are accepted"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(_inflating(error) or "the image file is truncated or damaged") from None
    return image


def _inflating(error: Exception) -> str:
    """The words for Pillow's guard on compressed metadata (zTXt, iTXt, iCCP chunks), or ""."""
    if "decompressed data too large" not in str(error).lower():
        return ""
    return (
        "its metadata (a compressed text or colour-profile chunk) would inflate to more than "
        f"{PngImagePlugin.MAX_TEXT_CHUNK // 2**20} MB: a hostile or broken PNG"
    )


def to_grey(image: Image.Image) -> np.ndarray:
    """Greyscale float in [0, 1]: transparency composited onto white, 16-bit scaled (not clipped)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return np.clip(array / top, 0.0, 1.0).astype(np.float32)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        return np.clip(array / max(float(array.max()), 1e-6), 0.0, 1.0)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def fashion_style(grey: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Light object on dark, cropped to the object, longest side scaled to 28, centred (28, 28)."""
    grey = np.asarray(grey, dtype=np.float32)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if border.mean() > 0.5:  # a dark garment photographed on a light background
        grey, border = 1.0 - grey, 1.0 - border
    grey = np.clip(grey - np.median(border), 0.0, None)  # the background to black
    if grey.max() > 0:
        grey = grey / grey.max()
    rows = np.flatnonzero(grey.max(axis=1) > threshold)
    cols = np.flatnonzero(grey.max(axis=0) > threshold)
    if len(rows) == 0:
        return np.zeros((SIZE, SIZE), dtype=np.float32)
    crop = grey[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    scale = SIZE / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray((crop * 255).astype(np.uint8)).resize(new_size, Image.Resampling.LANCZOS)
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(resized, ((SIZE - new_size[0]) // 2, (SIZE - new_size[1]) // 2))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def prepare_upload(data: bytes) -> np.ndarray:
    """Bytes of an uploaded file to the (28, 28) float image a model sees."""
    image = decode_upload(data)
    image = ImageOps.exif_transpose(image) or image
    return fashion_style(to_grey(image))


def prepare_data_url(url: str) -> np.ndarray:
    """A drawing sent by the browser as a `data:image/png;base64,...` URL to the (28, 28) float image."""
    prefix = "data:image/png;base64,"
    if not isinstance(url, str) or not url.startswith(prefix):
        raise ImageError("the drawing did not arrive as a PNG")
    if len(url) > 4 * MAX_PIXELS:  # base64 of far more than a 280x280 canvas: not a drawing
        raise ImageError("the drawing is far too large")
    try:
        data = base64.b64decode(url[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the drawing's PNG is damaged") from None
    return prepare_upload(data)
