"""JSON files and directories: canonical fingerprints, atomic restores, exclusions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from handrail.errors import ResourceError
from handrail.resources import Directory, JSONFile, verify_backup


def test_json_fingerprint_is_canonical(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text('{"x": 1, "y": [1, 2, {"z": "é"}]}')
    b.write_text(json.dumps({"y": [1, 2, {"z": "\u00e9"}], "x": 1}, indent=4, ensure_ascii=True))
    assert JSONFile("a", a).fingerprint().digest == JSONFile("b", b).fingerprint().digest
    b.write_text('{"x": 1.0, "y": [1, 2, {"z": "é"}]}')  # 1.0 is not 1 in canonical form
    fa, fb = JSONFile("a", a).fingerprint(), JSONFile("b", b).fingerprint()
    assert fa.digest != fb.digest
    assert fa.diff(fb) == ["key:x: changed"]


def test_unreadable_json_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    p.write_text('{\n  "a": 1,\n  "b": oops\n}\n')
    with pytest.raises(ResourceError, match=r"state\.json:3:\d+: not valid JSON"):
        JSONFile("s", p).validate()
    p.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ResourceError, match="not UTF-8"):
        JSONFile("s", p).validate()


def test_json_snapshot_restore(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text('{"a": 1}')
    f = JSONFile("s", p)
    backup = f.snapshot(tmp_path / "bk")
    verify_backup(f, backup, tmp_path / "scratch")
    p.write_text('{"a": 2}')
    f.restore(backup)
    assert p.read_text() == '{"a": 1}'


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (root / "sub" / "deeper" / "c.json").write_text("{}")
    (root / "empty").mkdir()
    os.symlink("a.txt", root / "link")
    (root / "app.db").write_text("owned by another resource")


def test_directory_fingerprint_sees_content_mode_and_empty_dirs(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _tree(root)
    d = Directory("d", root)
    fp = d.fingerprint()
    os.chmod(root / "a.txt", 0o600)
    assert d.fingerprint().diff(fp) == ["path:a.txt: changed"]
    os.chmod(root / "a.txt", 0o644)
    (root / "empty").rmdir()
    assert "path:empty: added" in d.fingerprint().diff(fp)


def test_directory_snapshot_restore_keeps_excluded_entries(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _tree(root)
    d = Directory("d", root, exclude=["*.db"])
    before = d.fingerprint()
    assert "path:app.db" not in before.parts
    backup = d.snapshot(tmp_path / "bk")
    verify_backup(d, backup, tmp_path / "scratch")
    (root / "a.txt").write_text("changed")
    (root / "new.txt").write_text("new")
    (root / "sub" / "deeper" / "c.json").unlink()
    (root / "app.db").write_text("the database moved on")
    d.restore(backup)
    assert d.fingerprint().digest == before.digest
    assert (root / "app.db").read_text() == "the database moved on"
    assert os.readlink(root / "link") == "a.txt"


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="does not exist"):
        Directory("d", tmp_path / "nope").validate()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResourceError, match="not a directory"):
        Directory("d", tmp_path / "file").validate()
