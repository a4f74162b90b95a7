"""dHash: a 64-bit difference hash of an image, as 16 hex characters.

The image is made grayscale, resized to 9x8 with Lanczos, and bit ``(r, c)`` is set where
pixel ``(r, c + 1)`` is brighter than pixel ``(r, c)``. Bits are read row-major, the first
bit the most significant, exactly as ``imagehash.dhash`` does, so hashes from either tool
compare directly.

Two modes:

``compat``
    Bit-identical to ``imagehash.dhash`` on the EXIF-transposed image.
``fast`` (default)
    Decodes JPEGs at 1/2..1/8 scale straight to grayscale (``Image.draft``) and box-reduces
    large images before the final Lanczos step. Several times faster; within a fraction of
    a bit of ``compat`` on average (the bench measures it).

Both apply the EXIF orientation first: a photo stored sideways with an orientation tag
hashes like the upright picture a viewer shows. :func:`dhash_file` never raises for a bad
file; it returns a :class:`HashError` with one of the :class:`Reason` codes.
"""

from __future__ import annotations

import os
import stat
import time
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MODES",
    "HashError",
    "ImageHash",
    "Mode",
    "Reason",
    "dhash_file",
    "dhash_image",
    "hamming",
    "hex_from_bits",
]

Mode = Literal["fast", "compat"]
MODES: tuple[Mode, ...] = ("fast", "compat")

HASH_WIDTH = 9
HASH_HEIGHT = 8

# Pillow's own default limit (about 89 Mpx); larger images are refused as "oversized" before
# any pixel is decoded, so a hostile file cannot exhaust a worker's memory.
DEFAULT_MAX_PIXELS = 89_478_485

# Fast mode box-reduces an image to no less than FAST_REDUCING_GAP times the hash size before
# the final Lanczos step, and asks the JPEG decoder for at least FAST_DRAFT_SIDE pixels a side
# (1/8 scale for anything from 576 px). Measured on generated photos-like pictures: gap 4 drifts
# 0.4 bits from compat on average, 16 about 0.2 (the noise floor of near-tied neighbours) at no
# measurable cost, because decoding dominates; bench/dhash.py re-measures it.
FAST_REDUCING_GAP = 16.0
FAST_DRAFT_SIDE = 72

_ORIENTATION_TAG = 0x0112
# The transposition that makes a stored image upright, per EXIF orientation value; the same
# table as ImageOps.exif_transpose (read from Pillow 10-13).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = {5, 6, 7, 8}


class Reason(StrEnum):
    """Why a file could not be hashed; the ``reason`` of a :class:`HashError`."""

    MISSING = "missing"  # no such path
    NOT_A_FILE = "not_a_file"  # a directory, socket, ...
    UNREADABLE = "unreadable"  # permission denied or an I/O error
    EMPTY = "empty"  # zero bytes
    NOT_AN_IMAGE = "not_an_image"  # no image format recognised the content
    TRUNCATED = "truncated"  # the data stops before the image does
    CORRUPT = "corrupt"  # recognised, but the decoder failed
    OVERSIZED = "oversized"  # more pixels than the limit (decompression-bomb guard)


@dataclass(frozen=True, slots=True)
class ImageHash:
    """The dHash of one file; ``width`` and ``height`` are as displayed (EXIF-upright)."""

    path: str
    dhash: str
    width: int
    height: int
    seconds: float

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True, slots=True)
class HashError:
    """A file that could not be hashed: its path, a :class:`Reason` value, and details."""

    path: str
    reason: str
    detail: str = ""


class _Refused(Exception):
    """Internal: a file is refused for a known reason before or while decoding."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def hex_from_bits(bits: NDArray[np.bool_]) -> str:
    """Hex of a boolean array read row-major, first bit most significant (imagehash's format)."""
    flat = np.asarray(bits, dtype=bool).ravel()
    width = (flat.size + 3) // 4
    # packbits pads the last byte with zero bits on the right; shift them back out.
    value = int.from_bytes(np.packbits(flat).tobytes(), "big") >> (-flat.size % 8)
    return f"{value:0{width}x}"


def hamming(a: str, b: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length: {a!r} vs {b!r}")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _bits(small: Image.Image) -> str:
    pixels = np.asarray(small)
    return hex_from_bits(pixels[:, 1:] > pixels[:, :-1])


def _orientation_method(image: Image.Image) -> Image.Transpose | None:
    orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    return _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None


def _compat(image: Image.Image) -> Image.Image:
    # Same pixels as ImageOps.exif_transpose, without its full-size copy when nothing turns.
    method = _orientation_method(image)
    upright = image if method is None else image.transpose(method)
    return upright.convert("L").resize((HASH_WIDTH, HASH_HEIGHT), Image.Resampling.LANCZOS)


def _fast(image: Image.Image) -> Image.Image:
    method = _orientation_method(image)
    box: tuple[float, float, float, float] | None = None
    if image.format == "JPEG":
        # Decode at 1/2, 1/4 or 1/8 scale (the DCT does the averaging) and only the luma
        # plane; Pillow picks the largest reduction leaving both sides >= FAST_DRAFT_SIDE.
        drafted = image.draft("L", (FAST_DRAFT_SIDE, FAST_DRAFT_SIDE))
        if drafted is not None:
            # The exact area of the original in the scaled image (its last pixel is partial).
            box = drafted[1]
    gray = image if image.mode == "L" else image.convert("L")
    if method is not None:
        # Rare; transposing first keeps the resize below identical in geometry to compat's.
        gray = gray.transpose(method)
        box = None
    # reducing_gap box-averages by an integer factor first and keeps the geometry exact, so the
    # final Lanczos step runs on an image only FAST_REDUCING_GAP times the hash size.
    return gray.resize(
        (HASH_WIDTH, HASH_HEIGHT),
        Image.Resampling.LANCZOS,
        box=box,
        reducing_gap=FAST_REDUCING_GAP,
    )


def dhash_image(image: Image.Image, mode: Mode = "fast") -> str:
    """The dHash of an open Pillow image, EXIF orientation applied first.

    >>> from PIL import Image
    >>> dhash_image(Image.new("RGB", (32, 32)), mode="compat")
    '0000000000000000'
    """
    if mode == "compat":
        return _bits(_compat(image))
    if mode == "fast":
        return _bits(_fast(image))
    raise ValueError(f"unknown dhash mode {mode!r}; expected one of {MODES}")


def _upright_size(image: Image.Image) -> tuple[int, int]:
    w, h = image.size
    return (h, w) if image.getexif().get(_ORIENTATION_TAG, 1) in _SWAPS_SIDES else (w, h)


def _classify(exc: BaseException) -> tuple[Reason, str]:
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return Reason.OVERSIZED, detail
    if isinstance(exc, UnidentifiedImageError):
        return Reason.NOT_AN_IMAGE, detail
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return Reason.MISSING, detail
    if isinstance(exc, IsADirectoryError):
        return Reason.NOT_A_FILE, detail
    if isinstance(exc, PermissionError):
        return Reason.UNREADABLE, detail
    if isinstance(exc, OSError) and exc.errno is not None:
        # An I/O error from the OS (EIO, ESTALE...); Pillow's own decoder errors carry no errno.
        return Reason.UNREADABLE, detail
    if isinstance(exc, MemoryError):
        return Reason.OVERSIZED, detail
    # Pillow reports a short read as "image file is truncated (N bytes not processed)" or
    # "Truncated File Read"; some decoders raise EOFError. Decoder failures on bad bytes
    # ("broken data stream", "unrecognized data stream contents") are corruption.
    if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
        return Reason.TRUNCATED, detail
    return Reason.CORRUPT, detail


def _check_file(path: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        reason, detail = _classify(exc)
        raise _Refused(reason, detail) from exc
    if not stat.S_ISREG(st.st_mode):
        raise _Refused(Reason.NOT_A_FILE, "not a regular file")
    if st.st_size == 0:
        raise _Refused(Reason.EMPTY, "zero bytes")


def _hash_open(path: str, mode: Mode, max_pixels: int) -> tuple[str, int, int]:
    with Image.open(path) as image:
        w, h = image.size
        if w * h > max_pixels:
            raise _Refused(Reason.OVERSIZED, f"{w}x{h} is over the limit of {max_pixels} pixels")
        width, height = _upright_size(image)
        return dhash_image(image, mode), width, height


def dhash_file(
    path: str | os.PathLike[str],
    *,
    mode: Mode = "fast",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageHash | HashError:
    """Hash one file; a missing, broken or oversized file gives a :class:`HashError`.

    ``seconds`` in the result is the wall time of this call (open, decode, hash). Pillow's
    global ``Image.MAX_IMAGE_PIXELS`` still applies too; its warning counts as oversized.
    """
    if mode not in MODES:
        raise ValueError(f"unknown dhash mode {mode!r}; expected one of {MODES}")
    name = os.fspath(path)
    start = time.perf_counter()
    try:
        _check_file(name)
        with warnings.catch_warnings():
            # Other Pillow warnings (odd EXIF, palette transparency) do not change the hash.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            digest, width, height = _hash_open(name, mode, max_pixels)
    except _Refused as refused:
        return HashError(name, refused.reason.value, refused.detail)
    except Exception as exc:  # a decoder may raise anything on hostile bytes; report, go on
        reason, detail = _classify(exc)
        return HashError(name, reason.value, detail)
    return ImageHash(name, digest, width, height, time.perf_counter() - start)
