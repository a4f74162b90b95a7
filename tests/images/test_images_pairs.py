"""All-pairs search: equal to a naive reference, across block boundaries and thread counts."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from handrail.images import pairs as pairs_mod
from handrail.images.pairs import Pairs, find_pairs, popcount64, to_uint64


def naive(h: NDArray[np.uint64], radius: int) -> list[tuple[int, int, int]]:
    out = []
    values = [int(v) for v in h]
    for i, a in enumerate(values):
        for j in range(i + 1, len(values)):
            d = (a ^ values[j]).bit_count()
            if d <= radius:
                out.append((i, j, d))
    return out


def with_near_pairs(seed: int, n: int, planted: int) -> NDArray[np.uint64]:
    """Random hashes, then ``planted`` of them overwritten by near copies of others."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    for _ in range(planted if n > 1 else 0):
        src, dst = rng.choice(n, size=2, replace=False)
        flips = rng.choice(64, size=int(rng.integers(0, 18)), replace=False)
        mask = sum(1 << int(b) for b in flips)
        h[dst] = h[src] ^ np.uint64(mask)
    return h


# Tiny blocks make every boundary case (partial row block, diagonal block, last column block)
# happen many times on a few hundred hashes.
SMALL_BLOCKS = {"BLOCK_ROWS": 3, "BLOCK_COLS": 7, "TASK_ROWS": 5}
# Worker processes even for tiny inputs, so the tests exercise the pool.
ALWAYS_POOL = {"PROCESS_MIN_PAIRS": 0}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 120), radius=st.integers(0, 20))
def test_equals_naive_reference_with_small_blocks(seed: int, n: int, radius: int) -> None:
    h = with_near_pairs(seed, n, planted=n // 3)
    with mock.patch.multiple(pairs_mod, **SMALL_BLOCKS):
        got = find_pairs(h, radius, workers=1)
    assert got.tolist() == naive(h, radius)


def test_worker_processes_equal_naive_reference_with_small_blocks() -> None:
    h = with_near_pairs(4, 230, planted=80)
    with mock.patch.multiple(pairs_mod, **SMALL_BLOCKS, **ALWAYS_POOL):
        got = find_pairs(h, 13, workers=2)
    assert got.tolist() == naive(h, 13)


def test_equals_naive_reference_with_real_blocks() -> None:
    h = with_near_pairs(1, 1500, planted=300)
    expected = naive(h, 15)
    assert len(expected) >= 250  # most planted pairs are within 15
    with mock.patch.multiple(pairs_mod, **ALWAYS_POOL):
        assert find_pairs(h, 15, workers=2).tolist() == expected
    assert find_pairs(h, 15, workers=1).tolist() == expected


def test_accepts_hex_strings_like_the_hasher_gives() -> None:
    hexes = ["0" * 16, "0" * 15 + "7", "f" * 16, "F" * 15 + "0"]
    got = find_pairs(hexes, 4)
    assert got.tolist() == [(0, 1, 3), (2, 3, 4)]
    assert len(got) == 2


def test_within_and_types() -> None:
    got = find_pairs(with_near_pairs(3, 400, planted=150), 15)
    band = got.within(8, 15)
    assert all(8 <= d <= 15 for _, _, d in band)
    assert len(band) + len(got.within(0, 7)) == len(got)
    assert got.i.dtype == np.int64
    assert got.distance.dtype == np.uint8
    assert all(i < j for i, j, _ in got)


def test_progress_counts_every_comparison() -> None:
    calls: list[tuple[int, int]] = []
    with mock.patch.multiple(pairs_mod, **SMALL_BLOCKS, **ALWAYS_POOL):
        find_pairs(
            with_near_pairs(0, 53, 5), 10, workers=2, on_progress=lambda d, t: calls.append((d, t))
        )
    assert calls[-1] == (53 * 52 // 2, 53 * 52 // 2)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_hashes(n: int) -> None:
    assert len(find_pairs(with_near_pairs(0, n, 0), 64)) == 0


def test_lookup_table_popcount_matches_numpy() -> None:
    x = with_near_pairs(5, 1000, 0).reshape(10, 100)
    expected = np.array([[int(v).bit_count() for v in row] for row in x], dtype=np.uint8)
    assert np.array_equal(popcount64(x), expected)
    assert np.array_equal(pairs_mod._popcount_table(x, None), expected)
    out = np.empty(x.shape, dtype=np.uint8)
    pairs_mod._popcount_table(x, out)
    assert np.array_equal(out, expected)


def test_fallback_without_bitwise_count_gives_same_pairs() -> None:
    h = with_near_pairs(9, 300, 100)
    with mock.patch.object(pairs_mod, "_HAS_BITWISE_COUNT", False):
        slow = find_pairs(h, 12)
    assert slow.tolist() == find_pairs(h, 12).tolist() == naive(h, 12)


@pytest.mark.parametrize(
    ("hashes", "error", "match"),
    [
        (["abc"], ValueError, r"hash #0 'abc' is not 16 hex digits"),
        (["0" * 16, "zz" + "0" * 14], ValueError, r"hash #1 .* is not hexadecimal"),
        (np.zeros(3, dtype=np.int64), TypeError, "uint64"),
    ],
)
def test_bad_hashes_are_refused(hashes: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        to_uint64(hashes)  # type: ignore[arg-type]


def test_radius_out_of_range() -> None:
    with pytest.raises(ValueError, match="radius"):
        find_pairs(["0" * 16], 65)


def test_empty_pairs_object() -> None:
    empty = Pairs(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8))
    assert empty.tolist() == []
    assert len(empty.within(0, 64)) == 0
