"""Benchmark: copy a 1,000,000-row mixed-type SQLite table into PostgreSQL.

Contenders, one run on the same data against one throwaway cluster (TempCluster):

- handrail: ``copy_table`` with conversions (TEXT timestamps -> timestamptz, JSON text ->
  jsonb, 0/1 -> boolean), duplicate natural keys resolved, each batch upserted and
  journalled in the ledger in the same transaction. Each batch is read by ADBC into Arrow,
  checked and converted by Arrow's kernels, and, into the empty table, COPYed straight into
  the target in binary (while no key exists, the upsert is an insert; the first unique
  violation switches to ``COPY`` into staging plus ``INSERT ... ON CONFLICT (video_id) DO
  UPDATE ... WHERE IS DISTINCT FROM``). It then re-syncs the full table after 1% of the
  source rows changed, which takes the ON CONFLICT path throughout;
- handrail with the SQL reader (``arrow=False``: SQLite builds CSV lines in SQL), the
  copy without pyarrow, to show what the Arrow reader buys;
- pgloader (Debian package ``pgloader``): its own load of the table (it creates the table
  with its type mapping; no upsert, no conversions of epoch text, no journal);
- a plain psycopg ``executemany`` of the converted rows with the same upsert, on a subset,
  extrapolated to the full row count (said so in the output);
- the floor: a raw ``COPY`` of a ready CSV of the same rows into an unindexed table.

Not a test: nothing asserts on time.

    .venv/bin/python bench/copy_pg.py --rows 1000000
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from _data import PG_SCHEMA, cached_sqlite

from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
from handrail.tablecopy.copy import CopyJob, copy_table
from handrail.tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
from handrail.testing.postgres import TempCluster

DATA = Path(__file__).parent / ".data"

MAPPING = TableMap(
    "content",
    "content",
    key=["video_id"],
    order_by=["id"],
    columns=[
        Column("video_id"),
        Column("id"),
        Column("title"),
        Column("views"),
        Column("score"),
        Column("published_at", convert=timestamptz()),
        Column("indexed_at", convert=timestamptz()),
        Column("has_audio", convert=boolean()),
        Column("subcategories_json", convert=jsonb()),
        Column("summary"),
    ],
)


def busy_cpu() -> float:
    """CPU seconds the whole machine spent busy (Linux /proc/stat; 0 elsewhere): with the
    machine otherwise idle, a contender's delta is its CPU over every process it uses
    (PostgreSQL's backend, pgloader, handrail's readers)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


CPU: dict[str, list[float]] = {}


def timed(name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``, keeping the machine's busy CPU seconds it took under ``name``."""
    before = busy_cpu()
    out = fn()
    CPU.setdefault(name, []).append(busy_cpu() - before)
    return out


def fresh(pg: TempCluster, name: str, schema: str | None = PG_SCHEMA) -> str:
    dsn = pg.create_database(name)
    if schema:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema.encode())
    return dsn


def run_handrail_sql(pg: TempCluster, src: Path, n: int) -> float:
    """The first load by the SQL reader (no Arrow): seconds."""
    dsn = fresh(pg, "b_handrail_sql")
    t = time.perf_counter()
    res = timed(
        "handrail, SQL reader",
        lambda: copy_table(
            SQLite("src", src), Postgres("pg", dsn), MAPPING, run_id="b", step="copy", arrow=False
        ),
    )
    assert res.read == n, res.read
    return time.perf_counter() - t


def run_handrail(pg: TempCluster, src: Path, n: int) -> tuple[float, float]:
    """A first load into the empty table, then a re-sync of the same table after 1% of the
    source rows changed: (first load seconds, re-sync seconds)."""
    dsn = fresh(pg, "b_handrail")
    t = time.perf_counter()
    res = timed(
        "handrail",
        lambda: copy_table(
            SQLite("src", src), Postgres("pg", dsn), MAPPING, run_id="b", step="copy"
        ),
    )
    el = time.perf_counter() - t
    assert res.read == n, res.read
    changed = DATA / "content-changed.sqlite"
    shutil.copyfile(src, changed)
    with closing(sqlite3.connect(changed)) as conn:
        conn.execute("UPDATE content SET title = title || ' (edited)' WHERE id % 100 = 0")
        conn.commit()
    t = time.perf_counter()
    res = copy_table(SQLite("src", changed), Postgres("pg", dsn), MAPPING, run_id="b2", step="copy")
    resync = time.perf_counter() - t
    changed.unlink()
    assert res.updated >= n // 100 - n // 997, (res.updated, res.inserted)
    return el, resync


def run_pgloader(pg: TempCluster, src: Path, n: int) -> float | None:
    exe = shutil.which("pgloader")
    if exe is None:
        return None
    dsn = fresh(pg, "b_pgloader", None)
    load = DATA / "content.load"
    load.write_text(
        f"LOAD DATABASE FROM sqlite://{src} INTO {dsn}\n"
        "WITH include drop, create tables, create indexes, reset sequences,\n"
        "     workers = 2, concurrency = 1, batch rows = 25000\n"
        "INCLUDING ONLY TABLE NAMES LIKE 'content';\n"
    )
    t = time.perf_counter()
    proc = timed(
        "pgloader",
        lambda: subprocess.run([exe, str(load)], capture_output=True, text=True, check=False),
    )
    el = time.perf_counter() - t
    with psycopg.connect(dsn) as conn:
        (count,) = conn.execute("SELECT count(*) FROM content").fetchone() or (0,)
    if proc.returncode != 0 or count != n:
        print(f"pgloader failed (exit {proc.returncode}, {count} rows): {proc.stderr[-500:]}")
        return None
    return el


def run_executemany(pg: TempCluster, src: Path, subset: int) -> float:
    """Seconds for ``subset`` rows: converted in Python, one upsert per row, batched."""
    dsn = fresh(pg, "b_executemany")
    job = CopyJob(SQLite("src", src), Postgres("pg", dsn), MAPPING)
    try:
        cols = job.mapper.targets
        sql = (
            f"INSERT INTO content ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))}) "
            f"ON CONFLICT (video_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in cols if c != "video_id")
        )
        t = time.perf_counter()
        with closing(sqlite3.connect(src)) as s, psycopg.connect(dsn) as conn:
            raw = s.execute(
                f"SELECT {', '.join(job.mapper.select)} FROM content ORDER BY id LIMIT ?",
                (subset,),
            ).fetchall()
            rows = []
            for r in raw:
                got = job.mapper.convert(r)
                if hasattr(got, "values"):
                    rows.append(
                        tuple(
                            psycopg.types.json.Jsonb(__import__("json").loads(v))
                            if b.kind == "json" and v is not None
                            else v
                            for b, v in zip(job.mapper.columns, got.values, strict=True)
                        )
                    )
            with conn.cursor() as cur:
                for i in range(0, len(rows), 10_000):
                    cur.executemany(sql.encode(), rows[i : i + 10_000])
                    conn.commit()
        return time.perf_counter() - t
    finally:
        job.close()


def run_raw_copy(pg: TempCluster, src: Path, n: int) -> float:
    dsn = fresh(pg, "b_rawcopy", PG_SCHEMA.replace("PRIMARY KEY", ""))
    csv_path = DATA / f"content-{n}.csv"
    if not csv_path.exists():
        with closing(sqlite3.connect(src)) as s, csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            for r in s.execute(
                "SELECT video_id, id, title, views, score, "
                "CASE WHEN published_at GLOB '[0-9]*-*' THEN published_at END, indexed_at, "
                "has_audio = 1, NULLIF(CASE WHEN json_valid(subcategories_json) "
                "THEN subcategories_json END, ''), summary FROM content"
            ):
                w.writerow(["" if v is None else v for v in r])
    t = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY content FROM STDIN (FORMAT csv)") as cp, csv_path.open("rb") as f:
            while chunk := f.read(1 << 20):
                cp.write(chunk)
        conn.commit()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--subset", type=int, default=50_000, help="rows for executemany")
    args = ap.parse_args()
    n = args.rows
    src = cached_sqlite(DATA, n)
    times: dict[str, list[float]] = {}
    resync: list[float] = []
    per_round: list[float] = []
    with TempCluster() as pg:
        for _ in range(args.repeat):
            first, again = run_handrail(pg, src, n)
            times.setdefault("handrail", []).append(first)
            resync.append(again)
            times.setdefault("handrail, SQL reader", []).append(run_handrail_sql(pg, src, n))
            pl = run_pgloader(pg, src, n)
            if pl is not None:
                times.setdefault("pgloader", []).append(pl)
                per_round.append(pl / first)
            sub = min(args.subset, n)
            times.setdefault("executemany (extrapolated)", []).append(
                run_executemany(pg, src, sub) * n / sub
            )
            times.setdefault("raw COPY of a ready CSV (floor)", []).append(run_raw_copy(pg, src, n))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{n:,} rows, median of {args.repeat} run(s)")
    for k, s in med.items():
        print(f"  {k:34s} {s:8.2f} s  {n / s:12,.0f} rows/s")
    h = med["handrail"]
    for k, s in med.items():
        if k != "handrail":
            print(f"  handrail vs {k}: {s / h:.2f}x")
    if per_round:
        rounds = ", ".join(f"{r:.2f}" for r in per_round)
        mid = statistics.median(per_round)
        print(f"  handrail vs pgloader per round: {rounds} (median {mid:.2f}x)")
    r = statistics.median(resync)
    print(
        f"  handrail re-sync after 1% of rows changed (upsert into the full table): "
        f"{r:.2f} s, {n / r:,.0f} rows/s (pgloader cannot upsert)"
    )
    for k, v in CPU.items():
        print(f"  {k} CPU over all its processes: {statistics.median(v) * 1e6 / n:.1f} us/row")
    print(f"  executemany measured on {min(args.subset, n):,} rows and scaled to {n:,}")


if __name__ == "__main__":
    main()
