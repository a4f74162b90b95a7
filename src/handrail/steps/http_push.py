"""HTTPPush: write one value per item to an HTTP API, in stages, keeping each item's
prior value so that rollback puts it back exactly.

The PeerTube category push is one line::

    HTTPPush("push categories", peertube, items=assigned_videos,
             path="/api/v1/videos/{uuid}", field="category",
             stages=[100, 1000, None], gates=[Gate("spot check", at="stage", approval=True)])

where ``assigned_videos(ctx)`` returns ``[{"uuid": ..., "category": 104}, ...]``.

Exactly once, without a transaction to join
-------------------------------------------
The service cannot commit our bookkeeping with its change, so every write is made
idempotent and checkable instead: it sets an *absolute* value (a PUT of ``{"category":
104}``), and whether it took effect can be read back. Per item, the step keeps a row in
an undo store (``push.sqlite`` in the run's step directory; WAL, ``synchronous=FULL``)
with the item, the value it writes, the prior value, and a status:

1. ``pending``: the batch's items are recorded when the batch starts.
2. The current remote value is read (GET). If it already equals the intended value the
   item is ``unchanged`` (nothing sent, nothing to undo).
3. ``sent``: the prior value is committed *before* the write goes out.
4. The write is sent; on a 2xx the item is ``confirmed``.

A kill -9 anywhere leaves a row that says what to do on resume: ``pending`` starts over;
``sent`` is read back first, then ``confirmed`` if the remote holds the intended value
(the write had landed) or sent again if it does not. Confirmations are committed lazily
(with the next ``sent`` or at the end of the batch): losing one only costs a read.

Unknown outcomes
----------------
A write that timed out or lost its connection after sending, or got a 5xx, may or may
not have been applied (``OutcomeUnknown``). It is never sent again blindly: the step
reads the remote value first and re-sends only if the write did not land. (A write still
in flight behind a proxy could land after that read; the value is absolute, so sending
it twice leaves the same state, which is why the step writes absolute values only.)

Rollback
--------
Newest batch first, each ``sent`` or ``confirmed`` item is read: if it holds the prior
value it is already restored; if it holds what this run wrote the prior value is written
back (with the same unknown-outcome rule); anything else was changed by someone after the
push: a conflict, reported and left alone unless ``--force``.
"""

from __future__ import annotations

import enum
import json
import random
import sqlite3
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.context import StepContext
from ..engine.journal import now_iso
from ..errors import RollbackConflict, RunbookError
from ..hashing import canonical_json
from ..inline import code
from ..model import CheckResult, Outcome, Plan
from ..redact import redact
from ..resources.http import (
    HTTPService,
    OutcomeUnknown,
    RemoteError,
    RemoteNotFound,
    backoff_delay,
)
from ..resources.sqlite import transaction
from ..runbook import Check, Step, describe_callable

if TYPE_CHECKING:
    import httpx

STORE_FILE = "push.sqlite"


class ItemStatus(enum.StrEnum):
    """Where one item of a push stands, in the undo store."""

    PENDING = "pending"  # in the work list; nothing read or sent yet
    SENT = "sent"  # prior value kept; the write may have gone out (unknown until read back)
    CONFIRMED = "confirmed"  # the service holds the intended value (a 2xx, or read back)
    UNCHANGED = "unchanged"  # it already held the intended value: nothing sent or to undo
    MISSING = "missing"  # the service has no such item (404): rejected, nothing sent
    RESTORED = "restored"  # rollback put the prior value back (or found it there)


#: statuses rollback has to look at: the item may hold what this run wrote
UNDOABLE = (ItemStatus.SENT, ItemStatus.CONFIRMED)


@dataclass
class Remote:
    """What a custom ``read`` function gets: the service, a client, request counters."""

    service: HTTPService
    client: httpx.Client
    stats: Counter[str]

    def get(self, path: str) -> Any:
        """GET ``path`` and return its JSON body (retried; 404 raises RemoteNotFound)."""
        return self.service.get_json(self.client, path, stats=self.stats)

    def send(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """A request through the service's rate limit and retry rules."""
        return self.service.send(self.client, method, path, json=json, stats=self.stats)


Read = Callable[[Remote, Any], Any]
Write = Callable[[Any, Any], tuple[str, str, Any]]
Items = Callable[[StepContext], Iterable[Any]] | Sequence[Any]


def same(a: Any, b: Any) -> bool:
    """Values compare as canonical JSON (key order does not count, 1 and "1" differ)."""
    return canonical_json(a) == canonical_json(b)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else canonical_json(value)


@dataclass(frozen=True)
class StoredItem:
    key: str
    item: Any
    batch: int
    stage: int | None
    intended: Any
    prior: Any
    has_prior: bool
    status: ItemStatus
    note: str | None


class PushStore:
    """The push's undo store: one row per item with its prior and intended values.

    Writes that must be durable before a request goes out (``sent``) commit at once;
    other status changes are buffered and committed with the next durable write or
    :meth:`flush`, because losing one only costs a read on resume.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS items (
        key TEXT PRIMARY KEY,       -- the item's identity (by default its path)
        item TEXT NOT NULL,         -- the work-list item as JSON
        batch INTEGER NOT NULL,
        stage INTEGER,
        intended TEXT NOT NULL,     -- the value the step writes, as JSON
        prior TEXT,                 -- the value before the write, as JSON (NULL: not read)
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        note TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS items_by_status ON items(status, batch);
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(self.SCHEMA)
        self._buffer: list[tuple[str, str | None, str | None, str]] = []

    def close(self) -> None:
        self.flush()
        self.conn.close()

    def add(self, batch: int, stage: int | None, rows: list[tuple[str, Any, Any]]) -> None:
        """Record a batch's items as pending (items already recorded are kept as they are)."""
        now = now_iso()
        with transaction(self.conn):
            self.conn.executemany(
                "INSERT OR IGNORE INTO items (key, item, batch, stage, intended, status, "
                "updated_at) VALUES (?,?,?,?,?,?,?)",
                [
                    (k, canonical_json(i), batch, stage, canonical_json(v), "pending", now)
                    for k, i, v in rows
                ],
            )

    def _row(self, r: tuple[Any, ...]) -> StoredItem:
        key, item, batch, stage, intended, prior, status, note = r
        return StoredItem(
            key=key,
            item=json.loads(item),
            batch=batch,
            stage=stage,
            intended=json.loads(intended),
            prior=json.loads(prior) if prior is not None else None,
            has_prior=prior is not None,
            status=ItemStatus(status),
            note=note,
        )

    _COLS = "key, item, batch, stage, intended, prior, status, note"

    def by_keys(self, keys: Sequence[str]) -> dict[str, StoredItem]:
        self.flush()
        out: dict[str, StoredItem] = {}
        for lo in range(0, len(keys), 500):
            chunk = list(keys[lo : lo + 500])
            for r in self.conn.execute(
                f"SELECT {self._COLS} FROM items WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                out[r[0]] = self._row(r)
        return out

    def rows(
        self, statuses: Sequence[ItemStatus] | None = None, *, stage: int | None = None
    ) -> list[StoredItem]:
        """Rows newest batch first (the order rollback undoes them in)."""
        self.flush()
        sql = f"SELECT {self._COLS} FROM items WHERE 1=1"
        args: list[Any] = []
        if statuses is not None:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += [s.value for s in statuses]
        if stage is not None:
            sql += " AND stage=?"
            args.append(stage)
        return [self._row(r) for r in self.conn.execute(sql + " ORDER BY batch DESC, key", args)]

    def counts(self) -> dict[str, int]:
        self.flush()
        rows = self.conn.execute("SELECT status, count(*) FROM items GROUP BY 1").fetchall()
        return {str(s): int(n) for s, n in rows}

    def update(
        self, key: str, status: ItemStatus, *, prior: Any = ..., note: str | None = None
    ) -> None:
        """Buffer a status change (committed by the next :meth:`mark_sent` or flush)."""
        prior_json = None if prior is ... else canonical_json(prior)
        self._buffer.append((status.value, prior_json, note, key))

    def mark_sent(self, key: str, prior: Any) -> None:
        """Durably record the prior value and that the write may go out; commits before
        returning, together with any buffered changes."""
        self._commit([("sent", canonical_json(prior), None, key)], attempt=key)

    def flush(self) -> None:
        if self._buffer:
            self._commit([])

    def _commit(self, extra: list[tuple[str, str | None, str | None, str]], **kw: Any) -> None:
        todo, self._buffer = [*self._buffer, *extra], []
        now = now_iso()
        try:
            with transaction(self.conn):
                for status, prior, note, key in todo:
                    self.conn.execute(
                        "UPDATE items SET status=?, prior=COALESCE(?, prior), note=?, "
                        "updated_at=? WHERE key=?",
                        (status, prior, note, now, key),
                    )
                if "attempt" in kw:
                    self.conn.execute(
                        "UPDATE items SET attempts = attempts + 1 WHERE key=?", (kw["attempt"],)
                    )
        except BaseException:
            self._buffer = todo + self._buffer  # kept for the next commit
            raise


_clients: weakref.WeakKeyDictionary[StepContext, Remote] = weakref.WeakKeyDictionary()


class HTTPPush(Step):
    """Set one value per item on an HTTP service, reading and keeping the prior value first.

    Declarative (the common case): ``path`` is a template formatted with the item (a
    mapping: ``"/api/v1/videos/{uuid}"``), ``field`` the JSON field read from ``GET path``
    and written with ``PUT path {field: value}``. A field whose GET form is an object with
    an ``id`` (PeerTube's ``{"id": 104, "label": "Medical"}``) is compared and written by
    its id. ``value`` is the item's key holding the value to write (default: ``field``) or
    a function of the item.

    General: ``read(remote, item) -> current value`` and ``write(item, value) -> (method,
    path, json body)`` (used for the push and, with the prior value, for rollback); ``key``
    gives each item a stable identity (default: its path). Writes must set absolute
    values (idempotent), never increments.

    ``items`` is a list or a function of the context returning JSON-serialisable items.
    ``plan_sample`` items are read remotely in the dry run; ``verify_sample`` confirmed
    items are read back after the push.
    """

    def __init__(
        self,
        name: str,
        service: HTTPService,
        *,
        items: Items,
        path: str | Callable[[Any], str] | None = None,
        field: str | None = None,
        value: str | Callable[[Any], Any] | None = None,
        method: str = "PUT",
        read: Read | None = None,
        write: Write | None = None,
        key: Callable[[Any], str] | None = None,
        plan_sample: int = 10,
        verify_sample: int = 20,
        **kw: Any,
    ) -> None:
        if (read is None) != (write is None):
            raise RunbookError(f"push {name!r}: give both read and write, or neither")
        if read is None and (path is None or field is None):
            raise RunbookError(
                f"push {name!r}: give path and field (e.g. path='/api/v1/videos/{{uuid}}', "
                "field='category'), or read and write functions"
            )
        if key is None and path is None:
            raise RunbookError(f"push {name!r}: give key= (a function of the item) or path=")
        self.service = service
        self._items = items
        self.path, self.field, self.value = path, field, value
        self.method = method.upper()
        self.read, self.write = read, write
        self.key_fn = key
        self.plan_sample, self.verify_sample = plan_sample, verify_sample
        kw.setdefault("writes", (service,))
        kw.setdefault("batch_size", 100)
        kw.setdefault(
            "description",
            f"{self.method} one value per item to {service.name}; each item's prior value is "
            "kept so rollback puts it back",
        )
        super().__init__(name, **kw)

    def default_changes(self) -> str:
        what = self.field or "a value"
        return f"sets {what} of each item on {self.service.name} ({self.service.location()})"

    # explain_changes: default_changes above says it (and is what the author may replace)
    def explain_rollback(self) -> str:
        return (
            f"puts back each item's prior value on {code(self.service.name)} (read and "
            "kept right before the push wrote it); items changed since are reported and left "
            "alone"
        )

    def params(self) -> dict[str, Any]:
        def fn(x: Any) -> Any:
            return describe_callable(x) if callable(x) else x

        return {
            "service": self.service.settings(),
            "items": fn(self._items) if callable(self._items) else list(self._items),
            "path": fn(self.path),
            "field": self.field,
            "value": fn(self.value),
            "method": self.method,
            "read": fn(self.read),
            "write": fn(self.write),
            "key": fn(self.key_fn),
        }

    # -- item helpers -------------------------------------------------------------------
    def item_path(self, item: Any) -> str:
        if callable(self.path):
            return self.path(item)
        assert self.path is not None
        try:
            if isinstance(item, Mapping):
                return self.path.format_map(item)
            return self.path.format(item)
        except (KeyError, IndexError) as exc:
            raise RunbookError(
                f"push {self.name!r}: path {self.path!r} needs {exc} but item {item!r} lacks it"
            ) from exc

    def item_key(self, item: Any) -> str:
        return self.key_fn(item) if self.key_fn else self.item_path(item)

    def intended(self, item: Any) -> Any:
        """The value this step writes for ``item``."""
        if callable(self.value):
            return self.value(item)
        name = self.value or self.field
        if not isinstance(item, Mapping) or name not in item:
            raise RunbookError(
                f"push {self.name!r}: item {item!r} has no {name!r} to write",
                hint="items are mappings holding the value, or pass value=fn(item)",
            )
        return item[name]

    def read_value(self, remote: Remote, item: Any) -> Any:
        """The item's current value on the service (raises RemoteNotFound)."""
        if self.read is not None:
            return self.read(remote, item)
        body = remote.get(self.item_path(item))
        value = body.get(self.field) if isinstance(body, Mapping) else None
        if isinstance(value, Mapping) and "id" in value:
            value = value["id"]
        return value

    def write_request(self, item: Any, value: Any) -> tuple[str, str, Any]:
        if self.write is not None:
            return self.write(item, value)
        assert self.field is not None
        return self.method, self.item_path(item), {self.field: value}

    def _remote(self, ctx: StepContext) -> Remote:
        """One client per step execution (per context), closed when the context goes."""
        remote = _clients.get(ctx)
        if remote is None:
            svc = ctx.use(self.service)
            client = svc.client()
            remote = _clients[ctx] = Remote(svc, client, Counter())
            weakref.finalize(ctx, client.close)
        return remote

    def _store(self, ctx: StepContext) -> PushStore:
        return PushStore(ctx.step_dir() / STORE_FILE)

    def _write(self, remote: Remote, item: Any, value: Any) -> None:
        """Send one write; on an unknown outcome read back before sending it again."""
        method, path, body = self.write_request(item, value)
        svc = remote.service
        for attempt in range(svc.retries + 1):
            try:
                remote.send(method, path, body)
                return
            except OutcomeUnknown:
                if same(self.read_value(remote, item), value):
                    remote.stats["verified_applied"] += 1
                    return
                remote.stats["verified_not_applied"] += 1
                time.sleep(backoff_delay(attempt, svc.backoff, svc.max_backoff))
        raise RemoteError(
            f"{svc.name}: {method} {path}: gave up after {svc.retries + 1} attempt(s) whose "
            "outcome was unknown and that had not taken effect",
            hint="the service may be failing; run again later to resume",
        )

    # -- lifecycle ----------------------------------------------------------------------
    def items(self, ctx: StepContext) -> list[Any] | None:
        raw = list(self._items(ctx) if callable(self._items) else self._items)
        seen: dict[str, str] = {}
        for item in raw:
            try:
                text = canonical_json([item, self.intended(item)])
            except (TypeError, ValueError) as exc:
                raise RunbookError(
                    f"push {self.name!r}: items must be JSON values: {item!r} ({exc})"
                ) from exc
            k = self.item_key(item)
            if k in seen and seen[k] != text:
                raise RunbookError(
                    f"push {self.name!r}: two items write {k!r} with different values"
                )
            seen[k] = text
        # Duplicates with the same value collapse to one write.
        out, keys = [], set()
        for item in raw:
            k = self.item_key(item)
            if k not in keys:
                keys.add(k)
                out.append(item)
        return out

    def plan(self, ctx: StepContext) -> Plan:
        items = self.items(ctx) or []
        column = self.field or "value"
        values = Counter(_label(self.intended(i)) for i in items)
        samples: list[dict[str, Any]] = []
        counts = {"items": len(items)}
        details: dict[str, Any] = {"values": {column: dict(values.most_common())}}
        svc = ctx.use(self.service)
        if items and self.plan_sample > 0:
            sample_counts: Counter[str] = Counter()
            try:
                with svc.client() as client:
                    remote = Remote(svc, client, Counter())
                    for item in items[: self.plan_sample]:
                        want = self.intended(item)
                        try:
                            now = self.read_value(remote, item)
                        except RemoteNotFound:
                            samples.append({"item": self.item_key(item), "missing": True})
                            sample_counts["sample_missing"] += 1
                            continue
                        would = "unchanged" if same(now, want) else "change"
                        sample_counts[f"sample_{would}"] += 1
                        samples.append(
                            {"item": self.item_key(item), "now": now, "to": want, "would": would}
                        )
            except RemoteError as exc:
                details["remote_error"] = redact(str(exc))
            counts |= dict(sample_counts)
        return Plan(
            summary=f"{self.method} {column} of {len(items)} item(s) on {svc.name}, "
            "prior values kept for rollback",
            items=len(items),
            counts=counts,
            samples=samples,
            details=details,
        )

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        remote = self._remote(ctx)
        store = self._store(ctx)
        changed = 0
        try:
            keys = [self.item_key(i) for i in items]
            store.add(
                batch,
                ctx.stage,
                [(k, i, self.intended(i)) for k, i in zip(keys, items, strict=True)],
            )
            rows = store.by_keys(keys)
            for key, item in zip(keys, items, strict=True):
                row = rows[key]
                if row.status is ItemStatus.MISSING:
                    self._reject(ctx, remote, item, row.note)
                    continue
                if row.status not in (ItemStatus.PENDING, ItemStatus.SENT):
                    continue
                want = row.intended
                try:
                    now = self.read_value(remote, item)
                except RemoteNotFound:
                    note = "not found (404) on the service"
                    store.update(key, ItemStatus.MISSING, note=note)
                    self._reject(ctx, remote, item, note)
                    continue
                if same(now, want):
                    if row.status is ItemStatus.SENT:
                        # Sent before a crash and it had landed: confirmed, not sent again.
                        store.update(key, ItemStatus.CONFIRMED, note="confirmed by reading back")
                        remote.stats["verified_applied"] += 1
                        changed += 1
                    else:
                        store.update(key, ItemStatus.UNCHANGED, prior=now)
                    continue
                # Not there (yet): what is there now is the value to put back on rollback.
                store.mark_sent(key, now)
                try:
                    self._write(remote, item, want)
                except RemoteNotFound:
                    note = "removed from the service before the write"
                    store.update(key, ItemStatus.MISSING, note=note)
                    self._reject(ctx, remote, item, note)
                    continue
                store.update(key, ItemStatus.CONFIRMED)
                changed += 1
        finally:
            store.close()
        return changed

    def _reject(self, ctx: StepContext, remote: Remote, item: Any, note: str | None) -> None:
        where = f"{remote.service.name} {self.item_path(item) if self.path else ''}".strip()
        ctx.reject(where, self.item_key(item), note or "not found on the service")

    def verify(self, ctx: StepContext) -> list[CheckResult]:
        store = self._store(ctx)
        try:
            counts = store.counts()
            unfinished = counts.get("pending", 0) + counts.get("sent", 0)
            confirmed = store.rows([ItemStatus.CONFIRMED])
        finally:
            store.close()
        # Requests, retries, throttling and unknown outcomes of this execution (after a
        # resume: since the resume).
        requests = dict(self._remote(ctx).stats)
        results = [
            CheckResult(
                f"{self.name}: every item confirmed",
                Outcome.FAIL if unfinished else Outcome.PASS,
                {"counts": counts, "requests": requests},
                f"{unfinished} item(s) not confirmed" if unfinished else "",
            )
        ]
        if self.verify_sample and confirmed:
            rng = random.Random(ctx.run_id)
            picked = rng.sample(confirmed, min(self.verify_sample, len(confirmed)))
            results.append(self._read_back(ctx, picked, f"{self.name}: read-back sample"))
        return results

    def _read_back(self, ctx: StepContext, rows: list[StoredItem], name: str) -> CheckResult:
        remote = self._remote(ctx)
        table: list[list[Any]] = []
        bad = 0
        for row in rows:
            try:
                now: Any = self.read_value(remote, row.item)
            except RemoteNotFound:
                now = "(missing)"
            ok = same(now, row.intended)
            bad += not ok
            table.append([row.key, _label(row.intended), _label(now), "ok" if ok else "DIFFERS"])
        return CheckResult(
            name,
            Outcome.FAIL if bad else Outcome.PASS,
            {"read": len(rows), "differ": bad, "rows": table},
            f"{bad} of {len(rows)} item(s) do not hold the value written" if bad else "",
        )

    def spot_check(self, n: int = 5, *, name: str | None = None) -> Check:
        """A check for a stage gate: read back ``n`` random items of the stage just pushed
        and compare them with what was written (the runbook's "spot-check 5 videos")."""
        return PushSpotCheck(self, n, name or f"spot-check {n} pushed item(s)")

    def rollback(self, ctx: StepContext) -> None:
        path = ctx.step_dir() / STORE_FILE
        if not path.exists():
            return  # nothing was ever recorded, so nothing was sent
        force = bool(ctx.state.get("_force"))
        svc = ctx.use(self.service)
        store = PushStore(path)
        conflicts: list[str] = []
        try:
            with svc.client() as client:
                remote = Remote(svc, client, Counter())
                for row in store.rows(UNDOABLE):
                    if not row.has_prior:
                        continue
                    try:
                        now = self.read_value(remote, row.item)
                    except RemoteNotFound:
                        conflicts.append(f"{row.key}: gone from the service; cannot put it back")
                        continue
                    if same(now, row.prior):
                        store.update(row.key, ItemStatus.RESTORED, note="prior value found")
                        continue
                    if not same(now, row.intended) and not force:
                        conflicts.append(
                            f"{row.key}: holds {_label(now)}, this run wrote "
                            f"{_label(row.intended)}; left alone"
                        )
                        store.update(row.key, row.status, note=f"conflict: holds {_label(now)}")
                        continue
                    self._write(remote, row.item, row.prior)
                    store.update(row.key, ItemStatus.RESTORED)
        finally:
            store.close()
        if conflicts:
            raise RollbackConflict(
                f"{len(conflicts)} item(s) on {svc.name} were changed after this run wrote "
                f"them and were left alone: {'; '.join(conflicts[:3])}",
                hint="inspect them; `handrail rollback RUN --force` puts the prior values back",
                items=conflicts,
            )


class PushSpotCheck(Check):
    """Read back ``n`` random items of the stage just pushed (see :meth:`HTTPPush.spot_check`)."""

    def __init__(self, step: HTTPPush, n: int, name: str) -> None:
        super().__init__(name)
        self.step, self.n = step, n

    def describe(self) -> str:
        return f"{self.n} random item(s) of the stage just pushed hold the value written"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        path = ctx.work_dir / self.step.name / STORE_FILE
        if not path.exists():
            return self.result(False, {}, f"step {self.step.name!r} has pushed nothing yet")
        store = PushStore(path)
        try:
            stage = ctx.stage if ctx.step == self.step.name else None
            rows = store.rows([ItemStatus.CONFIRMED], stage=stage)
        finally:
            store.close()
        if not rows:
            return self.result(True, {"read": 0}, "no item of this stage needed a write")
        rng = random.Random(f"{ctx.run_id}/{stage}")
        picked = rng.sample(rows, min(self.n, len(rows)))
        res = self.step._read_back(ctx, picked, self.name)
        res.evidence["population"] = len(rows)
        return res
