"""Exact all-pairs search of 64-bit hashes within a Hamming radius.

Blocked brute force: a few rows at a time are XORed against a long run of columns (one NumPy
call each for XOR, popcount and compare, on reused buffers that stay in the CPU cache), and only
the upper triangle ``j > i`` is visited. Row ranges are shared by worker processes, each holding
one copy of the hashes (8 MB per million). Threads were tried first: NumPy releases the GIL in
each call, but with several short calls per block two threads ran slower than one. It is exact,
needs no index, and its memory is the hashes plus the pairs found.

    pairs = find_pairs(["c3e1...", ...], radius=15)
    for i, j, d in pairs.within(8, 15): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from ._pool import context, default_workers

__all__ = [
    "DEFAULT_THRESHOLD",
    "LOW_CONFIDENCE",
    "Pairs",
    "find_pairs",
    "popcount64",
    "to_uint64",
]

DEFAULT_THRESHOLD: Final = 10  # distance <= 10: a near-duplicate
LOW_CONFIDENCE: Final = (8, 15)  # distances a human should look at (inclusive)

# Rows per block x columns per block: 8 x 16384 keeps the uint64 XOR buffer at 1 MiB, inside
# the L2 cache, and each NumPy call long enough that its fixed overhead is negligible.
BLOCK_ROWS: Final = 8
BLOCK_COLS: Final = 16384
TASK_ROWS: Final = 256  # rows handed to a worker at a time; small enough to balance the triangle
# Below this many comparisons (~0.05 s of work) starting worker processes costs more than it saves.
PROCESS_MIN_PAIRS: Final = 50_000_000

_HAS_BITWISE_COUNT: Final = hasattr(np, "bitwise_count")  # NumPy >= 2.0
_BYTE_POPCOUNT: Final = np.array([bin(b).count("1") for b in range(256)], dtype=np.uint8)


def popcount64(x: NDArray[np.uint64], out: NDArray[np.uint8] | None = None) -> NDArray[np.uint8]:
    """Set bits per element of a uint64 array, as uint8 (NumPy's popcount, else a byte table)."""
    if _HAS_BITWISE_COUNT:
        result: NDArray[np.uint8] = np.bitwise_count(x, out=out)
        return result
    return _popcount_table(x, out)


def _popcount_table(x: NDArray[np.uint64], out: NDArray[np.uint8] | None) -> NDArray[np.uint8]:
    per_byte = _BYTE_POPCOUNT[np.ascontiguousarray(x).view(np.uint8)]
    summed: NDArray[np.uint8] = per_byte.reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)
    if out is None:
        return summed
    out[...] = summed
    return out


def to_uint64(hashes: Sequence[str] | NDArray[np.uint64]) -> NDArray[np.uint64]:
    """64-bit hashes as a uint64 array; hex strings must be exactly 16 hex digits each."""
    if isinstance(hashes, np.ndarray):
        if hashes.dtype != np.uint64:
            raise TypeError(f"expected a uint64 array, got {hashes.dtype}")
        return np.ascontiguousarray(hashes)
    for k, h in enumerate(hashes):
        if len(h) != 16:
            raise ValueError(f"hash #{k} {h!r} is not 16 hex digits")
    try:
        raw = bytes.fromhex("".join(hashes))
    except ValueError as exc:
        bad = next(k for k, h in enumerate(hashes) if not _is_hex(h))
        raise ValueError(f"hash #{bad} {hashes[bad]!r} is not hexadecimal") from exc
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Pairs:
    """Pairs ``(i, j, distance)`` with ``i < j``, sorted by ``(i, j)``; parallel arrays."""

    i: NDArray[np.int64]
    j: NDArray[np.int64]
    distance: NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.i.size)

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return zip(self.i.tolist(), self.j.tolist(), self.distance.tolist(), strict=True)

    def within(self, low: int, high: int) -> Pairs:
        """The pairs with ``low <= distance <= high``."""
        keep = (self.distance >= low) & (self.distance <= high)
        return Pairs(self.i[keep], self.j[keep], self.distance[keep])

    def tolist(self) -> list[tuple[int, int, int]]:
        return list(self)


class _Buffers:
    """Scratch arrays reused block after block, so the hot loop allocates nothing."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.xor = np.empty(rows * cols, dtype=np.uint64)
        self.count = np.empty(rows * cols, dtype=np.uint8)
        self.mask = np.empty(rows * cols, dtype=bool)


_Found = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8]]


def _scan(h: NDArray[np.uint64], start: int, stop: int, radius: int, bufs: _Buffers) -> _Found:
    """All pairs ``(i, j)`` with ``start <= i < stop``, ``j > i`` and distance <= radius."""
    n = h.size
    found_i: list[NDArray[np.int64]] = []
    found_j: list[NDArray[np.int64]] = []
    found_d: list[NDArray[np.uint8]] = []
    for r0 in range(start, stop, bufs.rows):
        r1 = min(stop, r0 + bufs.rows)
        rows = h[r0:r1, None]
        for c0 in range(r0 + 1, n, bufs.cols):
            c1 = min(n, c0 + bufs.cols)
            width = c1 - c0
            size = (r1 - r0) * width
            x = bufs.xor[:size].reshape(r1 - r0, width)
            count = bufs.count[:size].reshape(r1 - r0, width)
            mask = bufs.mask[:size].reshape(r1 - r0, width)
            np.bitwise_xor(rows, h[None, c0:c1], out=x)
            popcount64(x, out=count)
            np.less_equal(count, radius, out=mask)
            if not mask.any():  # the common case at small radii; any() is far cheaper than nonzero
                continue
            hits = np.flatnonzero(mask)
            i = r0 + hits // width
            j = c0 + hits % width
            keep = j > i  # the first column block overlaps the diagonal
            found_i.append(i[keep])
            found_j.append(j[keep])
            found_d.append(count.ravel()[hits[keep]])
    if not found_i:
        return _empty()
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def _empty() -> _Found:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)


# Set in each worker process by _init_worker: the hashes and that worker's scratch buffers.
_worker_hashes: NDArray[np.uint64] | None = None
_worker_bufs: _Buffers | None = None


def _init_worker(raw: bytes, rows: int, cols: int) -> None:
    global _worker_hashes, _worker_bufs
    _worker_hashes = np.frombuffer(raw, dtype=np.uint64)
    _worker_bufs = _Buffers(rows, cols)


def _worker_scan(start: int, stop: int, radius: int) -> _Found:
    if _worker_hashes is None or _worker_bufs is None:
        raise RuntimeError("pair-search worker used before _init_worker ran")
    return _scan(_worker_hashes, start, stop, radius, _worker_bufs)


def find_pairs(
    hashes: Sequence[str] | NDArray[np.uint64],
    radius: int = DEFAULT_THRESHOLD,
    *,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    start_method: str = "forkserver",
) -> Pairs:
    """Every pair of hashes within ``radius`` bits, exactly, as :class:`Pairs` sorted by (i, j).

    ``hashes`` are 16-digit hex strings or a uint64 array; ``i`` and ``j`` index into it.
    ``workers`` processes share the work (default: the usable CPUs; small inputs stay in this
    process). ``on_progress(done, total)`` counts hash comparisons. As with ``hash_files``, a
    script calling this at import time needs the ``if __name__ == "__main__":`` guard.
    """
    if not 0 <= radius <= 64:
        raise ValueError(f"radius must be between 0 and 64, got {radius}")
    h = to_uint64(hashes)
    n = h.size
    total = n * (n - 1) // 2
    task_rows = TASK_ROWS
    starts = list(range(0, n, task_rows))
    n_workers = max(1, workers if workers is not None else default_workers())
    parts: list[_Found] = []
    done = 0

    def collect(start: int, part: _Found) -> None:
        nonlocal done
        parts.append(part)
        stop = min(n, start + task_rows)
        # Comparisons in rows [start, stop): sum of (n - 1 - i) over those rows.
        done += (stop - start) * (n - 1) - (stop * (stop - 1) - start * (start - 1)) // 2
        if on_progress is not None:
            on_progress(done, total)

    if n_workers == 1 or total < PROCESS_MIN_PAIRS:
        bufs = _Buffers(BLOCK_ROWS, BLOCK_COLS)
        for start in starts:
            collect(start, _scan(h, start, min(n, start + task_rows), radius, bufs))
    else:
        with ProcessPoolExecutor(
            n_workers,
            mp_context=context(start_method),
            initializer=_init_worker,
            initargs=(h.tobytes(), BLOCK_ROWS, BLOCK_COLS),
        ) as pool:
            # map() returns in order and hands out row ranges as workers free up; the early,
            # longest rows go first, so the triangle's tail balances the load at the end.
            stops = [min(n, s + task_rows) for s in starts]
            radii = [radius] * len(starts)
            for start, part in zip(
                starts, pool.map(_worker_scan, starts, stops, radii), strict=True
            ):
                collect(start, part)

    if not parts:
        return Pairs(*_empty())
    i = np.concatenate([p[0] for p in parts])
    j = np.concatenate([p[1] for p in parts])
    d = np.concatenate([p[2] for p in parts])
    order = np.lexsort((j, i))  # parts come in row order; this orders j within a row
    return Pairs(i[order], j[order], d[order])
