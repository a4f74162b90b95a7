"""Owner, group and mode survive everything handrail writes or restores.

An application running as its own user must still own its config and its files after a
transform, a rollback, `backups restore`, a quarantine and its rollback. Files here are
chowned to ids that belong to nobody on the machine (1234:2345) with modes such as 0640,
02775 (setgid directory) and 0664 (group-writable), and judged with ``tree_digest`` from
tests/digests.py (computed without handrail). The tests run as root, as CI does.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from handrail.errors import ResourceError
from handrail.resources import Directory, JSONFile
from handrail.resources import directory as directory_mod

from .digests import tree_digest, unchanged
from .helpers import HANDRAIL, cli_proc, write

UID, GID = 1234, 2345

TRANSFORM = """
from pathlib import Path
from handrail import JSONFile, Runbook
from handrail.steps.json_transform import TransformJSON

here = Path(__file__).parent
config = JSONFile("config", here / "app" / "config.json")
runbook = Runbook("bump", steps=[TransformJSON("bump", config, lambda d: {**d, "v": d["v"] + 1})])
"""

QUARANTINE = """
from pathlib import Path
from handrail import Directory, Runbook
from handrail.steps.quarantine import QuarantineDelete

here = Path(__file__).parent
files = Directory("files", here / "app" / "files")
runbook = Runbook("clean", steps=[QuarantineDelete("clean", files, select=["cache", "a.txt"],
    cross_device=CROSS)])
"""


def owned(path: Path, mode: int, uid: int = UID, gid: int = GID) -> Path:
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)
    return path


def app_tree(root: Path) -> Path:
    """files/ (02775, setgid) with a.txt 0640, cache/ 0750 with entry 0664, keep.txt 0600,
    and a symlink owned by the app."""
    files = root / "files"
    write(files / "a.txt", "alpha\n")
    write(files / "cache" / "entry", "cached\n")
    write(files / "keep.txt", "kept\n")
    os.symlink("keep.txt", files / "latest")
    owned(files / "a.txt", 0o640)
    owned(files / "cache" / "entry", 0o664)
    owned(files / "cache", 0o750)
    owned(files / "keep.txt", 0o600, gid=0)
    os.chown(files / "latest", UID, GID, follow_symlinks=False)
    owned(files, 0o2775)
    return files


def perms(path: Path) -> tuple[object, ...]:
    """(mode, uid, gid) of one file, from tree_digest."""
    return tree_digest(path)["."][-3:]


def test_transform_apply_rollback_and_restore_keep_owner(tmp_path: Path) -> None:
    config = write(tmp_path / "app" / "config.json", '{"v": 1}\n')
    owned(config, 0o640)
    rb = write(tmp_path / "rb.py", TRANSFORM)
    with unchanged(tmp_path / "app"):
        proc = cli_proc("run", rb, "--yes")
        assert proc.returncode == 0, proc.stderr
        assert config.read_text() != '{"v": 1}\n'
        assert perms(config) == (0o640, UID, GID)  # after apply
        proc = cli_proc("rollback", rb)
        assert proc.returncode == 0, proc.stderr  # after rollback: unchanged() checks
    with unchanged(tmp_path / "app"):
        proc = cli_proc("run", rb, "--yes", "--new")
        assert proc.returncode == 0, proc.stderr
        assert perms(config) == (0o640, UID, GID)
        proc = cli_proc("backups", "restore", rb, "--yes")
        assert proc.returncode == 0, proc.stdout + proc.stderr  # after backups restore


def test_json_restore_gives_a_deleted_file_back_to_its_owner(tmp_path: Path) -> None:
    config = owned(write(tmp_path / "config.json", '{"v": 1}\n'), 0o640)
    before = tree_digest(config)
    f = JSONFile("config", config)
    backup = f.snapshot(tmp_path / "bk")
    config.unlink()  # nothing left to copy the owner from: the backup recorded it
    f.restore(backup)
    assert tree_digest(config) == before


@pytest.mark.parametrize("cross", ["'refuse'", "'copy'"])
def test_quarantine_rollback_and_directory_restore_keep_owners(
    tmp_path: Path, cross: str, request: pytest.FixtureRequest
) -> None:
    if cross == "'copy'":
        app = request.getfixturevalue("other_fs")
        if app.stat().st_dev == tmp_path.stat().st_dev:
            pytest.skip("/dev/shm is on the same filesystem as the test directory")
        (tmp_path / "app").symlink_to(app)
    else:
        (tmp_path / "app").mkdir()
    files = app_tree(tmp_path / "app")
    rb = write(tmp_path / "rb.py", QUARANTINE.replace("CROSS", cross))
    with unchanged(files):
        proc = cli_proc("run", rb, "--yes", "--allow-destructive")
        assert proc.returncode == 0, proc.stderr
        assert not (files / "cache").exists()
        proc = cli_proc("rollback", rb)
        assert proc.returncode == 0, proc.stderr  # QuarantineDelete rollback
    with unchanged(files):
        proc = cli_proc("run", rb, "--yes", "--allow-destructive", "--new")
        assert proc.returncode == 0, proc.stderr
        (files / "a.txt").write_text("recreated by someone\n")
        proc = cli_proc("backups", "restore", rb, "--yes")
        assert proc.returncode == 0, proc.stdout + proc.stderr  # Directory restore


@pytest.fixture
def other_fs() -> Iterator[Path]:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    path = Path(tempfile.mkdtemp(prefix="handrail-test-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("has_filter", [True, False], ids=["tarfile filters", "Python 3.11.0-3"])
def test_directory_restore_on_pythons_with_and_without_tar_filters(
    tmp_path: Path, has_filter: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback for Pythons before tarfile's extraction filters restores exactly."""
    if has_filter and not hasattr(tarfile, "data_filter"):
        pytest.fail("this Python has no tarfile filters: run the suite on 3.11.4+")
    monkeypatch.setattr(directory_mod, "HAS_TAR_FILTER", has_filter)
    files = app_tree(tmp_path)
    before = tree_digest(files)
    d = Directory("files", files)
    backup = d.snapshot(tmp_path / "bk")
    shutil.rmtree(files)
    d.restore(backup)
    assert tree_digest(files) == before


def _archive(path: Path, *members: tuple[str, str, str]) -> Path:
    """A tar with (name, kind, link target) members: kind 'f' file, 'l' symlink, 'h' hard."""
    with tarfile.open(path, "w") as tar:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "f":
                tar.addfile(info, io.BytesIO(b""))
                continue
            info.type = tarfile.SYMTYPE if kind == "l" else tarfile.LNKTYPE
            info.linkname = target
            tar.addfile(info)
    return path


@pytest.mark.parametrize("has_filter", [True, False], ids=["tarfile filters", "Python 3.11.0-3"])
@pytest.mark.parametrize(
    ("members", "problem"),
    [
        ([("/etc/evil", "f", "")], "an absolute path"),
        ([("../evil", "f", "")], "a path leaving the directory"),
        ([("a/../../evil", "f", "")], "a path leaving the directory"),
        ([("out", "l", "/tmp"), ("out/evil", "f", "")], "written through a symlink"),
        ([("hard", "h", "/etc/passwd")], "a hard link to '/etc/passwd'"),
    ],
)
def test_extraction_refuses_archives_that_write_outside(
    tmp_path: Path,
    has_filter: bool,
    members: list[tuple[str, str, str]],
    problem: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(directory_mod, "HAS_TAR_FILTER", has_filter)
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = _archive(tmp_path / "x.tar", *members)
    with (
        unchanged(tmp_path),
        tarfile.open(archive) as tar,
        pytest.raises(ResourceError, match=problem),
    ):
        directory_mod.safe_extract(tar, dest)


def test_symlinks_pointing_anywhere_are_restored_as_links(tmp_path: Path) -> None:
    """A directory's own symlink to an absolute path is data: restored as it was."""
    files = tmp_path / "files"
    write(files / "a.txt", "a\n")
    os.symlink("/etc/hostname", files / "host")
    os.symlink("../elsewhere", files / "up")
    before = tree_digest(files)
    d = Directory("files", files)
    backup = d.snapshot(tmp_path / "bk")
    shutil.rmtree(files)
    d.restore(backup)
    assert tree_digest(files) == before


def test_owner_that_cannot_be_kept_leaves_the_file_alone(tmp_path: Path) -> None:
    """Without the right to chown (a non-root runner, here root without CAP_CHOWN), the
    transform refuses instead of handing the app's config to the runner."""
    config = owned(write(tmp_path / "app" / "config.json", '{"v": 1}\n'), 0o640)
    rb = write(tmp_path / "rb.py", TRANSFORM)
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    with unchanged(tmp_path / "app"):
        proc = subprocess.run(
            [
                "setpriv",
                "--bounding-set=-chown",
                "--inh-caps=-chown",
                *HANDRAIL,
                "run",
                str(rb),
                "--yes",
            ],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode != 0
        assert f"cannot replace {config} keeping its owner {UID}:{GID}" in proc.stderr
    assert not list(config.parent.glob("*.handrail-tmp"))


def test_replacing_through_a_symlink_takes_the_owner_of_what_it_points_to(
    tmp_path: Path,
) -> None:
    """A config reached through a symlink: the new file gets the real file's owner and
    mode, never the link's 0777."""
    from handrail.resources._files import atomic_write_bytes

    real = owned(write(tmp_path / "real.json", "{}\n"), 0o640)
    link = tmp_path / "config.json"
    link.symlink_to(real)
    atomic_write_bytes(link, b'{"v": 2}\n')
    assert perms(link) == (0o640, UID, GID)
    assert link.read_text() == '{"v": 2}\n'
