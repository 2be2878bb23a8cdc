"""Avatar images: the only module that imports Pillow.

The type is decided by the content: Pillow is only allowed to try its PNG, JPEG and WebP
decoders, whatever the filename or Content-Type said. The declared size is checked before
any pixel is decoded (a decompression bomb is a few bytes that declare a huge image), then
the image is decoded and re-encoded without metadata: no EXIF (GPS), no comments, no
trailing bytes, one frame.
"""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.config import AVATAR_PIXELS_CEILING
from app.core.errors import InvalidImage

# Pillow's own guard, a second line behind the explicit size check: it warns above
# MAX_IMAGE_PIXELS and refuses twice that inside Image.open. The value is the highest pixel
# limit the settings accept, so it never refuses what the configured limit allows.
Image.MAX_IMAGE_PIXELS = AVATAR_PIXELS_CEILING


@dataclass(frozen=True, slots=True)
class ImageFormat:
    extension: str
    content_type: str
    modes: tuple[str, ...]  # modes the encoder takes as they are
    save_options: tuple[tuple[str, Any], ...]


FORMATS = {
    "PNG": ImageFormat("png", "image/png", ("1", "L", "LA", "I", "I;16", "RGB", "RGBA"), ()),
    "JPEG": ImageFormat("jpg", "image/jpeg", ("L", "RGB"), (("quality", 85),)),
    "WEBP": ImageFormat("webp", "image/webp", ("RGB", "RGBA"), (("quality", 85),)),
}
CONTENT_TYPES = {spec.extension: spec.content_type for spec in FORMATS.values()}

# The ``format`` Pillow reports for what those three decoders open, and the format it is
# stored as. The JPEG decoder opens a JPEG that carries extra frames (a Multi-Picture Object,
# as phone cameras write) as "MPO": its first frame is a plain JPEG.
DECODED_AS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP"}

# A PNG in these modes can name one transparent colour (a tRNS chunk, in ``info`` with the
# metadata that is dropped): such an image is stored with an alpha band instead. (A 16-bit
# grey PNG, "I;16", keeps its depth and loses its colour key: Pillow has no 16-bit mode with
# alpha, and a 16-bit grey picture converted to 8 bits would be clipped, not scaled.)
KEYED_TO_ALPHA = {"1": "LA", "L": "LA", "RGB": "RGBA"}

NOT_AN_IMAGE = "The file is not a PNG, JPEG or WebP image."


@dataclass(frozen=True, slots=True)
class EncodedImage:
    data: bytes
    extension: str
    content_type: str
    width: int
    height: int


def reencode(data: bytes, max_pixels: int) -> EncodedImage:
    """Decode ``data`` as PNG, JPEG or WebP and re-encode it in the same format, clean (the
    first frame of an animation or of an MPO; an MPO is stored as a plain JPEG).

    Raises InvalidImage (422) for anything else: empty, another format, too many pixels,
    truncated or corrupt; it raises no other exception (its callers rely on that).
    """
    if not data:
        raise InvalidImage("empty_file", "The file is empty.")
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError:
        raise _too_large(max_pixels) from None
    except UnidentifiedImageError:
        raise InvalidImage("invalid_image_type", NOT_AN_IMAGE) from None
    except Exception:  # a malformed header can raise nearly anything inside a decoder
        raise InvalidImage("invalid_image", "The image could not be read.") from None
    with image:
        width, height = image.size
        if width < 1 or height < 1 or width * height > max_pixels:
            raise _too_large(max_pixels)  # before a single pixel is decoded
        stored_as = DECODED_AS.get(str(image.format))
        if stored_as is None:  # a decoder reported a format this module does not know
            raise InvalidImage("invalid_image_type", NOT_AN_IMAGE)
        spec = FORMATS[stored_as]
        try:
            image.load()
            clean = _clean_copy(image, spec)
            output = io.BytesIO()
            clean.save(output, stored_as, **dict(spec.save_options))
        except Exception:
            raise InvalidImage(
                "invalid_image", "The image could not be decoded: it is truncated or corrupt."
            ) from None
    return EncodedImage(
        data=output.getvalue(),
        extension=spec.extension,
        content_type=spec.content_type,
        width=clean.width,
        height=clean.height,
    )


def _clean_copy(image: Image.Image, spec: ImageFormat) -> Image.Image:
    """The first frame, turned upright (EXIF orientation), in a mode the encoder takes, with
    no metadata left to write."""
    try:
        upright = ImageOps.exif_transpose(image)  # a new, single-frame image
    except Exception:  # unreadable EXIF: keep the pixels as they are
        upright = image.copy()
    has_alpha = upright.has_transparency_data
    if has_alpha and KEYED_TO_ALPHA.get(upright.mode) in spec.modes:
        upright = upright.convert(KEYED_TO_ALPHA[upright.mode])  # keeps the colour key
    elif upright.mode not in spec.modes:
        upright = upright.convert("RGBA" if has_alpha and "RGBA" in spec.modes else "RGB")
    upright.info = {}  # EXIF, XMP, ICC, comments, text chunks: none is written
    return upright


def _too_large(max_pixels: int) -> InvalidImage:
    return InvalidImage(
        "image_too_large", f"The image is larger than {max_pixels} pixels (width x height)."
    )


class ImageProcessor:
    """Decoding and encoding are CPU work: they run in a small bounded thread pool, which
    also bounds how many decoded images are in memory at once."""

    def __init__(self, threads: int, max_bytes: int, max_pixels: int) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="image")

    async def avatar(self, data: bytes) -> EncodedImage:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, reencode, data, self.max_pixels)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
