"""A small PeerTube-like API on loopback, backed by a real PostgreSQL ``video`` table, with
fault injection: for tests and demos of :class:`handrail.steps.http_push.HTTPPush`.

Endpoints (the subset of PeerTube's REST API a category push uses)::

    GET /api/v1/videos/categories   {"1": "Music", ..., "100": "Agriculture & Livestock", ...}
    GET /api/v1/videos/{uuid}       {"id", "uuid", "name", "category": {"id", "label"} | null,
                                     "channel": {"id"}}
    PUT /api/v1/videos/{uuid}       {"category": id | null, "name": ...}  -> 204
    GET /api/v1/videos?start=&count=&sort=id|-id   {"total", "data": [...]}

Everything but the categories needs ``Authorization: Bearer <token>`` (401 otherwise).
Unlike PeerTube, ``count`` is not capped at 100, so one GET can fingerprint a test table.

Faults (:class:`Faults`) apply to the methods listed in ``Faults.methods`` (PUT by
default): a share of answers 429 (with ``Retry-After``), 500 or 503, and writes that are
applied and then left unanswered (the connection is dropped, or held until the client
times out), or lost before being applied. ``Faults.script`` gives exact faults for the
next requests instead. Every request is logged (:attr:`PeerTubeServer.requests`) with its
arrival time, so tests can measure rates and count writes.

Example::

    with PeerTubeServer(dsn, token="t0ken") as server:
        create_schema(dsn); seed_videos(dsn, 100)
        ...  # point HTTPService("peertube", server.url, token=...) at it
"""

from __future__ import annotations

import hmac
import json
import random
import re
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..domains.logic import DOMAINS as _RECIPE_DOMAINS

#: PeerTube's own categories
DEFAULT_CATEGORIES: dict[int, str] = {
    1: "Music",
    2: "Films",
    3: "Vehicles",
    4: "Art",
    5: "Sports",
    6: "Travels",
    7: "Gaming",
    8: "People",
    9: "Comedy",
    10: "Entertainment",
    11: "News & Politics",
    12: "How To",
    13: "Education",
    14: "Activism",
    15: "Science & Technology",
    16: "Animals",
    17: "Kids",
    18: "Food",
}
#: the 18 domain categories a plugin adds (ids 100..117, in this order): one list, the
#: recipe's, so the test server and the push can never disagree
DOMAINS: tuple[str, ...] = _RECIPE_DOMAINS
DOMAIN_CATEGORIES: dict[int, str] = {100 + i: name for i, name in enumerate(DOMAINS)}
CATEGORIES: dict[int, str] = DEFAULT_CATEGORIES | DOMAIN_CATEGORIES

SCHEMA = """
CREATE TABLE IF NOT EXISTS video (
    id serial PRIMARY KEY,
    uuid text NOT NULL UNIQUE,
    name text NOT NULL,
    category integer,
    "channelId" integer NOT NULL DEFAULT 1
)
"""

FAULTS = ("ok", "429", "500", "503", "drop", "hang", "lose")
_VIDEO = re.compile(r"^/api/v1/videos/([0-9A-Za-z-]+)$")


def create_schema(dsn: str) -> None:
    """Create the ``video`` table (idempotent)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)


def seed_videos(
    dsn: str,
    n: int,
    *,
    category: Callable[[int], int | None] | None = None,
    channels: int = 5,
    seed: int = 0,
) -> list[str]:
    """Insert ``n`` videos and return their uuids (deterministic for a ``seed``).

    ``category(i)`` gives video i's category (default: a mix of none, PeerTube's own and
    domain categories, so a rollback that "sets >= 100 to NULL" would be wrong).
    """
    import psycopg

    rng = random.Random(seed)

    def mixed(i: int) -> int | None:
        return (None, 13, 15, 104, 116)[i % 5]

    pick = category or mixed
    rows = [
        (
            str(uuidlib.UUID(int=rng.getrandbits(128), version=4)),
            f"video {i}",
            pick(i),
            i % channels,
        )
        for i in range(n)
    ]
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            'INSERT INTO video (uuid, name, category, "channelId") VALUES (%s, %s, %s, %s)', rows
        )
    return [r[0] for r in rows]


def categories_of(dsn: str) -> dict[str, int | None]:
    """uuid -> category for every video, straight from the database."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT uuid, category FROM video ORDER BY id").fetchall()
        return {str(u): c for u, c in rows}


@dataclass
class Faults:
    """What goes wrong, and how often. Shares are probabilities per matching request."""

    throttle: float = 0.0  # 429 Too Many Requests
    retry_after: str | None = "1"  # the Retry-After header of a 429 (None: no header)
    error: float = 0.0  # 500
    unavailable: float = 0.0  # 503
    drop_after_apply: float = 0.0  # applied, then the connection closes with no answer
    hang_after_apply: float = 0.0  # applied, then no answer for hang_seconds, then closed
    lose_before_apply: float = 0.0  # the connection closes before anything is applied
    hang_seconds: float = 2.0
    methods: frozenset[str] = frozenset({"PUT"})
    seed: int = 0
    #: exact faults ("ok", "429", "500", "503", "drop", "hang", "lose") for the next
    #: matching requests, used up in order before the shares apply
    script: list[str] = field(default_factory=list)
    #: called as on_write(n, uuid, phase) for the n-th PUT (from 1), phase "received" or
    #: "applied" (after the change, before the answer): a test can kill the client there.
    #: Returning "lose" at "received" drops that write unapplied.
    on_write: Callable[[int, str, str], str | None] | None = None

    def __post_init__(self) -> None:
        bad = [f for f in self.script if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown faults {bad}; use {FAULTS}")
        self._rng = random.Random(self.seed)

    def draw(self) -> str:
        if self.script:
            return self.script.pop(0)
        x = self._rng.random()
        for name, share in (
            ("429", self.throttle),
            ("500", self.error),
            ("503", self.unavailable),
            ("drop", self.drop_after_apply),
            ("hang", self.hang_after_apply),
            ("lose", self.lose_before_apply),
        ):
            if x < share:
                return name
            x -= share
        return "ok"


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    at: float  # time.monotonic() on arrival
    method: str
    path: str
    status: int | None  # None: no answer was sent
    fault: str
    applied: bool  # a write that changed the database


class PeerTubeServer:
    """The API on ``127.0.0.1`` in a background thread; use as a context manager."""

    def __init__(
        self,
        dsn: str,
        *,
        token: str = "handrail-test-token",
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
    ) -> None:
        self.dsn, self.token = dsn, token
        self.faults = faults or Faults()
        self._log: list[Request] = []
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._conn: Any = None
        self._writes = 0
        self._httpd = _Server((host, port), _Handler)
        self._httpd.app = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PeerTubeServer:
        import psycopg

        self._conn = psycopg.connect(self.dsn, autocommit=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PeerTubeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what happened -----------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    def writes(self, *, applied_only: bool = True) -> list[Request]:
        """PUT requests (by default only those that changed the database)."""
        return [r for r in self.requests if r.method == "PUT" and (r.applied or not applied_only)]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, req: Request) -> None:
        with self._lock:
            self._log.append(req)

    def _next_write(self) -> int:
        with self._lock:
            self._writes += 1
            return self._writes

    # -- the database --------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._db_lock:
            return list(self._conn.execute(sql, params).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._db_lock:
            return int(self._conn.execute(sql, params).rowcount)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    app: PeerTubeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (killed, timed out) is expected here."""


def _video_json(row: tuple[Any, ...]) -> dict[str, Any]:
    vid, uuid, name, category, channel = row
    cat = None if category is None else {"id": category, "label": CATEGORIES.get(category, "?")}
    # str(): PeerTube's real schema types the column uuid, which JSON cannot carry as is.
    return {"id": vid, "uuid": str(uuid), "name": name, "category": cat, "channel": {"id": channel}}


_COLS = 'id, uuid, name, category, "channelId"'


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment: otherwise Nagle's algorithm and delayed ACKs
    # add 40 ms to every answer.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the server keeps its own request log."""

    # -- plumbing ------------------------------------------------------------------------
    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _authorized(self) -> bool:
        got = self.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {self.server.app.token}".encode())

    def _log(self, status: int | None, fault: str = "ok", applied: bool = False) -> None:
        self.server.app._record(
            Request(self._arrived, self.command, self.path, status, fault, applied)
        )

    def _fault(self) -> str:
        app = self.server.app
        if self.command not in app.faults.methods:
            return "ok"
        with app._lock:
            return app.faults.draw()

    def _drop(self) -> None:
        self.close_connection = True

    # -- methods -------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._arrived = time.monotonic()
        url = urlsplit(self.path)
        if url.path == "/api/v1/videos/categories":
            self._send(200, {str(k): v for k, v in CATEGORIES.items()})
            self._log(200)
            return
        if not self._authorized():
            self._send(401, {"error": "unauthorized"})
            self._log(401)
            return
        fault = self._fault()
        if self._answer_fault(fault):
            return
        app = self.server.app
        if url.path == "/api/v1/videos":
            q = parse_qs(url.query)
            start = int(q.get("start", ["0"])[0])
            count = min(int(q.get("count", ["15"])[0]), 10000)
            order = "id DESC" if q.get("sort", ["id"])[0] == "-id" else "id"
            total = app.query("SELECT count(*) FROM video")[0][0]
            rows = app.query(
                f"SELECT {_COLS} FROM video ORDER BY {order} OFFSET %s LIMIT %s", (start, count)
            )
            self._send(200, {"total": total, "data": [_video_json(r) for r in rows]})
            self._log(200, fault)
            return
        m = _VIDEO.match(url.path)
        if not m:
            self._send(404, {"error": "no such route"})
            self._log(404, fault)
            return
        found = app.query(f"SELECT {_COLS} FROM video WHERE uuid=%s", (m.group(1),))
        if not found:
            self._send(404, {"error": "video not found"})
            self._log(404, fault)
            return
        self._send(200, _video_json(found[0]))
        self._log(200, fault)

    def do_PUT(self) -> None:
        self._arrived = time.monotonic()
        url = urlsplit(self.path)
        body = self._body()
        if not self._authorized():
            self._send(401, {"error": "unauthorized"})
            self._log(401)
            return
        m = _VIDEO.match(url.path)
        if not m:
            self._send(404, {"error": "no such route"})
            self._log(404)
            return
        app = self.server.app
        fault = self._fault()
        if self._answer_fault(fault):
            return
        n = app._next_write()
        uuid = m.group(1)
        if app.faults.on_write is not None and app.faults.on_write(n, uuid, "received") == "lose":
            fault = "lose"
        if fault == "lose":
            self._log(None, fault)
            self._drop()
            return
        if not isinstance(body, dict) or not set(body) <= {"category", "name"}:
            self._send(400, {"error": "body must be a JSON object with category and/or name"})
            self._log(400, fault)
            return
        category = body.get("category")
        if "category" in body and category is not None and category not in CATEGORIES:
            self._send(400, {"error": f"unknown category {category!r}"})
            self._log(400, fault)
            return
        sets, args = [], []
        for col in ("category", "name"):
            if col in body:
                sets.append(f"{col}=%s")
                args.append(body[col])
        changed = app.execute(f"UPDATE video SET {', '.join(sets)} WHERE uuid=%s", (*args, uuid))
        if not changed:
            self._send(404, {"error": "video not found"})
            self._log(404, fault)
            return
        if app.faults.on_write is not None:
            app.faults.on_write(n, uuid, "applied")
        if fault == "drop":
            self._log(None, fault, applied=True)
            self._drop()
            return
        if fault == "hang":
            self._log(None, fault, applied=True)
            time.sleep(app.faults.hang_seconds)
            self._drop()
            return
        self._send(204)
        self._log(204, fault, applied=True)

    def _answer_fault(self, fault: str) -> bool:
        """Answer 429/500/503 faults (nothing applied); True when answered."""
        if fault == "429":
            ra = self.server.app.faults.retry_after
            self._send(429, {"error": "too many requests"}, {"Retry-After": ra} if ra else None)
            self._log(429, fault)
            return True
        if fault in ("500", "503"):
            self._send(int(fault), {"error": "server error"})
            self._log(int(fault), fault)
            return True
        return False
