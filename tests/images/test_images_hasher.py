"""The parallel hasher: same answers as one file at a time, progress, cache, timings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from handrail.images.dhash import HashError, ImageHash, dhash_file
from handrail.images.hasher import HashCache, HashRun, hash_files
from handrail.images.sample import SampleManifest


def test_parallel_run_matches_one_file_at_a_time(
    sample: SampleManifest, sample_run: HashRun
) -> None:
    expected = [dhash_file(p) for p in sample.images]
    assert [(r.path, r.dhash) for r in sample_run.results] == [
        (e.path, e.dhash) for e in expected if isinstance(e, ImageHash)
    ]
    assert [(e.path, e.reason) for e in sample_run.errors] == [
        (e.path, e.reason) for e in expected if isinstance(e, HashError)
    ]
    assert {Path(e.path): e.reason for e in sample_run.errors} == sample.broken
    assert sample_run.hashed == sample_run.total == len(sample.images)


def test_in_process_and_pool_agree(sample: SampleManifest, sample_run: HashRun) -> None:
    serial = hash_files(sample.images, workers=1)
    assert [r.path for r in serial.results] == [r.path for r in sample_run.results]
    assert [r.dhash for r in serial.results] == [r.dhash for r in sample_run.results]
    assert serial.errors == sample_run.errors


def test_progress_is_monotonic_and_completes(sample: SampleManifest) -> None:
    calls: list[tuple[int, int]] = []
    hash_files(
        sample.images, workers=2, chunk_size=4, on_progress=lambda d, t: calls.append((d, t))
    )
    total = len(sample.images)
    assert calls[-1] == (total, total)
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert len(calls) > 3


def test_timings_cover_every_hashed_image(sample_run: HashRun) -> None:
    assert len(sample_run.timings) == len(sample_run.results)
    assert 0 < sample_run.mean_seconds <= max(sample_run.timings)
    assert sample_run.p95_seconds >= sorted(sample_run.timings)[len(sample_run.timings) // 2]


def test_p95_is_nearest_rank() -> None:
    run = HashRun(timings=[float(k) for k in range(1, 101)])
    assert run.p95_seconds == 95.0
    assert run.mean_seconds == 50.5
    assert HashRun().p95_seconds == HashRun().mean_seconds == 0.0


def test_cache_rehashes_only_new_or_changed_files(sample: SampleManifest, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(sample.root / "images", images)
    paths = sorted(images.iterdir())
    cache = tmp_path / "cache.sqlite"

    first = hash_files(paths, cache=cache, workers=2)
    assert (first.hashed, first.cached) == (len(paths), 0)

    again = hash_files(paths, cache=cache, workers=2)
    assert (again.hashed, again.cached) == (0, len(paths))
    assert again.results == [
        ImageHash(r.path, r.dhash, r.width, r.height, r.seconds) for r in first.results
    ]
    assert [(e.path, e.reason) for e in again.errors] == [(e.path, e.reason) for e in first.errors]
    assert again.timings == []  # nothing was decoded, so nothing to time

    good = [Path(r.path) for r in first.results]
    touched, replaced = good[0], good[1]
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    shutil.copyfile(good[2], replaced)  # new content under an old name
    new = images / "new.png"
    shutil.copyfile(good[3], new)

    third = hash_files([*paths, new], cache=cache, workers=2)
    assert third.hashed == 3
    assert third.cached == len(paths) - 2
    by_path = {r.path: r.dhash for r in third.results}
    assert by_path[str(replaced)] == by_path[str(good[2])]
    assert by_path[str(new)] == by_path[str(good[3])]


def test_missing_files_are_checked_every_run(tmp_path: Path, sample: SampleManifest) -> None:
    missing = tmp_path / "not-there.jpg"
    cache = tmp_path / "cache.sqlite"
    for _ in range(2):
        run = hash_files([missing], cache=cache)
        assert [(e.reason, run.hashed) for e in run.errors] == [("missing", 1)]
    missing.write_bytes(sample.hashable[0].read_bytes())
    assert len(hash_files([missing], cache=cache).results) == 1


def test_cache_keeps_modes_apart(sample: SampleManifest, tmp_path: Path) -> None:
    paths = sample.hashable[:6]
    with HashCache(tmp_path / "c.sqlite") as cache:
        fast = hash_files(paths, cache=cache, workers=1)
        compat = hash_files(paths, cache=cache, mode="compat", workers=1)
        assert compat.hashed == len(paths)
        assert compat.cached == 0
        assert hash_files(paths, cache=cache, workers=1).cached == len(paths)
        assert len(cache) == 2 * len(paths)
    assert [r.dhash for r in compat.results] == [
        r.dhash for r in (dhash_file(p, mode="compat") for p in paths) if isinstance(r, ImageHash)
    ]
    assert len(fast.results) == len(paths)


def test_oversized_is_not_cached(tmp_path: Path, sample: SampleManifest) -> None:
    path = sample.hashable[0]
    cache = tmp_path / "c.sqlite"
    refused = hash_files([path], cache=cache, max_pixels=100)
    assert [e.reason for e in refused.errors] == ["oversized"]
    allowed = hash_files([path], cache=cache)
    assert allowed.hashed == 1
    assert len(allowed.results) == 1


def test_results_keep_the_path_as_given(sample: SampleManifest, tmp_path: Path) -> None:
    target = sample.hashable[0]
    cache = tmp_path / "c.sqlite"
    hash_files([target], cache=cache)
    relative = os.path.relpath(target)
    run = hash_files([relative], cache=cache)
    assert run.cached == 1
    assert run.results[0].path == relative


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dhash mode"):
        hash_files([], mode="slow")  # type: ignore[arg-type]


def test_work_done_before_an_interruption_is_kept(sample: SampleManifest, tmp_path: Path) -> None:
    paths = sample.hashable[:12]
    cache = tmp_path / "c.sqlite"

    def stop_after_two_chunks(done: int, total: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hash_files(paths, cache=cache, workers=1, chunk_size=4, on_progress=stop_after_two_chunks)
    resumed = hash_files(paths, cache=cache, workers=1)
    assert (resumed.cached, resumed.hashed) == (8, 4)
