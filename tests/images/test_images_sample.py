"""The sample-library maker: deterministic, listed in library.json, honest manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from handrail.images.sample import COPY_KINDS, SampleManifest, make_sample_library

TINY = ((160, 120), (120, 160))


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "library.json"
    }


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = make_sample_library(tmp_path / "a", count=8, copies=6, seed=5, sizes=TINY)
    b = make_sample_library(tmp_path / "b", count=8, copies=6, seed=5, sizes=TINY)
    c = make_sample_library(tmp_path / "c", count=8, copies=6, seed=6, sizes=TINY)
    assert digest_tree(a.root) == digest_tree(b.root)
    assert digest_tree(a.root) != digest_tree(c.root)
    assert [p.name for p in a.images] == [p.name for p in b.images]


def test_library_json_lists_every_image(sample: SampleManifest) -> None:
    doc = json.loads(sample.library.read_text(encoding="utf-8"))
    entries = doc["images"]
    assert [e["path"] for e in entries] == [str(p) for p in sample.images]
    assert all(e["filename"] == Path(e["path"]).name for e in entries)
    missing = [p for p, r in sample.broken.items() if r == "missing"]
    assert len(missing) == 1
    assert not missing[0].exists()
    assert str(missing[0]) in {e["path"] for e in entries}
    for entry in entries:
        if Path(entry["path"]) not in sample.broken:
            with Image.open(entry["path"]) as im:
                assert (entry["width"], entry["height"], entry["format"]) == (*im.size, im.format)


def test_manifest_describes_what_was_planted(sample: SampleManifest) -> None:
    assert len(sample.originals) == 30
    assert len(sample.copies) == 12
    assert [c.kind for c in sample.copies] == list(COPY_KINDS) * 2
    assert set(sample.broken.values()) == {
        "truncated",
        "empty",
        "not_an_image",
        "corrupt",
        "missing",
    }
    assert len({c.original for c in sample.copies}) == 12  # each copy from a distinct original
    formats = set()
    for p in sample.hashable:
        with Image.open(p) as im:
            formats.add(im.format)
    assert formats == {"JPEG", "PNG", "WEBP"}
    assert sample.oriented  # some originals are stored sideways with a tag
    for p in sample.oriented:
        with Image.open(p) as im:
            assert im.getexif().get(0x0112, 1) != 1
    exif_copies = [c.copy for c in sample.copies if c.kind == "exif_rotated"]
    for p in exif_copies:
        with Image.open(p) as im:
            assert im.getexif().get(0x0112) == 6
    exact = [c for c in sample.copies if c.kind == "exact"]
    assert all(c.copy.read_bytes() == c.original.read_bytes() for c in exact)
    doc = sample.to_json()
    assert len(doc["copies"]) == 12
    assert doc["library"] == str(sample.library)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"count": 0}, "count"), ({"count": 2, "copies": 3}, "more copies")],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_sample_library(tmp_path, **kwargs)  # type: ignore[arg-type]
