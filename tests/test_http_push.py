"""HTTPPush against a real loopback PeerTube-like server on real PostgreSQL: stages and
gates, the rate limit, retries with backoff, unknown outcomes read back instead of sent
twice, exact rollback with conflicts, kill -9 mid-push, and no token anywhere it is
written."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handrail import (
    CredentialsRefused,
    Gate,
    PolicyError,
    ResourceError,
    Runbook,
    RunStatus,
    Tier,
)
from handrail.engine.journal import CRASH_ENV
from handrail.resources.http import HTTPService, TokenBucket
from handrail.steps.http_push import STORE_FILE, HTTPPush, PushStore
from handrail.testing.peertube import (
    Faults,
    PeerTubeServer,
    categories_of,
    create_schema,
    seed_videos,
)

from .helpers import HANDRAIL, cli_proc, make_executor, run_runbook, write

TOKEN = "pt-secret-7Hq2Zk9xWv"
TOKEN_ENV = "HANDRAIL_TEST_PEERTUBE_TOKEN"
PATH = "/api/v1/videos/{uuid}"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


@pytest.fixture
def videos(pg_dsn: str) -> list[str]:
    """40 videos: categories none, 13, 15, 104, 116 in turn (so "set >= 100 to NULL"
    would not be a rollback)."""
    create_schema(pg_dsn)
    return seed_videos(pg_dsn, 40)


@pytest.fixture
def server(pg_dsn: str, videos: list[str]) -> Iterator[PeerTubeServer]:
    with PeerTubeServer(pg_dsn, token=TOKEN) as s:
        yield s


def wanted(uuids: list[str]) -> list[dict[str, Any]]:
    """A domain category per video; video 3 already has its category (104)."""
    return [
        {"uuid": u, "category": 104 if i == 3 else 100 + (i * 7) % 18} for i, u in enumerate(uuids)
    ]


def service(server: PeerTubeServer, **kw: Any) -> HTTPService:
    kw.setdefault("backoff", 0.01)
    return HTTPService("peertube", server.url, token_env=TOKEN_ENV, **kw)


def push(svc: HTTPService, items: list[dict[str, Any]], **kw: Any) -> HTTPPush:
    kw.setdefault("stages", [5, None])
    kw.setdefault("gates", [Gate("look", at="stage")])
    return HTTPPush("push", svc, items=items, path=PATH, field="category", **kw)


def expected(before: dict[str, int | None], items: list[dict[str, Any]]) -> dict[str, Any]:
    return before | {i["uuid"]: i["category"] for i in items}


pg = pytest.mark.postgres


@pg
def test_staged_push_pauses_at_each_stage_and_rolls_back_exactly(
    tmp_path: Path, server: PeerTubeServer, pg_dsn: str, videos: list[str]
) -> None:
    before = categories_of(pg_dsn)
    items = wanted(videos[:30])
    assert before[videos[3]] == items[3]["category"] == 104  # nothing to do for this one
    svc = service(server, fingerprint_paths=["/api/v1/videos?count=1000"])
    fp_before = svc.fingerprint()
    step = push(svc, items, stages=[3, 10, None], batch_size=4)
    step.gates = [Gate("spot check", at="stage", approval=True, checks=[step.spot_check(2)])]
    assert step.tier is Tier.EXTERNAL
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / "s")
    done_after = []
    for _ in range(3):
        result = ex.run()
        assert result.status is RunStatus.PAUSED, result.message
        now = categories_of(pg_dsn)
        done_after.append(sum(now[i["uuid"]] == i["category"] for i in items))
        [check] = ex.journal.checks(result.run_id, result.paused_gate)
        assert (check["outcome"], check["evidence"]["read"]) == ("pass", 2)
        assert result.paused_gate is not None
        ex.journal.approve(result.run_id, result.paused_gate, "approve", "me", ex.plan_hash)
    # 3 (and video 3, which held its value from the start), then 10 more, then the rest
    assert done_after == [4, 13, 30]
    assert ex.run().status is RunStatus.COMPLETED
    assert categories_of(pg_dsn) == expected(before, items)
    assert len(server.writes()) == 29  # one PUT per video that changed
    assert svc.fingerprint() != fp_before
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0, undone.conflicts
    assert categories_of(pg_dsn) == before  # None, 13, 15, 104, 116 back, not "NULL >= 100"
    assert svc.fingerprint() == fp_before


@pg
def test_rate_limit_is_respected(tmp_path: Path, server: PeerTubeServer, videos: list[str]) -> None:
    svc = service(server, rate_limit=25)
    step = push(svc, wanted(videos[:10]), plan_sample=2, verify_sample=2)
    started = time.monotonic()
    _, result = run_runbook(Runbook("t", steps=[step]), tmp_path, auto_approve=True)
    assert result.status is RunStatus.COMPLETED
    times = [r.at for r in server.requests if r.at >= started]
    assert len(times) >= 22  # 2 plan reads, a GET and a PUT per item, 2 read-backs
    # Arrival times jitter by a few ms, so: no burst (unlimited, requests arrive ~2 ms
    # apart), every 5 intervals take at least 5/25 s (less 10%), and the mean rate holds.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.02, gaps
    assert min(b - a for a, b in zip(times, times[5:], strict=False)) >= 0.2 * 0.9
    assert (len(times) - 1) / (times[-1] - times[0]) <= 25


def test_token_bucket_allows_a_burst_then_spaces() -> None:
    bucket = TokenBucket(50, burst=3)
    waits = [bucket.acquire() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert all(w > 0 for w in waits[3:])


@pg
def test_retries_429_and_5xx_with_backoff(
    tmp_path: Path, server: PeerTubeServer, pg_dsn: str, videos: list[str]
) -> None:
    before = categories_of(pg_dsn)
    server.faults = Faults(
        methods=frozenset({"GET", "PUT"}), script=["500", "ok", "429", "503", "ok"]
    )
    items = wanted(videos[:3])
    step = push(service(server, backoff=0.05), items, plan_sample=0, verify_sample=0)
    _, result = run_runbook(Runbook("t", steps=[step]), tmp_path, auto_approve=True)
    assert result.status is RunStatus.COMPLETED
    log = server.requests
    assert [(r.method, r.status) for r in log[:6]] == [
        ("GET", 500),  # a read: retried after a backoff
        ("GET", 200),
        ("PUT", 429),  # throttled: retried after Retry-After (1 s)
        ("PUT", 503),  # unknown outcome: read back before sending again
        ("GET", 200),
        ("PUT", 204),
    ]
    assert log[1].at - log[0].at >= 0.025  # backoff: at least half of 0.05 s
    assert log[3].at - log[2].at >= 1.0  # Retry-After honoured
    assert categories_of(pg_dsn) == expected(before, items)
    assert len(server.writes()) == 3


@pg
def test_unknown_outcome_is_read_back_not_sent_twice(
    tmp_path: Path, server: PeerTubeServer, pg_dsn: str, videos: list[str]
) -> None:
    before = categories_of(pg_dsn)
    # Applied then dropped, applied then no answer until the client times out, and lost
    # before being applied.
    server.faults = Faults(script=["drop", "hang", "lose"], hang_seconds=0.6)
    items = wanted(videos[:6])
    step = push(service(server, timeout=0.3), items, plan_sample=0)
    ex = make_executor(Runbook("t", steps=[step]), tmp_path, auto_approve=True)
    result = ex.run()
    assert result.status is RunStatus.COMPLETED, result.message
    assert categories_of(pg_dsn) == expected(before, items)
    puts = [r.fault for r in server.writes(applied_only=False)]
    assert puts == ["drop", "hang", "lose", "ok", "ok", "ok"]  # only the lost one again
    assert len(server.writes()) == 5  # every video changed exactly once (video 3 held it)
    store = PushStore(ex.journal.run_dir(result.run_id) / "push" / STORE_FILE)
    assert store.counts() == {"confirmed": 5, "unchanged": 1}
    store.close()
    [verified] = [c for c in ex.journal.checks(result.run_id) if "confirmed" in c["name"]]
    stats = verified["evidence"]["requests"]
    assert (stats["unknown_outcome"], stats["verified_applied"]) == (3, 2)


@pg
def test_rollback_reports_a_video_changed_since_and_force_restores_it(
    tmp_path: Path, server: PeerTubeServer, pg_dsn: str, videos: list[str]
) -> None:
    before = categories_of(pg_dsn)
    items = wanted(videos[:20])
    ex = make_executor(
        Runbook("t", steps=[push(service(server), items)]), tmp_path, auto_approve=True
    )
    result = ex.run()
    assert result.status is RunStatus.COMPLETED
    theirs = videos[7]
    server.execute("UPDATE video SET category = 2 WHERE uuid = %s", (theirs,))  # by hand
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 1
    assert undone.conflicts == [
        f"/api/v1/videos/{theirs}: holds 2, this run wrote {items[7]['category']}; left alone"
    ]
    now = categories_of(pg_dsn)
    assert now == before | {theirs: 2}  # everyone else back; their edit kept
    forced = ex.rollback(result.run_id, force=True)
    assert forced.exit_code == 0
    assert categories_of(pg_dsn) == before


@pg
def test_a_video_missing_on_the_service_is_rejected_not_fatal(
    tmp_path: Path, server: PeerTubeServer, pg_dsn: str, videos: list[str]
) -> None:
    gone = "00000000-0000-4000-8000-000000000000"
    items = [*wanted(videos[:4]), {"uuid": gone, "category": 101}]
    ex = make_executor(
        Runbook("t", steps=[push(service(server), items)]), tmp_path, auto_approve=True
    )
    result = ex.run()
    assert result.status is RunStatus.COMPLETED, result.message
    [reject] = ex.journal.rejects(result.run_id)
    assert reject["key"] == f"/api/v1/videos/{gone}"
    assert "404" in reject["reason"]
    assert ex.rollback(result.run_id).exit_code == 0


RUNBOOK = """
import json
from pathlib import Path
from handrail import Gate, Runbook
from handrail.steps.http_push import HTTPPush
from handrail.resources.http import HTTPService

here = Path(__file__).parent
peertube = HTTPService("peertube", "{url}", token_env="{env}", backoff=0.01)

def pending(ctx):
    return json.loads((here / "items.json").read_text())

runbook = Runbook("push-categories", steps=[
    HTTPPush("push categories", peertube, items=pending, path="/api/v1/videos/{{uuid}}",
             field="category", stages=[4, 10, None], batch_size=3,
             gates=[Gate("look", at="stage", approval=True)]),
])
"""


def _run_killed(rb: Path, server: PeerTubeServer, kill: tuple[str, int]) -> int:
    """Run the CLI; the server kills it when the kill-th write arrives or has applied."""
    phase, n = kill
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [*HANDRAIL, "run", str(rb), "--yes"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def on_write(k: int, uuid: str, at: str) -> str | None:
        if k == n and at == phase:
            os.kill(proc.pid, signal.SIGKILL)
            return "lose" if phase == "received" else None
        return None

    server.faults = Faults(on_write=on_write)
    try:
        return proc.wait(timeout=60)
    finally:
        server.faults = Faults()


@pg
@pytest.mark.parametrize(
    "kill",
    [
        ("received", 6),  # sent, never applied
        ("applied", 11),  # applied, the answer never read
        ("journal", 22),  # between two batches of stage 2 (HANDRAIL_TEST_CRASH_AT_EVENT)
    ],
)
def test_kill_during_push_resumes_to_the_same_state(
    tmp_path: Path,
    server: PeerTubeServer,
    pg_dsn: str,
    videos: list[str],
    kill: tuple[str, int],
) -> None:
    import json

    before = categories_of(pg_dsn)
    items = wanted(videos[:24])
    (tmp_path / "items.json").write_text(json.dumps(items))
    rb = write(tmp_path / "rb.py", RUNBOOK.format(url=server.url, env=TOKEN_ENV))
    if kill[0] == "journal":
        killed = cli_proc("run", rb, "--yes", env={CRASH_ENV: str(kill[1])}).returncode
    else:
        killed = _run_killed(rb, server, kill)
    assert killed == -signal.SIGKILL
    resumed = cli_proc("run", rb, "--yes")
    assert resumed.returncode == 0, resumed.stderr
    assert categories_of(pg_dsn) == expected(before, items)
    assert len(server.writes()) == 23  # each change applied exactly once (video 3 held it)
    undone = cli_proc("rollback", rb)
    assert undone.returncode == 0, undone.stderr
    assert categories_of(pg_dsn) == before
    # Policy 7: the token is nowhere handrail writes.
    for f in (tmp_path / ".handrail").rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f
    for out in (resumed.stdout, resumed.stderr, undone.stdout, undone.stderr):
        assert TOKEN not in out


@pg
def test_bad_or_missing_token_is_a_clear_error(
    tmp_path: Path, server: PeerTubeServer, videos: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "items.json", "[]")
    rb = write(tmp_path / "rb.py", RUNBOOK.format(url=server.url, env=TOKEN_ENV))
    missing = cli_proc("run", rb, "--yes", env={TOKEN_ENV: ""})
    assert missing.returncode == 2
    assert f"{TOKEN_ENV} holding the API token is not set" in missing.stderr
    monkeypatch.setenv(TOKEN_ENV, "wrong-token-1234")
    step = push(service(server), wanted(videos[:2]))
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / "s", auto_approve=True)
    with pytest.raises(CredentialsRefused) as refused:  # bad input: exit 2
        ex.run()
    assert refused.value.exit_code == 2
    assert "401 Unauthorized: the service refused the credentials" in str(refused.value)
    assert "wrong-token-1234" not in str(refused.value)
    # the run is kept, failed and resumable, until the token is right
    run = ex.journal.latest_run(ex.key)
    assert run is not None
    assert run.status is RunStatus.FAILED


def test_external_push_must_be_staged_and_is_never_rehearsed_on_production(
    tmp_path: Path,
) -> None:
    svc = HTTPService("peertube", "http://127.0.0.1:9", token_env=TOKEN_ENV)
    unstaged = HTTPPush("push", svc, items=[], path=PATH, field="category")
    with pytest.raises(PolicyError, match="must run in stages"):
        make_executor(Runbook("t", steps=[unstaged]), tmp_path, auto_approve=True).run()
    with pytest.raises(ResourceError, match="no sandbox_url"):
        svc.clone(tmp_path)
    sandbox = HTTPService("peertube", "https://pt.example", sandbox_url="http://127.0.0.1:8")
    assert sandbox.clone(tmp_path).base_url == "http://127.0.0.1:8"
    with pytest.raises(ResourceError, match="cannot be restored from a backup"):
        svc.restore(svc.snapshot(tmp_path))
    assert TOKEN not in str(svc.settings()) + svc.describe()


def test_push_needs_path_and_field_or_read_and_write() -> None:
    from handrail import RunbookError

    svc = HTTPService("peertube", "http://127.0.0.1:9")
    with pytest.raises(RunbookError, match="path and field"):
        HTTPPush("p", svc, items=[], field="category")
    with pytest.raises(RunbookError, match="both read and write"):
        HTTPPush("p", svc, items=[], read=lambda r, i: None)
