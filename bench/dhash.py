"""Benchmark: handrail's dHash and all-pairs search next to imagehash, imagededup and faiss.

Not a test: nothing here asserts on time. In one run, on the same generated images (cached
under bench/.data/dhash/, which is gitignored):

Hashing, images/s (median of ``--repeat`` runs, files warm in the page cache):
    imagehash            ``imagehash.dhash(Image.open(p))`` in a loop: one process, as used
    imagededup           ``DHash().find_duplicates(image_dir=...)`` end to end, all workers
    handrail fast  x1/x2 ``hash_files(paths, workers=1|2)``
    handrail compat x2   ``hash_files(paths, mode="compat", workers=2)``
on 1080p and 12-megapixel JPEGs; then the mean Hamming distance of fast mode to compat on
those and on a varied sample library (sizes, formats, pixel modes, EXIF orientations).

All pairs within ``--radius`` (15) on 100,000 and 1,000,000 random 64-bit hashes with planted
near pairs:
    handrail find_pairs  blocked NumPy, worker processes
    NumPy loop           one row at a time against all later rows (extrapolated from evenly
                         spaced rows when ``--loop-rows`` is below n; the output says so)
    faiss                ``IndexBinaryFlat.range_search`` (OpenMP), filtered to i < j

    .venv/bin/python bench/dhash.py            # full: a quarter of an hour on 2 cores
    .venv/bin/python bench/dhash.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from rich.console import Console
from rich.table import Table

from handrail.images.dhash import dhash_file, hamming
from handrail.images.hasher import default_workers, hash_files
from handrail.images.pairs import find_pairs
from handrail.images.sample import draw_image, make_sample_library

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data" / "dhash"

console = Console(width=None if sys.stdout.isatty() else 120)


# -- data ------------------------------------------------------------------------------------


def jpeg_set(name: str, size: tuple[int, int], count: int, seed: int) -> list[Path]:
    """``count`` generated JPEGs (quality 90) of ``size``, made once and reused."""
    folder = DATA_DIR / name
    marker = DATA_DIR / f"{name}.json"  # outside the folder: imagededup reads every file in it
    params = {"size": list(size), "count": count, "seed": seed, "quality": 90}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return sorted(folder.glob("*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with console.status(f"drawing {count} {size[0]}x{size[1]} JPEGs"):
        for k in range(count):
            draw_image(rng, *size).save(folder / f"{name}_{k:04d}.jpg", "JPEG", quality=90)
    marker.write_text(json.dumps(params))
    return sorted(folder.glob("*.jpg"))


def varied_set(count: int) -> list[Path]:
    folder = DATA_DIR / f"varied-{count}"
    if not (folder / "library.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        with console.status(f"drawing a varied library of {count} images"):
            make_sample_library(folder, count=count, copies=0, seed=3, broken=False)
    return sorted((folder / "images").iterdir())


def warm(paths: list[Path]) -> None:
    for p in paths:
        p.read_bytes()


# -- hashing ---------------------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    seconds: list[float]
    images: int
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.images / self.median


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def run_imagehash(paths: list[Path]) -> None:
    import imagehash

    for p in paths:
        with Image.open(p) as im:
            imagehash.dhash(im)


def imagededup_runner(folder: Path, workers: int) -> Callable[[], Any] | str:
    """A callable running imagededup end to end on ``folder``, or why it cannot run."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # its progress bars would flood the output
    try:
        from imagededup.methods import DHash
    except Exception as exc:  # ImportError, or torch failing to load
        return f"imagededup not available: {type(exc).__name__}: {exc}"
    hasher = DHash(verbose=False)

    def run() -> None:
        logging.disable(logging.INFO)  # it logs every phase at INFO on its own handlers
        try:
            hasher.find_duplicates(
                image_dir=folder,
                max_distance_threshold=10,
                num_enc_workers=workers,
                num_dist_workers=workers,
            )
        finally:
            logging.disable(logging.NOTSET)

    return run


def bench_hashing(name: str, paths: list[Path], repeat: int, workers: int, dedup: bool) -> None:
    warm(paths)
    n = len(paths)
    with Image.open(paths[0]) as im:
        w, h = im.size
    mb = sum(p.stat().st_size for p in paths) / n / 1e6
    console.print(f"\n[bold]{name}[/]: {n} JPEGs of {w}x{h}, {mb:.2f} MB each on average")
    rows: list[Timing] = []
    rows.append(
        Timing("imagehash.dhash, 1 process", timed(lambda: run_imagehash(paths), repeat), n)
    )
    if dedup:
        runner = imagededup_runner(paths[0].parent, workers)
        if isinstance(runner, str):
            rows.append(Timing("imagededup DHash.find_duplicates", [float("nan")], n, runner))
        else:
            runner()  # warm-up: imports, worker start
            rows.append(
                Timing(
                    f"imagededup DHash.find_duplicates, {workers} workers",
                    timed(runner, repeat),
                    n,
                    "end to end: hashing + search",
                )
            )
    runs: dict[str, Any] = {}

    def handrail(mode: str, n_workers: int) -> Callable[[], None]:
        def go() -> None:
            runs[f"{mode}{n_workers}"] = hash_files(paths, mode=mode, workers=n_workers)  # type: ignore[arg-type]

        return go

    for mode, n_workers in (("fast", 1), ("fast", workers), ("compat", workers)):
        rows.append(
            Timing(
                f"handrail {mode}, {n_workers} worker{'s' if n_workers > 1 else ''}",
                timed(handrail(mode, n_workers), repeat),
                n,
            )
        )
    base = rows[0].rate
    table = Table("contender", "median s", "images/s", "× imagehash", "note")
    for t in rows:
        if np.isnan(t.median):
            table.add_row(t.name, "-", "-", "-", t.note)
        else:
            table.add_row(
                t.name, f"{t.median:.2f}", f"{t.rate:.1f}", f"{t.rate / base:.2f}", t.note
            )
    console.print(table)
    fast1 = runs["fast1"]
    console.print(
        f"handrail fast, per image (1 worker): mean {fast1.mean_seconds * 1000:.1f} ms, "
        f"p95 {fast1.p95_seconds * 1000:.1f} ms"
    )
    fast_hashes = [r.dhash for r in runs[f"fast{workers}"].results]
    compat_hashes = [r.dhash for r in runs[f"compat{workers}"].results]
    report_drift(name, fast_hashes, compat_hashes)


def report_drift(name: str, fast: list[str], compat: list[str]) -> None:
    d = np.array([hamming(a, b) for a, b in zip(fast, compat, strict=True)])
    console.print(
        f"fast vs compat on {name}: mean Hamming {d.mean():.3f} bits, max {d.max()}, "
        f"identical {np.mean(d == 0) * 100:.0f}% of {d.size}"
    )


def bench_drift_varied(count: int) -> None:
    paths = varied_set(count)
    fast, compat = [], []
    for p in paths:
        a, b = dhash_file(p), dhash_file(p, mode="compat")
        if hasattr(a, "dhash") and hasattr(b, "dhash"):
            fast.append(a.dhash)  # type: ignore[union-attr]
            compat.append(b.dhash)  # type: ignore[union-attr]
    console.print("")
    report_drift(
        f"a varied library ({len(paths)} JPEG/PNG/WebP, mixed modes and sizes)", fast, compat
    )


# -- all pairs -------------------------------------------------------------------------------


def random_hashes(n: int, seed: int) -> NDArray[np.uint64]:
    """Random hashes; 1% of them replaced by near copies (0-15 bits flipped) of others."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    planted = n // 100
    src = rng.integers(0, n, size=planted)
    dst = rng.integers(0, n, size=planted)
    for s, d in zip(src, dst, strict=True):
        bits = rng.choice(64, size=int(rng.integers(0, 16)), replace=False)
        h[d] = h[s] ^ np.uint64(sum(1 << int(b) for b in bits))
    return h


def numpy_loop(h: NDArray[np.uint64], radius: int, rows: range) -> int:
    found = 0
    for i in rows:
        d = np.bitwise_count(h[i] ^ h[i + 1 :])
        found += np.flatnonzero(d <= radius).size
    return found


def faiss_pairs(h: NDArray[np.uint64], radius: int, workers: int) -> NDArray[np.int64] | str:
    try:
        import faiss
    except ImportError as exc:
        return f"faiss not available: {exc}"
    faiss.omp_set_num_threads(workers)
    codes = np.ascontiguousarray(h).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    lims, _, found = index.range_search(codes, radius + 1)  # faiss keeps distance < radius
    query = np.repeat(np.arange(h.size, dtype=np.int64), np.diff(lims).astype(np.int64))
    keep = found > query
    return np.stack([query[keep], found[keep].astype(np.int64)], axis=1)


def bench_pairs(n: int, radius: int, workers: int, loop_rows: int, use_faiss: bool) -> None:
    h = random_hashes(n, seed=n)
    total_pairs = n * (n - 1) // 2
    console.print(f"\n[bold]all pairs within {radius}[/] of {n:,} hashes ({total_pairs:.3g} pairs)")
    rows: list[tuple[str, float, str]] = []

    start = time.perf_counter()
    ours = find_pairs(h, radius, workers=workers)
    rows.append((f"handrail find_pairs, {workers} processes", time.perf_counter() - start, ""))
    our_set = np.stack([ours.i, ours.j], axis=1)
    note = f"{len(ours):,} pairs found"

    if loop_rows >= n:
        start = time.perf_counter()
        found = numpy_loop(h, radius, range(n))
        loop_s = time.perf_counter() - start
        rows.append(
            (
                "NumPy loop, one row at a time",
                loop_s,
                f"{found:,} pairs, same count: {found == len(ours)}",
            )
        )
    else:
        step = max(1, n // loop_rows)
        sampled = range(0, n, step)
        start = time.perf_counter()
        numpy_loop(h, radius, sampled)
        per_row = (time.perf_counter() - start) / len(sampled)
        rows.append(
            (
                "NumPy loop, one row at a time",
                per_row * n,
                f"EXTRAPOLATED from {len(sampled):,} evenly spaced rows",
            )
        )

    if use_faiss:
        start = time.perf_counter()
        theirs = faiss_pairs(h, radius, workers)
        faiss_s = time.perf_counter() - start
        if isinstance(theirs, str):
            rows.append(("faiss IndexBinaryFlat.range_search", float("nan"), theirs))
        else:
            same = _same_pairs(our_set, theirs)
            rows.append(
                (
                    f"faiss IndexBinaryFlat.range_search, {workers} threads",
                    faiss_s,
                    f"same pairs as handrail: {same}",
                )
            )

    base = rows[0][1]
    table = Table("contender", "seconds", "× handrail time", "note")
    for name, seconds, extra in rows:
        if np.isnan(seconds):
            table.add_row(name, "-", "-", extra)
        else:
            table.add_row(name, f"{seconds:.2f}", f"{seconds / base:.2f}", extra or note)
    console.print(table)


def _same_pairs(a: NDArray[np.int64], b: NDArray[np.int64]) -> bool:
    if a.shape != b.shape:
        return False
    order_a = np.lexsort((a[:, 1], a[:, 0]))
    order_b = np.lexsort((b[:, 1], b[:, 0]))
    return bool(np.array_equal(a[order_a], b[order_b]))


# -- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, one repeat")
    parser.add_argument("--n1080", type=int, default=200, help="1080p JPEGs")
    parser.add_argument("--n12mp", type=int, default=40, help="12-megapixel JPEGs")
    parser.add_argument("--varied", type=int, default=300, help="images in the varied library")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--radius", type=int, default=15)
    parser.add_argument("--pairs", default="100000,1000000", help="hash counts, comma-separated")
    parser.add_argument("--loop-rows", type=int, default=20_000, help="rows the NumPy loop runs")
    parser.add_argument("--no-imagededup", action="store_true")
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--skip-hashing", action="store_true")
    parser.add_argument("--skip-pairs", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.n1080, args.n12mp, args.varied, args.repeat = 30, 6, 60, 1
        args.pairs, args.loop_rows = "20000,100000", 5_000

    load = os.getloadavg()
    console.print(
        f"handrail dHash bench · {platform.python_version()} · numpy {np.__version__} · "
        f"Pillow {Image.__version__} · {os.cpu_count()} CPUs, {args.workers} workers · "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    if not args.skip_hashing:
        dedup = not args.no_imagededup
        bench_hashing(
            "1080p",
            jpeg_set("1080p", (1920, 1080), args.n1080, 1),
            args.repeat,
            args.workers,
            dedup,
        )
        bench_hashing(
            "12 MP", jpeg_set("12mp", (4000, 3000), args.n12mp, 2), args.repeat, args.workers, dedup
        )
        bench_drift_varied(args.varied)
    if not args.skip_pairs:
        for n in (int(x) for x in args.pairs.split(",")):
            bench_pairs(n, args.radius, args.workers, args.loop_rows, not args.no_faiss)
    load = os.getloadavg()
    console.print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
