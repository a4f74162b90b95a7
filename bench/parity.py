"""Benchmark: parity of a 1,000,000-row SQLite table and its PostgreSQL copy, against a
plain full read of both tables into Python.

handrail's parity hashes key-ordered segments inside each database (PostgreSQL in the
server; SQLite with row texts built in SQL) and compares digests, reading rows only of
segments that differ. The baseline only reads every row of both tables into Python
(``fetchmany``), without converting or comparing anything: a floor for any comparison
done in Python.

Not a test: nothing asserts on time.

    .venv/bin/python bench/parity.py --rows 1000000
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import time
from contextlib import closing
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from _data import PG_SCHEMA, cached_sqlite
from copy_pg import MAPPING

from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
from handrail.tablecopy.copy import copy_table
from handrail.tablecopy.parity import parity
from handrail.testing.postgres import TempCluster

DATA = Path(__file__).parent / ".data"


def full_read(src: Path, dsn: str) -> float:
    t = time.perf_counter()
    n = 0
    with closing(sqlite3.connect(src)) as s:
        cur = s.execute("SELECT * FROM content ORDER BY id")
        while rows := cur.fetchmany(10_000):
            n += len(rows)
    with psycopg.connect(dsn) as conn, conn.cursor(name="all") as cur:
        cur.execute("SELECT * FROM content ORDER BY video_id")
        while rows := cur.fetchmany(10_000):
            n += len(rows)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--readers", type=int, default=2, help="SQLite reader processes")
    args = ap.parse_args()
    src_path = cached_sqlite(DATA, args.rows)
    src = SQLite("src", src_path)
    with TempCluster() as pg:
        dsn = pg.create_database("parity")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(PG_SCHEMA.encode())
        tgt = Postgres("pg", dsn)
        copy_table(src, tgt, MAPPING, run_id="b", step="copy")
        ours, base = [], []
        for n in range(args.repeat):
            t = time.perf_counter()
            report = parity(src, tgt, MAPPING, readers=args.readers)
            ours.append(time.perf_counter() - t)
            assert report.equal, report.summary()
            base.append(full_read(src_path, dsn))
            print(
                f"  round {n + 1}: parity {ours[-1]:6.2f} s, full read {base[-1]:6.2f} s, "
                f"ratio {ours[-1] / base[-1]:5.2f}",
                flush=True,
            )
        with psycopg.connect(dsn, autocommit=True) as conn:
            changed, deleted = f"v{args.rows // 2:09d}", f"v{args.rows * 7 // 10:09d}"
            conn.execute(f"UPDATE content SET title = 'x' WHERE video_id = '{changed}'".encode())
            conn.execute(f"DELETE FROM content WHERE video_id = '{deleted}'".encode())
        t = time.perf_counter()
        report = parity(src, tgt, MAPPING, readers=args.readers)
        planted = time.perf_counter() - t
    a, b = statistics.median(ours), statistics.median(base)
    print(f"{args.rows:,} rows, {args.readers} SQLite reader process(es), median of {args.repeat}")
    print(f"  handrail parity (equal tables)       {a:8.2f} s")
    print(f"  full read of both tables into Python {b:8.2f} s")
    print(f"  ratio parity / full read             {a / b:8.2f}")
    print(f"  parity with 2 planted differences    {planted:8.2f} s: {report.summary()}")


if __name__ == "__main__":
    main()
