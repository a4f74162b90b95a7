"""Bad input exits 2 before the first change, with a message that names the file and line,
the option or the step, and says what to do. One table; every row runs the real CLI in a
subprocess and checks, with digests computed without handrail, that the data is untouched.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from handrail.engine.journal import Journal

from .digests import unchanged
from .helpers import cli_proc, make_items_db, write

TOKEN_ENV = "HANDRAIL_TEST_BAD_INPUT_TOKEN"

HEAD = """
from pathlib import Path
from handrail import Backfill, Runbook, SQLite
from handrail.steps.sql import SQL
db = SQLite("items", Path(__file__).parent / "data" / "items.db")
"""

GOOD = """
runbook = Runbook("retire", steps=[
    SQL("retire old", db, up="UPDATE items SET status='retired' WHERE status='old'",
        down="UPDATE items SET status='old' WHERE status='retired'"),
])
"""

PUSH = """
from handrail import Gate, Runbook
from handrail.steps.http_push import HTTPPush
from handrail.resources.http import HTTPService
svc = HTTPService("svc", "{url}", token_env="{env}", backoff=0.01, retries=1,
                  fingerprint_paths=["{probe}"])
runbook = Runbook("push", steps=[
    HTTPPush("push categories", svc, items=[{{"uuid": "u1", "category": 104}}],
             path="/api/v1/videos/{{uuid}}", field="category", stages=[1, None],
             gates=[Gate("look", at="stage", approval=True)]),
])
"""


@dataclass
class World:
    """Where a row works: its directory, the runbook path, and the services it may need."""

    root: Path
    request: pytest.FixtureRequest

    @property
    def rb(self) -> Path:
        return self.root / "rb.py"

    @property
    def state(self) -> Path:
        return self.root / ".handrail"

    def runbook(self, body: str) -> Path:
        return write(self.rb, HEAD + body)

    def ran(self) -> str:
        """A completed run of the good runbook; returns its id."""
        self.runbook(GOOD)
        done = cli_proc("run", self.rb, "--yes")
        assert done.returncode == 0, done.stderr
        return Journal(self.state).runs()[-1].id


Commands = list[list[str]]


@dataclass
class Case:
    id: str
    setup: Callable[[World], Commands]
    expect: tuple[str, ...]  # in stderr; "{rb}" is the runbook's path


def loading(body: str) -> Callable[[World], Commands]:
    """A runbook file with this body, then `plan` and `run --yes` of it."""

    def setup(w: World) -> Commands:
        w.runbook(body)
        return [["plan", str(w.rb)], ["run", str(w.rb), "--yes"]]

    return setup


def raw_file(text: str | None, *, directory: bool = False) -> Callable[[World], Commands]:
    def setup(w: World) -> Commands:
        if directory:
            w.rb.mkdir()
        elif text is not None:
            w.rb.write_text(text)
        return [["plan", str(w.rb)], ["run", str(w.rb), "--yes"]]

    return setup


def rollback_to_unknown(w: World) -> Commands:
    run_id = w.ran()
    return [["rollback", run_id, "--to", "no such step", "--state-dir", str(w.state)]]


def restore_without_yes(w: World) -> Commands:
    run_id = w.ran()
    return [["backups", "restore", run_id, "--state-dir", str(w.state)]]


def restore_other_host(w: World) -> Commands:
    run_id = w.ran()
    conn = sqlite3.connect(w.state / "journal.sqlite")
    conn.execute("UPDATE backups SET host='far-away-host'")
    conn.commit()
    conn.close()
    return [["backups", "restore", run_id, "--yes", "--state-dir", str(w.state)]]


def unknown_option(w: World) -> Commands:
    w.runbook(GOOD)
    return [["run", str(w.rb), "--yes", "--allow-everything"]]


def peertube_wrong_token(w: World) -> Commands:
    server = w.request.getfixturevalue("peertube")
    w.runbook(PUSH.format(url=server.url, env=TOKEN_ENV, probe="/api/v1/videos?count=1"))
    return [["plan", str(w.rb)], ["run", str(w.rb), "--yes"]]


def forbidding_service(w: World) -> Commands:
    url = w.request.getfixturevalue("forbidding")
    w.runbook(PUSH.format(url=url, env=TOKEN_ENV, probe="/api/v1/videos?count=1"))
    return [["plan", str(w.rb)], ["run", str(w.rb), "--yes"]]


NOTHING_RUN = "nothing was run"

CASES = [
    Case(
        "factory raises",
        loading("def runbook():\n    raise ValueError('no config for prod')\n"),
        ("{rb}:6:", "factory `runbook()` raised ValueError: no config for prod", NOTHING_RUN),
    ),
    Case(
        "sys.exit(5) at load",
        loading("import sys\nsys.exit(5)\n" + GOOD),
        ("{rb}:6:", "called sys.exit(5)", NOTHING_RUN),
    ),
    Case(
        "sys.exit(0) at load",
        loading("import sys\nsys.exit(0)\n" + GOOD),
        ("{rb}:6:", "called sys.exit(0)", NOTHING_RUN),
    ),
    Case(
        "factory calls sys.exit",
        loading("import sys\ndef runbook():\n    sys.exit('bye')\n"),
        ("{rb}:7:", "called sys.exit('bye')", NOTHING_RUN),
    ),
    Case(
        "GeneratorExit at load",
        loading("raise GeneratorExit('stop')\n"),
        ("{rb}:5:", "raised GeneratorExit: stop", NOTHING_RUN),
    ),
    Case(
        "runbook is not a Runbook",
        loading("runbook = 42\n"),
        ("{rb}: `runbook` is a int, not a handrail.Runbook",),
    ),
    Case(
        "runbook not defined",
        loading("steps = []\n"),
        ("{rb} does not define `runbook`", "named runbook"),
    ),
    Case("runbook file missing", raw_file(None), ("runbook file not found: {rb}",)),
    Case(
        "runbook is a directory",
        raw_file(None, directory=True),
        ("{rb} is a directory; give the runbook's .py file",),
    ),
    Case(
        "syntax error",
        raw_file("from handrail import Runbook\nrunbook = Runbook(\n  'x' steps=[])\n"),
        ("{rb}:3:", "syntax error", NOTHING_RUN),
    ),
    Case(
        "import of a missing module",
        loading("import handrail_no_such_plugin\n" + GOOD),
        ("{rb}:5:", "ModuleNotFoundError", "handrail_no_such_plugin", NOTHING_RUN),
    ),
    Case(
        "a handrail error without the file name gets it",
        loading("runbook = Runbook('empty', steps=[])\n"),
        ("{rb}:5: runbook 'empty' has no steps",),
    ),
    Case("unknown option", unknown_option, ("No such option '--allow-everything'",)),
    Case(
        "401 from a service",
        peertube_wrong_token,
        ("401 Unauthorized: the service refused the credentials", f"${TOKEN_ENV}"),
    ),
    Case(
        "403 from a service",
        forbidding_service,
        ("403 Forbidden: the service refused the credentials", f"${TOKEN_ENV}"),
    ),
    Case(
        "unknown step in rollback --to",
        rollback_to_unknown,
        ("has no step 'no such step'", "retire old"),
    ),
    Case(
        "backups restore without --yes and no terminal",
        restore_without_yes,
        ("no terminal to confirm it", "then pass --yes"),
    ),
    Case(
        "backups restore of another host's backup",
        restore_other_host,
        ("taken on host 'far-away-host'", "on far-away-host, where the backup was taken"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_before_any_change(
    case: Case, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "a-wrong-token-5150")
    data = tmp_path / "data"
    data.mkdir()
    make_items_db(data / "items.db", 20)
    (data / "items.json").write_text(json.dumps([{"uuid": "u1", "category": 104}]))
    w = World(tmp_path, request)
    commands = case.setup(w)
    for args in commands:
        with unchanged(data):
            got = cli_proc(*args, cwd=tmp_path)
        assert got.returncode == 2, (args, got.stdout, got.stderr)
        assert "Traceback" not in got.stderr
        for fragment in case.expect:
            assert fragment.format(rb=w.rb) in got.stderr, (args, got.stderr)
        assert "a-wrong-token-5150" not in got.stdout + got.stderr


@pytest.mark.parametrize("command", [["plan"], ["run", "--yes"]])
def test_a_step_parameter_of_the_wrong_type_is_bad_input(
    tmp_path: Path, command: list[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_items_db(data / "items.db", 20)
    rb = write(
        tmp_path / "rb.py",
        HEAD + "runbook = Runbook('bf', steps=[Backfill('size', db, table='items', key='id',\n"
        "    columns='size_class', compute=lambda r: {'size_class': 'big'})])\n",
    )
    with unchanged(data):
        got = cli_proc(command[0], rb, *command[1:], cwd=tmp_path)
    assert got.returncode == 2, got.stderr
    assert str(rb) in got.stderr


# -- services for the credential rows ----------------------------------------------------------
@pytest.fixture
def peertube(pg_dsn: str) -> Iterator[Any]:
    """The PeerTube-like server with the right token; the rows send a wrong one."""
    from handrail.testing.peertube import PeerTubeServer, create_schema, seed_videos

    create_schema(pg_dsn)
    seed_videos(pg_dsn, 3)
    with PeerTubeServer(pg_dsn, token="the-right-token-0000") as server:
        yield server
        assert server.writes(applied_only=False) == []  # nothing was sent to change


class _Forbid(BaseHTTPRequestHandler):
    """Answers 403 to everything and counts requests that would change something."""

    writes: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forbid(self) -> None:
        body = b'{"error": "forbidden"}'
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._forbid()

    def do_PUT(self) -> None:
        self.writes.append(self.path)
        self._forbid()


@pytest.fixture
def forbidding() -> Iterator[str]:
    """A real HTTP server on loopback that forbids this token everything (403)."""
    _Forbid.writes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forbid)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{socket.gethostbyname(str(host))}:{port}"
    finally:
        server.shutdown()
        server.server_close()
    assert _Forbid.writes == []
