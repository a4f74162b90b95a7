"""Bad files and paths, through the real CLI: `plan` and `run` both exit 2 before the first
change, with a message naming the file, line, key or path and saying what to do.

Every case builds the same small world under ``data/`` (a directory the runbook cleans,
a JSON config it transforms, a JSON record file it imports, and a file *outside* the
directory), breaks one thing, and checks with digests computed without handrail that
nothing under ``data/`` changed, and that `run` stopped before taking any backup.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .digests import unchanged
from .helpers import cli_proc, write

QUARANTINE = """
from pathlib import Path
from handrail import Directory, Runbook
from handrail.steps.quarantine import QuarantineDelete

here = Path(__file__).parent
files = Directory("files", here / "data" / "files")
runbook = Runbook("clean", steps=[QuarantineDelete("clean", files, select=SELECT)])
"""

TRANSFORM = """
from pathlib import Path
from handrail import JSONFile, Runbook
from handrail.steps.json_transform import TransformJSON

here = Path(__file__).parent
config = JSONFile("config", here / "data" / "config.json")
runbook = Runbook("bump", steps=[TransformJSON("bump", config, lambda d: {**d, "v": 2})])
"""

IMPORT = """
from pathlib import Path
from handrail import JSONFile, Runbook, SQLite
from handrail.steps.json_import import ImportJSON

here = Path(__file__).parent
records = JSONFile("records", here / "data" / "records.json")
db = SQLite("app", here / "data" / "app.db")

def reader(doc, name):
    from handrail.steps.json_import import SourceRecord
    return [SourceRecord(name, str(r["id"]), r) for r in doc]

runbook = Runbook("load", steps=[ImportJSON("load", source=records, reader=reader, db=db,
    table="people", key="id", mapper=lambda rec: dict(rec.value))])
"""


def world(data: Path) -> None:
    """data/files/{a.txt, sub/b.txt}, data/outside/secret.txt, config.json, records.json,
    app.db."""
    write(data / "files" / "a.txt", "alpha\n")
    write(data / "files" / "sub" / "b.txt", "beta\n")
    write(data / "outside" / "secret.txt", "not the directory's, not in its backup\n")
    write(data / "config.json", '{"name": "app", "v": 1}\n')
    write(data / "records.json", '[{"id": 1, "name": "ann"}]\n')
    conn = sqlite3.connect(data / "app.db")
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()


def json_text(text: str, name: str = "config.json") -> Callable[[Path], None]:
    return lambda data: write(data / name, text)


def json_bytes(raw: bytes) -> Callable[[Path], None]:
    return lambda data: (data / "config.json").write_bytes(raw)


def link_dir_out(data: Path) -> None:
    os.symlink("../outside", data / "files" / "link")


def link_file_out(data: Path) -> None:
    os.symlink(str(data / "outside" / "secret.txt"), data / "files" / "leak")


def config_is_dir(data: Path) -> None:
    (data / "config.json").unlink()
    (data / "config.json").mkdir()


def no_config(data: Path) -> None:
    (data / "config.json").unlink()


def files_is_file(data: Path) -> None:
    for p in sorted((data / "files").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (data / "files").rmdir()
    (data / "files").write_text("a file where a directory should be\n")


def files_unreadable(data: Path) -> None:
    os.chmod(data / "files", 0)


# Root reads anything; this runs the CLI as root *without* the capabilities that let it
# ignore permissions (the interpreter lives under /root here, out of reach of `nobody`).
NO_DAC = [
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search",
    "--inh-caps=-dac_override,-dac_read_search",
]

OUT = "{data}/outside/secret.txt"

# (case, runbook, select, setup, what the message must name, what it must tell to do)
CASES = [
    (
        "symlinked directory leads out",
        QUARANTINE,
        '["sub/b.txt", "link/secret.txt"]',
        link_dir_out,
        ["'link/secret.txt'", OUT, "outside the directory"],
        "remove it from the selection",
    ),
    (
        "symlink to a file outside",
        QUARANTINE,
        '["leak"]',
        link_file_out,
        ["'leak'", OUT, "outside the directory"],
        "replace the symlink",
    ),
    (
        "select with ../",
        QUARANTINE,
        '["sub/../../outside/secret.txt"]',
        None,
        ["'sub/../../outside/secret.txt'", "{data}/files", "without '..'"],
        "select paths relative to the directory",
    ),
    (
        "absolute select",
        QUARANTINE,
        f'["{OUT}"]',
        None,
        [f"'{OUT}'", "must be a path inside"],
        "select paths relative to the directory",
    ),
    (
        "duplicate key at top level",
        TRANSFORM,
        None,
        json_text('{\n  "name": "app",\n  "v": 1,\n  "name": "other"\n}\n'),
        ["{data}/config.json:4:3", "duplicate key 'name'"],
        "remove or rename one of the two",
    ),
    (
        "duplicate key nested",
        TRANSFORM,
        None,
        json_text('{"db": {"host": "a",\n "port": 1, "host": "b"}, "v": 1}'),
        ["{data}/config.json:2:13", "duplicate key 'host' in $.db"],
        "remove or rename one of the two",
    ),
    (
        "NaN",
        TRANSFORM,
        None,
        json_text('{"v": 1,\n "ratio": NaN}'),
        ["{data}/config.json:2:11", "NaN at $.ratio"],
        "allow_nan=True",
    ),
    (
        "Infinity",
        TRANSFORM,
        None,
        json_text('{"v": 1, "limit": [1, Infinity]}'),
        ["{data}/config.json:1:23", "Infinity at $.limit[1]"],
        "replace it",
    ),
    (
        "-Infinity",
        TRANSFORM,
        None,
        json_text('{"v": 1, "floor": -Infinity}'),
        ["{data}/config.json:1:19", "-Infinity at $.floor"],
        "replace it",
    ),
    (
        "JSON truncated",
        TRANSFORM,
        None,
        json_text('{"name": "app",\n "v": [1, 2'),
        ["{data}/config.json:2:", "not valid JSON"],
        "fix the file",
    ),
    (
        "JSON not UTF-8",
        TRANSFORM,
        None,
        json_bytes(b'{"name": "caf\xe9", "v": 1}'),
        ["{data}/config.json", "not UTF-8 text (byte 13)"],
        "fix the file's encoding",
    ),
    (
        "JSON file is a directory",
        TRANSFORM,
        None,
        config_is_dir,
        ["{data}/config.json", "is a directory"],
        "check the path",
    ),
    (
        "JSON file missing",
        TRANSFORM,
        None,
        no_config,
        ["{data}/config.json", "does not exist"],
        "create=True",
    ),
    (
        "duplicate key inside an imported record",
        IMPORT,
        None,
        json_text(
            '[{"id": 1, "name": "ann"},\n {"id": 2, "name": "bob", "name": "rob"}]', "records.json"
        ),
        ["{data}/records.json:2:27", "duplicate key 'name' in $[1]"],
        "remove or rename one of the two",
    ),
    (
        "Directory is a file",
        QUARANTINE,
        '["a.txt"]',
        files_is_file,
        ["{data}/files", "is not a directory"],
        "check the path",
    ),
    (
        "Directory not readable by the running user",
        QUARANTINE,
        '["a.txt"]',
        files_unreadable,
        ["{data}/files", "is not readable by uid 0"],
        "run handrail as a user that can read",
    ),
]


@pytest.mark.parametrize(
    ("case", "runbook", "select", "setup", "names", "todo"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_bad_file_input_exits_2_before_any_change(
    tmp_path: Path,
    case: str,
    runbook: str,
    select: str | None,
    setup: Callable[[Path], None] | None,
    names: list[str],
    todo: str,
) -> None:
    data = tmp_path / "data"
    world(data)
    if setup is not None:
        setup(data)
    rb = write(tmp_path / "rb.py", runbook.replace("SELECT", (select or "[]").format(data=data)))
    prefix = NO_DAC if case.endswith("running user") else []
    try:
        with unchanged(data):
            for args in (["plan"], ["run", "--yes", "--allow-destructive"]):
                proc = run_cli(prefix, *args, rb)
                assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
                message = proc.stderr
                for part in names:
                    assert part.format(data=data) in message, (args, part, message)
                assert "hint:" in message, message
                assert todo in message, message
                assert "Traceback" not in message
        # run stopped before its first change: no run, no backup
        assert not (tmp_path / ".handrail" / "backups").exists() or not any(
            (tmp_path / ".handrail" / "backups").iterdir()
        )
    finally:
        os.chmod(data / "files", 0o755) if (data / "files").is_dir() else None


def run_cli(prefix: list[str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    if not prefix:
        return cli_proc(*map(str, args))
    from .helpers import HANDRAIL

    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [*prefix, *HANDRAIL, *map(str, args)],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_selection_from_a_function_leading_out_moves_nothing(tmp_path: Path) -> None:
    """A function's selection is only known when the step runs it: `plan` and `run` (its
    step validation, before the first change) exit 2 naming the user's own paths."""
    data = tmp_path / "data"
    world(data)
    link_dir_out(data)
    rb = write(tmp_path / "rb.py", QUARANTINE.replace("SELECT", 'lambda ctx: ["link/secret.txt"]'))
    with unchanged(data):
        proc = cli_proc("plan", rb)
        assert proc.returncode == 2, proc.stderr
        assert f"leads to {data}/outside/secret.txt" in proc.stderr
        proc = cli_proc("run", rb, "--yes", "--allow-destructive")
        assert proc.returncode == 2, proc.stderr
        assert f"leads to {data}/outside/secret.txt" in proc.stderr
        assert "remove it from the selection" in proc.stderr
    assert not (tmp_path / ".handrail" / "backups").exists() or not any(
        (tmp_path / ".handrail" / "backups").iterdir()
    )


def test_symlink_inside_is_moved_as_a_link_and_comes_back(tmp_path: Path) -> None:
    """A selected symlink whose target is inside the directory moves itself, never its
    target; rollback puts it back."""
    data = tmp_path / "data"
    world(data)
    os.symlink("sub/b.txt", data / "files" / "alias")
    rb = write(tmp_path / "rb.py", QUARANTINE.replace("SELECT", '["alias"]'))
    with unchanged(data):
        proc = cli_proc("run", rb, "--yes", "--allow-destructive")
        assert proc.returncode == 0, proc.stderr
        assert not os.path.lexists(data / "files" / "alias")
        assert (data / "files" / "sub" / "b.txt").read_text() == "beta\n"
        proc = cli_proc("rollback", rb)
        assert proc.returncode == 0, proc.stderr


def test_allow_nan_reads_backs_up_and_restores(tmp_path: Path) -> None:
    """A resource that opts in to NaN is read, fingerprinted, backed up and restored."""
    data = tmp_path / "data"
    world(data)
    write(data / "config.json", '{"v": 1, "ratio": NaN, "top": Infinity}\n')
    rb = write(
        tmp_path / "rb.py",
        TRANSFORM.replace('"config.json")', '"config.json", allow_nan=True)'),
    )
    with unchanged(data):
        proc = cli_proc("run", rb, "--yes")
        assert proc.returncode == 0, proc.stderr
        assert json.loads((data / "config.json").read_text())["v"] == 2
        assert "NaN" in (data / "config.json").read_text()
        proc = cli_proc("backups", "restore", rb, "--yes")
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rollback_does_not_move_an_item_back_through_a_symlink_leading_out(
    tmp_path: Path,
) -> None:
    """After the delete, someone replaces the item's parent with a symlink to elsewhere:
    rollback leaves the item in quarantine (a conflict) instead of writing outside."""
    data = tmp_path / "data"
    world(data)
    rb = write(tmp_path / "rb.py", QUARANTINE.replace("SELECT", '["sub/b.txt"]'))
    proc = cli_proc("run", rb, "--yes", "--allow-destructive")
    assert proc.returncode == 0, proc.stderr
    (data / "files" / "sub").rmdir()
    os.symlink("../outside", data / "files" / "sub")
    with unchanged(data):
        proc = cli_proc("rollback", rb)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"leads to {data}/outside, outside the directory" in proc.stderr
    [item] = (tmp_path / ".handrail" / "quarantine").glob("*/clean/items/sub/b.txt")
    assert item.read_text() == "beta\n"


def test_transform_returning_nan_is_refused_before_writing(tmp_path: Path) -> None:
    """A transform whose result holds NaN would write a file that is not JSON."""
    data = tmp_path / "data"
    world(data)
    rb = write(tmp_path / "rb.py", TRANSFORM.replace('"v": 2', '"v": float("nan")'))
    with unchanged(data):
        for args in (["plan"], ["run", "--yes"]):
            proc = cli_proc(*args, rb)
            assert proc.returncode == 2, (args, proc.stderr)
            assert "step 'bump'" in proc.stderr
            assert f"{data}/config.json would not be valid JSON" in proc.stderr
            assert "allow_nan=True" in proc.stderr
