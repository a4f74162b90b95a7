"""A generated image library with planted near-copies and broken files, for tests and benches.

Every picture is drawn from a seeded NumPy generator (a low-frequency colour field, a gradient,
shapes, text-like strokes, noise), so unrelated pictures have unrelated hashes. Files come in
JPEG, PNG and WebP, in several sizes and pixel modes, some stored sideways with an EXIF
orientation tag. Planted copies (exact, recompressed, resized, cropped, slightly rotated, and
stored rotated with a tag that undoes it) and broken files (truncated, empty, text named
``.jpg``, a path that does not exist) are listed in the returned :class:`SampleManifest`.
The same ``seed`` and parameters give byte-identical files.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from .dhash import Reason

__all__ = [
    "COPY_KINDS",
    "PlantedCopy",
    "SampleManifest",
    "draw_image",
    "make_sample_library",
]

# What each planted copy is; every kind is expected within the default threshold of 10.
COPY_KINDS: Final = ("exact", "recompressed", "resized", "cropped", "rotated", "exif_rotated")

# (width, height) of originals; landscape, portrait and square, as cameras and scans give.
SIZES: Final = (
    (320, 240),
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (480, 640),
    (600, 600),
)

_ORIENTATION_TAG = 0x0112
# How to store an upright picture so that the given orientation tag makes it upright again.
_STORE_FOR_TAG = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PlantedCopy:
    """``copy`` was derived from ``original`` by ``kind`` (one of :data:`COPY_KINDS`)."""

    original: Path
    copy: Path
    kind: str


@dataclass(slots=True)
class SampleManifest:
    """What :func:`make_sample_library` planted, so tests can assert recall and error reasons."""

    root: Path
    library: Path
    images: list[Path] = field(default_factory=list)  # every path listed in library.json
    originals: list[Path] = field(default_factory=list)
    copies: list[PlantedCopy] = field(default_factory=list)
    broken: dict[Path, str] = field(default_factory=dict)  # path -> expected Reason value
    oriented: list[Path] = field(default_factory=list)  # originals stored with an EXIF tag

    @property
    def hashable(self) -> list[Path]:
        """The listed paths that are real, readable images."""
        return [p for p in self.images if p not in self.broken]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "library": str(self.library),
            "originals": [str(p) for p in self.originals],
            "copies": [
                {"original": str(c.original), "copy": str(c.copy), "kind": c.kind}
                for c in self.copies
            ],
            "broken": {str(p): r for p, r in self.broken.items()},
            "oriented": [str(p) for p in self.oriented],
        }


def draw_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """One RGB picture with structure at every scale, different for every draw of ``rng``."""
    # A coarse random colour grid upsampled smoothly decides the 9x8 dHash bits; the rest adds
    # the edges and texture that make resizing and recompression behave as on real pictures.
    gw, gh = int(rng.integers(3, 10)), int(rng.integers(3, 9))
    grid = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
    img = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    ramp = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :, None]
    arr = arr + ramp * rng.uniform(-40, 40, size=3).astype(np.float32)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")

    draw = ImageDraw.Draw(img)
    side = min(width, height)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(side // 10, side // 2)), int(rng.integers(side // 10, side // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=fill)
        else:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=fill)
    # Text-like strokes: short dark dashes in lines, as on a scanned page or a sign.
    tx, ty = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    line_h = max(4, side // 40)
    ink = tuple(int(v) for v in rng.integers(0, 80, size=3))
    for row in range(int(rng.integers(3, 10))):
        x = tx
        y = ty + row * line_h * 2
        while x < min(width, tx + width // 2):
            word = int(rng.integers(line_h, line_h * 5))
            draw.rectangle((x, y, x + word, y + line_h), fill=ink)
            x += word + line_h
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, size=(height, width, 3)).astype(
        np.int16
    )
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _exif_with_orientation(tag: int) -> bytes:
    exif = Image.Exif()
    exif[_ORIENTATION_TAG] = tag
    return exif.tobytes()


def _save(img: Image.Image, path: Path, fmt: str, *, quality: int = 90, exif: bytes = b"") -> None:
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {"exif": exif} if exif else {}
    if fmt == "JPEG":
        img.convert("RGB" if img.mode not in ("L", "RGB") else img.mode).save(
            buf, "JPEG", quality=quality, **kwargs
        )
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=quality, method=4, **kwargs)
    else:
        img.save(buf, "PNG", **kwargs)
    path.write_bytes(buf.getvalue())


def _upright(path: Path) -> Image.Image:
    with Image.open(path) as im:
        out = ImageOps.exif_transpose(im)
    assert out is not None
    return out.convert("RGB")


def _variant(kind: str, src: Path, upright: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = upright.size
    if kind == "recompressed":
        return upright
    if kind == "resized":
        scale = float(rng.uniform(0.4, 0.75))
        size = (max(16, round(w * scale)), max(16, round(h * scale)))
        return upright.resize(size, Image.Resampling.LANCZOS)
    if kind == "cropped":
        # 1-2% off each side: a trimmed border, not a new framing (3% reached distance 9).
        dx, dy = round(w * rng.uniform(0.01, 0.02)), round(h * rng.uniform(0.01, 0.02))
        return upright.crop((dx, dy, w - dx, h - dy))
    if kind == "rotated":
        # A scan or photo set slightly askew; 2.5 degrees already reached distance 8.
        angle = float(rng.uniform(0.5, 1.5)) * (1 if rng.random() < 0.5 else -1)
        fill = tuple(int(v) for v in np.asarray(upright).reshape(-1, 3).mean(axis=0))
        return upright.rotate(angle, Image.Resampling.BICUBIC, fillcolor=fill)
    raise ValueError(f"unknown copy kind {kind!r}")


def make_sample_library(
    root: str | Path,
    *,
    count: int = 2000,
    copies: int | None = None,
    seed: int = 0,
    sizes: tuple[tuple[int, int], ...] = SIZES,
    broken: bool = True,
) -> SampleManifest:
    """Write ``count`` originals, ``copies`` planted copies and broken files under ``root``.

    Files go to ``root/images/img_NNNNN.<ext>`` with numbers shuffled so a copy does not sit
    next to its original, and ``root/library.json`` lists every path (absolute), including the
    missing one. ``copies`` defaults to ``count // 10``, kinds in :data:`COPY_KINDS` order.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    root = Path(root)
    n_copies = count // 10 if copies is None else copies
    if n_copies > count:
        raise ValueError("cannot plant more copies than there are originals")
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    n_broken = 5 if broken else 0
    numbers = rng.permutation(count + n_copies + n_broken) + 1
    next_number = iter(int(n) for n in numbers)
    manifest = SampleManifest(root=root, library=root / "library.json")
    formats = ("JPEG", "JPEG", "JPEG", "PNG", "WEBP")  # JPEG-heavy, like a photo library
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}

    for i in range(count):
        width, height = sizes[int(rng.integers(0, len(sizes)))]
        picture = draw_image(rng, width, height)
        fmt = formats[int(rng.integers(0, len(formats)))]
        if fmt == "PNG":
            # Mixed pixel modes exercise the grayscale conversion in both hash modes.
            pick = i % 4
            if pick == 1:
                picture = picture.convert("L")
            elif pick == 2:
                picture = picture.convert("RGBA")
            elif pick == 3:
                picture = picture.quantize(64).convert("P")
        tag = 0
        if i % 9 == 4:
            tag = (6, 8, 3, 2)[(i // 9) % 4]
            picture = picture.transpose(_STORE_FOR_TAG[tag])
        path = images_dir / f"img_{next(next_number):05d}.{ext[fmt]}"
        quality = int(rng.integers(80, 96))
        _save(picture, path, fmt, quality=quality, exif=_exif_with_orientation(tag) if tag else b"")
        manifest.originals.append(path)
        if tag:
            manifest.oriented.append(path)

    # Copies of distinct originals, spread over the whole set.
    sources = [int(i) for i in rng.choice(count, size=n_copies, replace=False)] if n_copies else []
    for k, src_index in enumerate(sources):
        kind = COPY_KINDS[k % len(COPY_KINDS)]
        src = manifest.originals[src_index]
        if kind == "exact":
            dst = images_dir / f"img_{next(next_number):05d}{src.suffix}"
            shutil.copyfile(src, dst)
        else:
            upright = _upright(src)
            if kind == "exif_rotated":
                dst = images_dir / f"img_{next(next_number):05d}.jpg"
                # Stored turned a quarter left; tag 6 tells a viewer to turn it back right.
                stored = upright.transpose(_STORE_FOR_TAG[6])
                _save(stored, dst, "JPEG", quality=90, exif=_exif_with_orientation(6))
            else:
                variant = _variant(kind, src, upright, rng)
                fmt = "JPEG" if kind == "recompressed" else ("PNG", "JPEG", "WEBP")[k % 3]
                dst = images_dir / f"img_{next(next_number):05d}.{ext[fmt]}"
                quality = int(rng.integers(40, 60)) if kind == "recompressed" else 90
                _save(variant, dst, fmt, quality=quality)
        manifest.copies.append(PlantedCopy(src, dst, kind))

    if broken:
        _plant_broken(manifest, images_dir, next_number)

    listed = manifest.originals + [c.copy for c in manifest.copies] + list(manifest.broken)
    manifest.images = sorted(listed)
    _write_library(manifest)
    return manifest


def _plant_broken(manifest: SampleManifest, images_dir: Path, numbers: Any) -> None:
    donor = next((p for p in manifest.originals if p.suffix == ".jpg"), None)
    truncated = images_dir / f"img_{next(numbers):05d}.jpg"
    if donor is not None:
        data = donor.read_bytes()
        truncated.write_bytes(data[: len(data) * 2 // 3])
    else:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, "JPEG")
        truncated.write_bytes(buf.getvalue()[:300])
    manifest.broken[truncated] = Reason.TRUNCATED.value

    empty = images_dir / f"img_{next(numbers):05d}.jpg"
    empty.write_bytes(b"")
    manifest.broken[empty] = Reason.EMPTY.value

    text = images_dir / f"img_{next(numbers):05d}.jpg"
    text.write_text("this is a shopping list, not a photo\neggs\nmilk\n", encoding="utf-8")
    manifest.broken[text] = Reason.NOT_AN_IMAGE.value

    # A PNG whose compressed pixel data is scrambled: it opens (the header is intact) and the
    # decoder then fails, unlike a bad header, which Pillow reports as "not an image".
    corrupt = images_dir / f"img_{next(numbers):05d}.png"
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    start = raw.index(b"IDAT") + 4 + 200
    raw[start : start + 16] = bytes(b ^ 0x5A for b in raw[start : start + 16])
    corrupt.write_bytes(bytes(raw))
    manifest.broken[corrupt] = Reason.CORRUPT.value

    missing = images_dir / f"img_{next(numbers):05d}.jpg"  # listed, never written
    manifest.broken[missing] = Reason.MISSING.value


def _write_library(manifest: SampleManifest) -> None:
    entries = []
    for n, path in enumerate(manifest.images):
        entry: dict[str, Any] = {
            "path": str(path),
            "filename": path.name,
            "added_at": (_EPOCH + timedelta(minutes=n)).isoformat(),
        }
        if path.exists() and path not in manifest.broken:
            with Image.open(path) as im:
                entry["format"] = im.format
                entry["width"], entry["height"] = im.size
        entries.append(entry)
    manifest.library.write_text(json.dumps({"images": entries}, indent=2) + "\n", encoding="utf-8")
