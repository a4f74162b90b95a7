"""Benchmark: what a verified handrail SQLite snapshot costs next to `cp` and `sqlite3 .backup`.

Not a test: nothing here asserts on time. It builds (once, cached under bench/.data/, which
is gitignored) a SQLite database of at least ``--mb`` megabytes with a realistic mix of
tables, then times, ``--repeat`` times each after one untimed warm-up round:

    cp                        subprocess `cp DB OUT` (no fsync)
    sqlite3 .backup           subprocess `sqlite3 DB ".backup OUT"` (no fsync)
    handrail snapshot         SQLite("db", DB).snapshot(dest) (fsyncs the artefact)
    handrail verify_backup    verify_backup(resource, backup, scratch) of a fresh snapshot
    handrail snapshot+verify  that snapshot and its verify_backup, back to back
    handrail fingerprint      resource.fingerprint() alone

and prints a table of medians with the ratios to `cp` and to `sqlite3 .backup`. OS caches
cannot be dropped without root, so every timing is warm-cache; the warm-up round makes that
equal for all contenders. `--profile` adds a cProfile breakdown of one handrail snapshot.

    .venv/bin/python bench/snapshot.py --mb 600 --repeat 3 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from handrail.resources.base import Backup, verify_backup
from handrail.resources.sqlite import SQLite

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"
MB = 1_000_000
CHUNK_ROWS = 250_000

# Wide enough for the tables when output goes to a file or a pipe (Rich assumes 80 there).
console = Console(width=None if sys.stdout.isatty() else 120)


# -- the database ------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE channels (
    id INTEGER PRIMARY KEY,
    number TEXT NOT NULL,
    name TEXT NOT NULL,
    favourite INTEGER NOT NULL
);
-- the bulk: one row per recorded programme segment, integer key
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL REFERENCES channels(id),
    recorded_at TEXT NOT NULL,
    title TEXT NOT NULL,
    duration REAL NOT NULL,
    size_bytes INTEGER NOT NULL,
    status TEXT NOT NULL,
    payload TEXT
);
CREATE INDEX idx_events_channel_time ON events (channel_id, recorded_at);
CREATE INDEX idx_events_status ON events (status);
-- a text-keyed table like the app's executions (id VARCHAR PRIMARY KEY)
CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    elapsed_seconds REAL,
    error TEXT
);
"""

# Rows are generated inside SQLite (a recursive CTE) rather than in Python: ten times
# faster to build, and the content only needs realistic shapes and sizes, not meaning.
EVENTS_SQL = """
WITH RECURSIVE n(x) AS (SELECT :start UNION ALL SELECT x + 1 FROM n WHERE x < :stop)
INSERT INTO events (id, channel_id, recorded_at, title, duration, size_bytes, status, payload)
SELECT x,
       1 + abs(random()) % 200,
       strftime('%Y-%m-%dT%H:%M:%S', 1704067200 + x * 7, 'unixepoch'),
       printf('Show %d S%02dE%02d – %s', abs(random()) % 5000, 1 + abs(random()) % 30,
              1 + abs(random()) % 24,
              substr('Pilot   Finale  Part 2  Déjà Vu Holiday ', 1 + 8 * (abs(random()) % 5), 8)),
       abs(random() % 7200000) / 1000.0,
       abs(random()) % 10000000000,
       CASE abs(random()) % 10 WHEN 0 THEN 'failed' WHEN 1 THEN 'cancelled' ELSE 'completed' END,
       CASE WHEN abs(random()) % 20 = 0 THEN NULL ELSE lower(hex(randomblob(40))) END
FROM n
"""

EXECUTIONS_SQL = """
WITH RECURSIVE n(x) AS (SELECT :start UNION ALL SELECT x + 1 FROM n WHERE x < :stop)
INSERT INTO executions (id, title, status, started_at, elapsed_seconds, error)
SELECT printf('manual::/tank/recordings/Show %d/Show %d S%02dE%02d %d.mpg',
              x % 5000, x % 5000, 1 + x % 30, 1 + x % 24, x),
       printf('Show %d', x % 5000),
       CASE abs(random()) % 10 WHEN 0 THEN 'failed' ELSE 'completed' END,
       strftime('%Y-%m-%dT%H:%M:%f+00:00', 1704067200 + x * 60, 'unixepoch'),
       abs(random() % 3600000) / 1000.0,
       CASE WHEN abs(random()) % 10 = 0 THEN 'ffmpeg exited with code 1' END
FROM n
"""


def db_path(mb: int) -> Path:
    return DATA_DIR / f"snapshot-{mb}mb.sqlite"


def ensure_database(mb: int, *, rebuild: bool = False) -> Path:
    """The cached benchmark database of at least ``mb`` MB; built if missing."""
    path = db_path(mb)
    if path.exists() and not rebuild:
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    target = mb * MB
    conn = sqlite3.connect(str(partial), isolation_level=None)
    try:
        # Build speed only; the finished file is an ordinary rollback-journal database.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO channels VALUES (?, ?, ?, ?)",
            [(i, f"{i}.1", f"Channel {i} – Ñews", i % 7 == 0) for i in range(1, 201)],
        )
        conn.execute("COMMIT")
        done = 0
        with console.status("") as status:
            while True:
                size = page_bytes(conn)
                status.update(f"building {path.name}: {done:,} events, {size / MB:,.0f} MB")
                if size >= target:
                    break
                conn.execute("BEGIN")
                conn.execute(EVENTS_SQL, {"start": done + 1, "stop": done + CHUNK_ROWS})
                ex = done // 10
                conn.execute(EXECUTIONS_SQL, {"start": ex + 1, "stop": ex + CHUNK_ROWS // 10})
                conn.execute("COMMIT")
                done += CHUNK_ROWS
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    os.replace(partial, path)
    console.print(
        f"built {path} ({path.stat().st_size / MB:,.0f} MB) in "
        f"{time.perf_counter() - started:.0f} s"
    )
    return path


def page_bytes(conn: sqlite3.Connection) -> int:
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int(pages) * int(size)


# -- contenders ----------------------------------------------------------------------------


@dataclass
class Timings:
    """Wall-clock seconds of each timed repeat of one contender."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def fresh_dir(name: str) -> Path:
    path = DATA_DIR / "runs" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_cp(db: Path) -> dict[str, float]:
    out = fresh_dir("cp") / db.name
    t = time.perf_counter()
    subprocess.run(["cp", str(db), str(out)], check=True)
    return {"cp": time.perf_counter() - t}


def run_sqlite3_backup(db: Path) -> dict[str, float]:
    out = fresh_dir("sqlite3") / db.name
    t = time.perf_counter()
    subprocess.run(["sqlite3", str(db), f'.backup "{out}"'], check=True)
    return {"sqlite3 .backup": time.perf_counter() - t}


def run_snapshot(db: Path) -> dict[str, float]:
    dest = fresh_dir("snapshot")
    t = time.perf_counter()
    SQLite("db", db).snapshot(dest)
    return {"handrail snapshot": time.perf_counter() - t}


def run_snapshot_verify(db: Path) -> dict[str, float]:
    resource = SQLite("db", db)
    dest = fresh_dir("verify")
    scratch = DATA_DIR / "runs" / "scratch"
    t0 = time.perf_counter()
    backup: Backup = resource.snapshot(dest)
    t1 = time.perf_counter()
    verify_backup(resource, backup, scratch)
    t2 = time.perf_counter()
    return {"handrail verify_backup": t2 - t1, "handrail snapshot+verify": t2 - t0}


def run_fingerprint(db: Path) -> dict[str, float]:
    t = time.perf_counter()
    SQLite("db", db).fingerprint()
    return {"handrail fingerprint": time.perf_counter() - t}


CONTENDERS: list[Callable[[Path], dict[str, float]]] = [
    run_cp,
    run_sqlite3_backup,
    run_snapshot,
    run_snapshot_verify,
    run_fingerprint,
]
ORDER = [
    "cp",
    "sqlite3 .backup",
    "handrail snapshot",
    "handrail verify_backup",
    "handrail snapshot+verify",
    "handrail fingerprint",
]


def measure(db: Path, repeat: int) -> dict[str, Timings]:
    """One untimed warm-up round, then ``repeat`` rounds; contenders interleave per round."""
    results = {name: Timings(name) for name in ORDER}
    for round_no in range(repeat + 1):
        for contender in CONTENDERS:
            label = "warm-up" if round_no == 0 else f"round {round_no}/{repeat}"
            with console.status(f"{label}: {contender.__name__}"):
                got = contender(db)
            if round_no:
                for name, seconds in got.items():
                    results[name].seconds.append(seconds)
        shutil.rmtree(DATA_DIR / "runs", ignore_errors=True)
    return results


def journal_overhead(db: Path, repeat: int, *, rows: int = 20_000, batch: int = 200) -> Table:
    """What the journal costs per batch, in one run on the same rows:

    plain     one transaction per batch of upserts, nothing else (the floor)
    handrail  the executor's import of the same rows in the same batches: the undo log
              and ledger row in the target's transaction, plus the journal's own commit
              per batch (WAL, synchronous=FULL)
    journal   Journal.batch_done alone, the fsync-bound part
    """
    import tempfile

    from handrail import Executor, ImportRecords, Journal, Runbook, RunOptions, SourceRecord

    data = [(i, f"value {i}", i * 0.5) for i in range(rows)]
    schema = "CREATE TABLE items (id INTEGER PRIMARY KEY, value TEXT, score REAL)"

    def plain(path: Path) -> float:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute(schema)
            t = time.perf_counter()
            for lo in range(0, rows, batch):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO items VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET "
                    "value=excluded.value, score=excluded.score",
                    data[lo : lo + batch],
                )
                conn.execute("COMMIT")
            return time.perf_counter() - t

    def handrail(root: Path) -> float:
        path = root / "t.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(schema)
        target = SQLite("t", path)
        step = ImportRecords(
            "import",
            read=lambda ctx: [
                SourceRecord("bench", str(i), row) for i, *_ in data for row in [None]
            ],
            db=target,
            table="items",
            key="id",
            batch_size=batch,
            mapper=lambda rec: dict(zip(("id", "value", "score"), data[int(rec.key)], strict=True)),
        )
        journal = Journal(root / ".handrail")
        result = Executor(
            Runbook("bench", steps=[step]), journal, runbook_key=str(root), options=RunOptions()
        ).run()
        assert result.exit_code == 0, result.message
        seconds = journal.step(result.run_id, "import").apply_seconds or 0.0
        journal.close()
        return seconds

    def journal_only(root: Path) -> float:
        journal = Journal(root / ".handrail-j")
        run_id = journal.create_run(
            "k", "bench", "h", {"steps": [{"name": "s", "tier": "reversible"}]}
        )
        n = rows // batch
        journal.add_batches(run_id, "s", [(b, 0, [b]) for b in range(n)])
        t = time.perf_counter()
        for b in range(n):
            journal.batch_done(run_id, "s", b, 1)
        elapsed = time.perf_counter() - t
        journal.close()
        return elapsed

    timings: dict[str, list[float]] = {"plain": [], "handrail": [], "journal": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=DATA_DIR) as tmp:
            root = Path(tmp)
            timings["plain"].append(plain(root / "plain.db"))
            timings["handrail"].append(handrail(root))
            timings["journal"].append(journal_only(root))
    batches = rows // batch
    med = {k: statistics.median(v) for k, v in timings.items()}
    table = Table(
        title=f"Journal overhead: {rows:,} rows in {batches} batches of {batch} "
        f"(median of {repeat})"
    )
    for col in ("contender", "median s", "ms per batch", "x plain"):
        table.add_column(col, justify="right" if col != "contender" else "left")
    for name in ("plain", "handrail", "journal"):
        table.add_row(
            name,
            f"{med[name]:.3f}",
            f"{1000 * med[name] / batches:.2f}",
            f"{med[name] / med['plain']:.2f}",
        )
    table.caption = (
        f"overhead per batch: {1000 * (med['handrail'] - med['plain']) / batches:.2f} ms "
        "(undo log + ledger + journal commit)"
    )
    return table


# -- profile -------------------------------------------------------------------------------


def profile_snapshot(db: Path, top: int) -> Table:
    """cProfile one handrail snapshot; the calls that take the most time, inclusive."""
    dest = fresh_dir("profile")
    profiler = cProfile.Profile()
    profiler.enable()
    SQLite("db", db).snapshot(dest)
    profiler.disable()
    shutil.rmtree(DATA_DIR / "runs", ignore_errors=True)
    profile = pstats.Stats(profiler).get_stats_profile()
    total = max(profile.total_tt, 1e-9)
    rows = []
    for func, fp in profile.func_profiles.items():
        where = "~" if fp.file_name == "~" else f"{Path(fp.file_name).name}:{fp.line_number}"
        rows.append((fp.cumtime, fp.tottime, fp.ncalls, f"{func} ({where})"))
    rows.sort(reverse=True)
    table = Table(title=f"cProfile of one handrail snapshot ({total:.2f} s profiled)")
    table.add_column("function")
    table.add_column("calls", justify="right")
    table.add_column("own s", justify="right")
    table.add_column("incl. s", justify="right")
    table.add_column("incl. %", justify="right")
    for cumtime, tottime, ncalls, name in rows[:top]:
        table.add_row(
            name, ncalls, f"{tottime:.2f}", f"{cumtime:.2f}", f"{100 * cumtime / total:.0f}"
        )
    return table


# -- report --------------------------------------------------------------------------------


def report(db: Path, results: dict[str, Timings], repeat: int) -> Table:
    size = db.stat().st_size
    base_cp = results["cp"].median
    base_backup = results["sqlite3 .backup"].median
    table = Table(
        title=f"{db.name}: {size / MB:,.0f} MB, median of {repeat} warm-cache runs",
        caption="ratios: median / median of cp and of sqlite3 .backup (lower is better)",
    )
    table.add_column("contender")
    table.add_column("median s", justify="right")
    table.add_column("min–max s", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("× cp", justify="right")
    table.add_column("× sqlite3 .backup", justify="right")
    for name in ORDER:
        t = results[name]
        table.add_row(
            name,
            f"{t.median:.2f}",
            f"{min(t.seconds):.2f}–{max(t.seconds):.2f}",
            f"{size / MB / t.median:,.0f}",
            f"{t.median / base_cp:.1f}",
            f"{t.median / base_backup:.1f}",
        )
    return table


def describe(db: Path) -> str:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("channels", "events", "executions")
        }
    cli = subprocess.run(["sqlite3", "--version"], capture_output=True, text=True, check=True)
    rows = ", ".join(f"{t} {n:,}" for t, n in counts.items())
    return (
        f"rows: {rows}\n"
        f"python {platform.python_version()}, sqlite3 module SQLite {sqlite3.sqlite_version}, "
        f"CLI {cli.stdout.split()[0]}, {os.cpu_count()} CPUs"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=600, help="database size in MB (default 600)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs each (default 3)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one handrail snapshot"
    )
    args = parser.parse_args(argv)
    if shutil.which("sqlite3") is None:
        console.print("[red]the sqlite3 command-line shell is not installed[/red]")
        return 2
    db = ensure_database(args.mb, rebuild=args.rebuild)
    console.print(describe(db))
    results = measure(db, args.repeat)
    console.print(report(db, results, args.repeat))
    console.print(journal_overhead(db, max(args.repeat, 3)))
    if args.profile:
        console.print(profile_snapshot(db, top=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
