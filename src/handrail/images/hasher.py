"""Hash many image files on all cores, with a persistent cache and per-image timings.

:func:`hash_files` stats every path, serves unchanged files from a :class:`HashCache` (an
SQLite file keyed by path, size, mtime_ns and mode), and hashes the rest in worker processes,
a bounded number of chunks in flight, so memory stays flat however long the list. It calls
``on_progress(done, total)`` as chunks finish and never prints; the caller draws the bar.

    run = hash_files(paths, cache="dhash-cache.sqlite", on_progress=bar.update)
    run.results, run.errors, run.mean_seconds, run.p95_seconds
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from types import TracebackType

from PIL import Image

from ._pool import context, default_workers
from .dhash import DEFAULT_MAX_PIXELS, MODES, HashError, ImageHash, Mode, Reason, dhash_file

__all__ = ["HashCache", "HashRun", "ProgressCallback", "default_workers", "hash_files"]

ProgressCallback = Callable[[int, int], None]

# Cache rows are written in transactions of this many files: one commit per chunk would cost
# more than the hashing on a large library, and a crash loses at most this much work.
_FLUSH_EVERY = 2000

# Reasons that follow from the file's bytes alone, so they stay true while size and mtime do.
# "oversized" depends on the caller's limit and "unreadable" on permissions: never cached.
_CACHEABLE_REASONS = frozenset(
    {Reason.EMPTY.value, Reason.NOT_AN_IMAGE.value, Reason.TRUNCATED.value, Reason.CORRUPT.value}
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dhash_cache (
    path     TEXT    NOT NULL,
    mode     TEXT    NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    dhash    TEXT,
    width    INTEGER,
    height   INTEGER,
    seconds  REAL,
    reason   TEXT,
    detail   TEXT,
    PRIMARY KEY (path, mode)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class HashRun:
    """The outcome of :func:`hash_files`: results and errors in input order, and timings."""

    results: list[ImageHash] = field(default_factory=list)
    errors: list[HashError] = field(default_factory=list)
    hashed: int = 0  # files opened (or tried: missing ones too) in this run
    cached: int = 0  # files answered by the cache
    seconds: float = 0.0  # wall time of the whole call
    timings: list[float] = field(default_factory=list)  # per-image seconds, hashed files only

    @property
    def total(self) -> int:
        return len(self.results) + len(self.errors)

    @property
    def mean_seconds(self) -> float:
        """Mean per-image hash time of the files hashed in this run (0.0 if none)."""
        return sum(self.timings) / len(self.timings) if self.timings else 0.0

    @property
    def p95_seconds(self) -> float:
        """95th percentile per-image hash time, nearest-rank method (0.0 if none)."""
        if not self.timings:
            return 0.0
        ordered = sorted(self.timings)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class HashCache:
    """dHashes of files by ``(path, size, mtime_ns, mode)`` in an SQLite file.

    One row per ``(absolute path, mode)``: a changed file replaces its row, so the cache does
    not grow with edits. Usable as a context manager; only one process should write at a time.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HashCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def lookup(
        self, keys: Sequence[tuple[str, int, int]], mode: Mode
    ) -> dict[str, ImageHash | HashError]:
        """Cached outcomes for ``(absolute path, size, mtime_ns)`` keys that still match."""
        found: dict[str, ImageHash | HashError] = {}
        wanted = {path: (size, mtime) for path, size, mtime in keys}
        names = list(wanted)
        for start in range(0, len(names), 500):  # stay under SQLite's bound-parameter limit
            batch = names[start : start + 500]
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(
                "SELECT path, size, mtime_ns, dhash, width, height, seconds, reason, detail"
                f" FROM dhash_cache WHERE mode = ? AND path IN ({marks})",
                [mode, *batch],
            )
            for path, size, mtime, dhash, width, height, seconds, reason, detail in rows:
                if wanted[path] != (size, mtime):
                    continue
                if dhash is not None:
                    found[path] = ImageHash(path, dhash, width, height, seconds)
                else:
                    found[path] = HashError(path, reason, detail or "")
        return found

    def store(
        self, entries: Iterable[tuple[str, int, int, ImageHash | HashError]], mode: Mode
    ) -> None:
        """Record outcomes for ``(absolute path, size, mtime_ns, outcome)`` in one transaction."""
        rows: list[tuple[object, ...]] = []
        for path, size, mtime, outcome in entries:
            values: tuple[object, ...]
            if isinstance(outcome, ImageHash):
                values = (outcome.dhash, outcome.width, outcome.height, outcome.seconds, None, None)
            elif outcome.reason in _CACHEABLE_REASONS:
                values = (None, None, None, None, outcome.reason, outcome.detail)
            else:
                continue
            rows.append((path, mode, size, mtime, *values))
        if not rows:
            return
        with self._db:  # one transaction: a crash leaves the cache as it was
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO dhash_cache"
                " (path, mode, size, mtime_ns, dhash, width, height, seconds, reason, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM dhash_cache").fetchone()
        return int(count)


def _init_worker() -> None:
    Image.init()  # load the format plugins once per worker, not on the first file


def _hash_chunk(
    chunk: list[tuple[int, str]], mode: Mode, max_pixels: int
) -> list[tuple[int, ImageHash | HashError]]:
    return [(i, dhash_file(path, mode=mode, max_pixels=max_pixels)) for i, path in chunk]


def _chunks(items: list[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def hash_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    mode: Mode = "fast",
    workers: int | None = None,
    cache: HashCache | str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    chunk_size: int | None = None,
    start_method: str = "forkserver",
) -> HashRun:
    """dHash every path; broken files become :class:`HashError` entries, never exceptions.

    ``workers`` defaults to the usable CPUs; 1 hashes in this process. ``cache`` is a
    :class:`HashCache` or the path of its SQLite file (created if absent). Results and errors
    keep the order of ``paths``; each result's ``path`` is the path as given.

    Workers start with ``start_method`` (default ``forkserver``: they inherit none of the
    caller's threads, such as a progress bar's, whose locks could deadlock a forked child). As
    with any non-fork start method, a script that calls this at import time needs the
    ``if __name__ == "__main__":`` guard.
    """
    if mode not in MODES:
        raise ValueError(f"unknown dhash mode {mode!r}; expected one of {MODES}")
    started = time.perf_counter()
    names = [os.fspath(p) for p in paths]
    total = len(names)
    outcomes: list[ImageHash | HashError | None] = [None] * total
    run = HashRun()

    store: HashCache | None = None
    unsaved: list[tuple[str, int, int, ImageHash | HashError]] = []
    if isinstance(cache, HashCache):
        store = cache
    elif cache is not None:
        store = HashCache(cache)
    try:
        todo: list[tuple[int, str]] = []
        keys: dict[int, tuple[str, int, int]] = {}
        for i, name in enumerate(names):
            sig = _signature(name)
            if sig is None:
                # Let dhash_file name the reason (missing, unreadable, ...) in the usual way.
                todo.append((i, name))
                continue
            keys[i] = (os.path.abspath(name), *sig)
        if store is not None and keys:
            hits = store.lookup(list(keys.values()), mode)
            for i, key in keys.items():
                hit = hits.get(key[0])
                if hit is None:
                    todo.append((i, names[i]))
                else:
                    outcomes[i] = _as_given(hit, names[i])
                    run.cached += 1
        else:
            todo.extend((i, names[i]) for i in keys)
        todo.sort()

        done = total - len(todo)
        if on_progress is not None:
            on_progress(done, total)

        def finished(batch: list[tuple[int, ImageHash | HashError]]) -> None:
            nonlocal done
            for i, outcome in batch:
                outcomes[i] = outcome
                if isinstance(outcome, ImageHash):
                    run.timings.append(outcome.seconds)
            run.hashed += len(batch)
            if store is not None:
                unsaved.extend((*keys[i], o) for i, o in batch if i in keys)
                if len(unsaved) >= _FLUSH_EVERY:
                    store.store(unsaved, mode)
                    unsaved.clear()
            done += len(batch)
            if on_progress is not None:
                on_progress(done, total)

        n_workers = max(1, workers if workers is not None else default_workers())
        size = chunk_size or max(1, min(64, math.ceil(len(todo) / (n_workers * 8))))
        if n_workers == 1 or len(todo) <= size:
            for chunk in _chunks(todo, size):
                finished(_hash_chunk(chunk, mode, max_pixels))
        else:
            ctx = context(start_method)
            _run_pool(todo, size, n_workers, ctx, (mode, max_pixels), finished)
    finally:
        if store is not None:
            # Also on Ctrl-C or an error: what was hashed stays hashed for the next run.
            store.store(unsaved, mode)
            if store is not cache:
                store.close()

    for outcome in outcomes:
        if isinstance(outcome, ImageHash):
            run.results.append(outcome)
        elif outcome is not None:
            run.errors.append(outcome)
    run.seconds = time.perf_counter() - started
    return run


def _run_pool(
    todo: list[tuple[int, str]],
    size: int,
    n_workers: int,
    ctx: BaseContext,
    options: tuple[Mode, int],
    finished: Callable[[list[tuple[int, ImageHash | HashError]]], None],
) -> None:
    chunks = _chunks(todo, size)
    in_flight: set[Future[list[tuple[int, ImageHash | HashError]]]] = set()
    limit = n_workers * 2  # bounded: chunks wait in the iterator, not in the queue
    with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker) as pool:
        for chunk in chunks:
            in_flight.add(pool.submit(_hash_chunk, chunk, *options))
            if len(in_flight) >= limit:
                ready, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in ready:
                    finished(future.result())
        while in_flight:
            ready, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in ready:
                finished(future.result())


def _as_given(outcome: ImageHash | HashError, path: str) -> ImageHash | HashError:
    """The cached outcome reported under the path as the caller spelled it."""
    if isinstance(outcome, ImageHash):
        return ImageHash(path, outcome.dhash, outcome.width, outcome.height, outcome.seconds)
    return HashError(path, outcome.reason, outcome.detail)
