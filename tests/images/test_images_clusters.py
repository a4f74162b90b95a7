"""Clusters: the same set in any order gives the same clusters and representatives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handrail.images.clusters import Cluster, ClusterItem, find_clusters
from handrail.images.dhash import hamming
from handrail.images.hasher import HashRun
from handrail.images.pairs import find_pairs
from handrail.images.sample import SampleManifest


def flip(h: str, *bits: int) -> str:
    value = int(h, 16)
    for b in bits:
        value ^= 1 << b
    return f"{value:016x}"


def synthetic_items(seed: int = 0) -> list[ClusterItem]:
    """Groups of near hashes (some chained), singletons, and equal pixel counts to tie-break."""
    rng = np.random.default_rng(seed)
    items = []
    for g in range(12):
        base = f"{int(rng.integers(0, 2**63)):016x}"
        for m in range(int(rng.integers(1, 5))):
            bits = [int(b) for b in rng.choice(64, size=int(rng.integers(0, 9)), replace=False)]
            pixels = int(rng.choice([640 * 480, 800 * 600, 800 * 600]))
            items.append(ClusterItem(f"lib/g{g:02d}/m{m}.jpg", flip(base, *bits), pixels))
    return items


BASELINE = synthetic_items()


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(BASELINE), threshold=st.sampled_from([6, 10, 15]))
def test_order_of_input_does_not_matter(order: list[ClusterItem], threshold: int) -> None:
    assert find_clusters(order, threshold, workers=1) == find_clusters(
        BASELINE, threshold, workers=1
    )


def test_representative_is_the_largest_then_first_path() -> None:
    h = "0123456789abcdef"
    items = [
        ClusterItem("b.jpg", flip(h, 1), 100),
        ClusterItem("c.jpg", flip(h, 2, 4), 400),
        ClusterItem("a.jpg", h, 400),
        ClusterItem("d.jpg", flip(h, 3), 300),
    ]
    [cluster] = find_clusters(items)
    assert cluster == Cluster(
        representative="a.jpg",
        members=("a.jpg", "b.jpg", "c.jpg", "d.jpg"),
        distances=(0, 1, 2, 1),
    )
    assert cluster.duplicates == [("b.jpg", 1), ("c.jpg", 2), ("d.jpg", 1)]
    assert cluster.records()[0] == {"original": "a.jpg", "duplicate": "b.jpg", "hammingDistance": 1}


def test_chains_join_and_report_direct_distance() -> None:
    a = "0" * 16
    b = flip(a, *range(8))  # 8 from a
    c = flip(b, *range(8, 16))  # 8 from b, 16 from a
    items = [ClusterItem("a", a, 9), ClusterItem("b", b), ClusterItem("c", c)]
    [cluster] = find_clusters(items, threshold=10)
    assert cluster.members == ("a", "b", "c")
    assert cluster.distances == (0, 8, 16)
    assert find_clusters([items[0], items[2]], threshold=10) == []


def test_human_decisions_cut_and_join_edges() -> None:
    a, far = "0" * 16, "f" * 16
    items = [ClusterItem("a", a), ClusterItem("b", flip(a, 0, 1)), ClusterItem("x", far)]
    assert [c.members for c in find_clusters(items)] == [("a", "b")]
    assert find_clusters(items, not_duplicates=[("b", "a")]) == []
    joined = find_clusters(items, duplicates=[("x", "a"), ("ghost", "a")])
    assert [c.members for c in joined] == [("a", "b", "x")]


def test_precomputed_pairs_give_the_same_clusters() -> None:
    shuffled = list(reversed(BASELINE))
    pairs = find_pairs([i.dhash for i in shuffled], 15)
    assert find_clusters(shuffled, 10, pairs=pairs) == find_clusters(BASELINE, 10)


def test_same_path_twice() -> None:
    item = ClusterItem("a", "0" * 16)
    assert find_clusters([item, item, ClusterItem("b", "0" * 16)])[0].members == ("a", "b")
    with pytest.raises(ValueError, match="listed twice"):
        find_clusters([item, ClusterItem("a", "f" * 16)])


def test_planted_copies_are_found(sample: SampleManifest, sample_run: HashRun) -> None:
    clusters = find_clusters(sample_run.results, threshold=10)
    together = {frozenset(c.members) for c in clusters}
    missed = [
        (c.kind, c.original.name, c.copy.name)
        for c in sample.copies
        if not any({str(c.original), str(c.copy)} <= group for group in together)
    ]
    assert missed == []
    kinds = {c.kind for c in sample.copies}
    assert kinds == {"exact", "recompressed", "resized", "cropped", "rotated", "exif_rotated"}
    # Nothing but planted copies clusters in this small sample: no false positives.
    planted = {frozenset({str(c.original), str(c.copy)}) for c in sample.copies}
    assert together == planted


def test_exif_rotated_copy_is_near_its_original(
    sample: SampleManifest, sample_run: HashRun
) -> None:
    by_path = {r.path: r for r in sample_run.results}
    rotated = [c for c in sample.copies if c.kind == "exif_rotated"]
    assert rotated
    for c in rotated:
        original, copy = by_path[str(c.original)], by_path[str(c.copy)]
        assert hamming(original.dhash, copy.dhash) <= 2
        # Stored sideways, reported upright: the same shape as the original.
        assert (copy.width, copy.height) == (original.width, original.height)
