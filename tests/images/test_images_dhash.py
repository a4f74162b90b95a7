"""dHash: bit-for-bit compatibility with imagehash, the fast mode's drift, EXIF, broken files."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from handrail.images.dhash import (
    HashError,
    ImageHash,
    Reason,
    dhash_file,
    dhash_image,
    hamming,
    hex_from_bits,
)
from handrail.images.sample import SampleManifest, draw_image

STORE_FOR_TAG = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def reference(path: Path) -> str:
    """imagehash's dHash of the image as a viewer shows it (imagehash ignores EXIF itself)."""
    with Image.open(path) as im:
        upright = ImageOps.exif_transpose(im)
    return str(imagehash.dhash(upright))


def exif(tag: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = tag
    return e.tobytes()


def odd_images(root: Path) -> list[Path]:
    """Images in the modes and shapes that trip up conversions and resizes."""
    rng = np.random.default_rng(3)
    pic = draw_image(rng, 300, 200)
    cases: dict[str, tuple[Image.Image, str, dict[str, object]]] = {
        "tiny.png": (pic.resize((5, 3)), "PNG", {}),
        "one_row.png": (pic.resize((200, 1)), "PNG", {}),
        "tall.png": (pic.resize((20, 900)), "PNG", {}),
        "gray.jpg": (pic.convert("L"), "JPEG", {"quality": 85}),
        "cmyk.jpg": (pic.convert("CMYK"), "JPEG", {"quality": 90}),
        "bilevel.png": (pic.convert("1"), "PNG", {}),
        "la.png": (pic.convert("LA"), "PNG", {}),
        "rgba.webp": (pic.convert("RGBA"), "WEBP", {"quality": 80}),
        "palette.gif": (pic.quantize(32), "GIF", {}),
        "i16.png": (
            Image.fromarray((np.asarray(pic.convert("L")) * 200).astype(np.uint16)),
            "PNG",
            {},
        ),
        "flat.png": (Image.new("RGB", (64, 64), (120, 130, 140)), "PNG", {}),
        "progressive.jpg": (pic, "JPEG", {"progressive": True, "quality": 80}),
        "odd_size.jpg": (draw_image(rng, 1001, 757), "JPEG", {"quality": 92}),
        "tagged6.jpg": (pic.transpose(STORE_FOR_TAG[6]), "JPEG", {"exif": exif(6)}),
        "tagged5.png": (pic.transpose(STORE_FOR_TAG[5]), "PNG", {"exif": exif(5)}),
    }
    paths = []
    for name, (img, fmt, kwargs) in cases.items():
        path = root / name
        img.save(path, fmt, **kwargs)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def varied(sample: SampleManifest, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sample.hashable + odd_images(tmp_path_factory.mktemp("odd"))


def test_compat_equals_imagehash_bit_for_bit(varied: list[Path]) -> None:
    mismatches = []
    for path in varied:
        got = dhash_file(path, mode="compat")
        assert isinstance(got, ImageHash), got
        if got.dhash != reference(path):
            mismatches.append((path.name, got.dhash, reference(path)))
    assert mismatches == []
    assert len(varied) > 40


def test_fast_mode_stays_within_a_fraction_of_a_bit(varied: list[Path]) -> None:
    distances = []
    for path in varied:
        fast, compat = dhash_file(path), dhash_file(path, mode="compat")
        assert isinstance(fast, ImageHash)
        assert isinstance(compat, ImageHash)
        distances.append(hamming(fast.dhash, compat.dhash))
    assert np.mean(distances) < 0.75, distances
    assert max(distances) <= 4, distances


@pytest.mark.parametrize("tag", sorted(STORE_FOR_TAG))
@pytest.mark.parametrize("mode", ["fast", "compat"])
def test_exif_orientation_is_applied_before_hashing(tmp_path: Path, tag: int, mode: str) -> None:
    upright = draw_image(np.random.default_rng(tag), 360, 240)
    plain, stored = tmp_path / "upright.png", tmp_path / "stored.png"
    upright.save(plain)
    upright.transpose(STORE_FOR_TAG[tag]).save(stored, exif=exif(tag))
    a = dhash_file(plain, mode=mode)  # type: ignore[arg-type]
    b = dhash_file(stored, mode=mode)  # type: ignore[arg-type]
    assert isinstance(a, ImageHash)
    assert isinstance(b, ImageHash)
    assert b.dhash == a.dhash  # lossless storage: identical pixels once upright
    assert (b.width, b.height) == (360, 240)


def test_hex_format_matches_imagehash() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        bits = rng.random((8, 8)) < 0.5
        assert hex_from_bits(bits) == str(imagehash.ImageHash(bits))
    assert hex_from_bits(np.ones((8, 8), dtype=bool)) == "f" * 16
    assert hex_from_bits(np.eye(8, dtype=bool))[:2] == "80"  # first bit is the most significant


def test_dhash_image_on_known_pattern() -> None:
    # Brightness rising left to right: every pixel is brighter than its left neighbour.
    ramp = Image.fromarray(np.tile(np.arange(0, 255, 255 / 90, dtype=np.float64), (80, 1)))
    assert dhash_image(ramp.convert("L"), "compat") == "ffffffffffffffff"
    assert dhash_image(ramp.convert("L").transpose(Image.Transpose.FLIP_LEFT_RIGHT)) == "0" * 16


def test_hamming() -> None:
    assert hamming("0" * 16, "f" * 16) == 64
    assert hamming("0123456789abcdef", "0123456789abcdee") == 1
    with pytest.raises(ValueError, match="length"):
        hamming("00", "000")


def truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    draw_image(np.random.default_rng(1), 320, 240).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def truncated_png(path: Path) -> None:
    buf = io.BytesIO()
    draw_image(np.random.default_rng(2), 320, 240).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def header_only_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    draw_image(np.random.default_rng(1), 320, 240).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[:200])


def garbage_named_png(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def png_with_bad_header_crc(path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    raw[29] ^= 0xFF
    path.write_bytes(bytes(raw))


BROKEN: list[tuple[str, str, Callable[[Path], None], str]] = [
    ("missing", "gone.jpg", lambda p: None, Reason.MISSING),
    ("directory", "folder.jpg", lambda p: p.mkdir(), Reason.NOT_A_FILE),
    ("zero bytes", "empty.jpg", lambda p: p.write_bytes(b""), Reason.EMPTY),
    ("text named .jpg", "notes.jpg", lambda p: p.write_text("hello\n"), Reason.NOT_AN_IMAGE),
    ("random bytes", "noise.png", garbage_named_png, Reason.NOT_AN_IMAGE),
    ("bad PNG header", "bad.png", png_with_bad_header_crc, Reason.NOT_AN_IMAGE),
    ("truncated JPEG", "cut.jpg", truncated_jpeg, Reason.TRUNCATED),
    ("JPEG cut in its header", "stub.jpg", header_only_jpeg, Reason.TRUNCATED),
    ("truncated PNG", "cut.png", truncated_png, Reason.TRUNCATED),
]


@pytest.mark.parametrize(("case", "name", "make", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
@pytest.mark.parametrize("mode", ["fast", "compat"])
def test_broken_files_give_a_reason_never_an_exception(
    tmp_path: Path, case: str, name: str, make: Callable[[Path], None], reason: str, mode: str
) -> None:
    path = tmp_path / name
    make(path)
    got = dhash_file(path, mode=mode)  # type: ignore[arg-type]
    assert isinstance(got, HashError), got
    assert (got.path, got.reason) == (str(path), reason), got.detail
    assert got.detail


def test_sample_broken_files_have_the_planted_reasons(sample: SampleManifest) -> None:
    got = {p: dhash_file(p) for p in sample.broken}
    assert {p: r.reason for p, r in got.items() if isinstance(r, HashError)} == sample.broken


def test_pixel_limit_refuses_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (2000, 1500)).save(path)
    got = dhash_file(path, max_pixels=1_000_000)
    assert isinstance(got, HashError)
    assert got.reason == Reason.OVERSIZED
    assert "2000x1500" in got.detail
    assert isinstance(dhash_file(path, max_pixels=3_000_000), ImageHash)


def test_pillow_bomb_warning_counts_as_oversized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (1000, 1000)).save(path)
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; both are "oversized".
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600_000)
    warned = dhash_file(path, max_pixels=10**9)
    assert isinstance(warned, HashError)
    assert warned.reason == Reason.OVERSIZED
    assert "DecompressionBombWarning" in warned.detail
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400_000)
    raised = dhash_file(path, max_pixels=10**9)
    assert isinstance(raised, HashError)
    assert raised.reason == Reason.OVERSIZED
    assert "DecompressionBombError" in raised.detail


def test_unknown_mode_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dhash mode"):
        dhash_file(tmp_path / "x.jpg", mode="slow")  # type: ignore[arg-type]


def test_an_io_error_is_unreadable_and_does_not_escape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "flaky.png"
    Image.new("RGB", (20, 20)).save(path)

    def failing_open(*args: object, **kwargs: object) -> Image.Image:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Image, "open", failing_open)
    got = dhash_file(path)
    assert isinstance(got, HashError)
    assert got.reason == Reason.UNREADABLE
    assert "Input/output error" in got.detail
