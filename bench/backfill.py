"""Benchmark: a 1,000,000-row backfill with handrail's undo log against the same batched
UPDATE without it, in one run on the same data; then handrail's rollback.

Not a test: nothing asserts on time. Both contenders read each batch's rows, compute the
new values in the same Python function, and write them in batches of the same size in one
transaction per batch. handrail additionally writes the undo rows, captures what the table
stored, writes its ledger row in the same transaction, and commits its journal per batch.

Both clocks cover the batches only: plain's starts once it has its key list, handrail's
(the step's apply_seconds) once the step has frozen its work list. Each round prints the
wall-clock ratio and the CPU-time ratio; on a shared machine the CPU ratio is the steadier
one (it misses only the time spent waiting on fsync).

    .venv/bin/python bench/backfill.py --rows 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from handrail import Backfill, Executor, Journal, Observer, Runbook, RunOptions, SQLite

console = Console()
DATA = Path(__file__).parent / ".data"
DOMAINS = ["Medical", "Water Systems", "Navigation", "Shelter & Construction", "Vehicles"]


def compute(row: dict[str, Any]) -> dict[str, Any]:
    words = row["words"]
    if words < 150:
        return {"domain_status": "needs_reprocess"}
    return {
        "domain": DOMAINS[words % len(DOMAINS)],
        "domain_status": "assigned",
        "assigned_at": "2026-11-21T00:00:00Z",
    }


def build(path: Path, rows: int) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE documents (hash TEXT PRIMARY KEY, status TEXT, filename TEXT, "
            "words INTEGER, domain TEXT, domain_status TEXT, assigned_at TEXT)"
        )
        conn.executemany(
            "INSERT INTO documents VALUES (?,?,?,?,NULL,NULL,NULL)",
            (
                (
                    f"{i * 2654435761 % 2**32:08x}{i:07d}",
                    "catalogued",
                    f"video_{i}.mp4",
                    i * 7919 % 1000,
                )
                for i in range(rows)
            ),
        )
        conn.commit()


class Seconds:
    """Wall and CPU seconds of one contender's batches."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0


def plain(path: Path, batch: int) -> Seconds:
    """The same backfill without undo: read a batch in key order, compute, UPDATE."""
    cols = ["domain", "domain_status", "assigned_at"]
    took = Seconds()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.row_factory = sqlite3.Row
        keys = [r[0] for r in conn.execute("SELECT hash FROM documents ORDER BY hash")]
        t, cpu = time.perf_counter(), time.process_time()
        for lo in range(0, len(keys), batch):
            chunk = keys[lo : lo + batch]
            conn.execute("BEGIN IMMEDIATE")
            updates = []
            for lo2 in range(0, len(chunk), 900):
                part = chunk[lo2 : lo2 + 900]
                for r in conn.execute(
                    f"SELECT * FROM documents WHERE hash IN ({','.join('?' * len(part))})", part
                ):
                    row = dict(r)
                    new = compute(row)
                    updates.append([new.get(c, row[c]) for c in cols] + [row["hash"]])
            conn.executemany(
                "UPDATE documents SET domain=?, domain_status=?, assigned_at=? WHERE hash=?",
                updates,
            )
            conn.execute("COMMIT")
        took.wall, took.cpu = time.perf_counter() - t, time.process_time() - cpu
    return took


class CPUClock(Observer):
    """CPU seconds from the step's first progress report (work list frozen) to its last."""

    def __init__(self) -> None:
        self.start = self.seconds = 0.0

    def progress(self, step: str, done: int, total: int) -> None:
        if done == 0:
            self.start = time.process_time()
        if done == total:
            self.seconds = time.process_time() - self.start


def with_handrail(path: Path, batch: int, state: Path) -> tuple[Seconds, float]:
    db = SQLite("recon", path)
    step = Backfill(
        "assign",
        db,
        table="documents",
        key="hash",
        columns=["domain", "domain_status", "assigned_at"],
        compute=compute,
        batch_size=batch,
    )
    journal = Journal(state)
    clock = CPUClock()
    ex = Executor(
        Runbook("bench", steps=[step]),
        journal,
        runbook_key=str(path),
        options=RunOptions(observer=clock),
    )
    result = ex.run()
    assert result.exit_code == 0, result.message
    took = Seconds()
    took.wall = journal.step(result.run_id, "assign").apply_seconds or 0.0
    took.cpu = clock.seconds
    t = time.perf_counter()
    undone = ex.rollback(result.run_id)
    rollback_s = time.perf_counter() - t
    assert undone.exit_code == 0, undone.message
    journal.close()
    return took, rollback_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    DATA.mkdir(exist_ok=True)
    template = DATA / f"backfill-{args.rows}.db"
    if not template.exists():
        with console.status(f"building {args.rows:,} rows"):
            build(template, args.rows)
    times: dict[str, list[float]] = {"plain": [], "handrail": [], "rollback": []}
    cpu_ratios: list[float] = []
    for round_no in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=DATA) as tmp:
            a, b = Path(tmp) / "a.db", Path(tmp) / "b.db"
            shutil.copy(template, a)
            shutil.copy(template, b)
            # Alternate who goes first so neither always gets the warmer cache.
            if round_no % 2:
                h, r = with_handrail(b, args.batch, Path(tmp) / "state")
                p = plain(a, args.batch)
            else:
                p = plain(a, args.batch)
                h, r = with_handrail(b, args.batch, Path(tmp) / "state")
        times["plain"].append(p.wall)
        times["handrail"].append(h.wall)
        times["rollback"].append(r)
        cpu_ratios.append(h.cpu / p.cpu)
        console.print(
            f"round {round_no + 1}: plain {p.wall:.2f}s, handrail {h.wall:.2f}s "
            f"(x{h.wall / p.wall:.2f}; CPU {p.cpu:.2f}s vs {h.cpu:.2f}s, x{h.cpu / p.cpu:.2f}), "
            f"rollback {r:.2f}s"
        )
    med = {k: statistics.median(v) for k, v in times.items()}
    table = Table(
        title=f"Backfill of {args.rows:,} rows, batches of {args.batch} (median of {args.repeat})"
    )
    for col in ("contender", "median s", "rows/s", "x plain"):
        table.add_column(col, justify="left" if col == "contender" else "right")
    for name, label in (
        ("plain", "batched UPDATE, no undo"),
        ("handrail", "handrail Backfill (undo log + ledger + journal)"),
        ("rollback", "handrail rollback (conflict-checked)"),
    ):
        table.add_row(
            label,
            f"{med[name]:.2f}",
            f"{args.rows / med[name]:,.0f}",
            f"{med[name] / med['plain']:.2f}",
        )
    console.print(table)
    ratios = [h / p for h, p in zip(times["handrail"], times["plain"], strict=True)]
    console.print(
        f"ratio handrail/plain = {med['handrail'] / med['plain']:.2f} of medians, "
        f"{statistics.median(ratios):.2f} median of the per-round ratios "
        f"({min(ratios):.2f}-{max(ratios):.2f}; goal <= 1.25); CPU time "
        f"{statistics.median(cpu_ratios):.2f} median ({min(cpu_ratios):.2f}-{max(cpu_ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
