"""Group near-duplicate images into clusters, deterministically.

Every pair within the threshold is an edge; clusters are the connected components (union-find),
so a chain a~b~c is one cluster even when a and c are further apart than the threshold (each
member's direct distance to the representative is reported). Human review decisions can cut an
edge ("not duplicate") or add one ("duplicate").

The result depends only on the *set* of ``(path, hash, pixels)`` given, never on its order:
items are sorted by path first, members are listed by path, clusters by their first member.
The representative is the member with the most pixels (the best copy to keep); among equals,
the first path in sorted order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .dhash import hamming
from .pairs import DEFAULT_THRESHOLD, Pairs, find_pairs

__all__ = ["Cluster", "ClusterItem", "Hashed", "find_clusters"]


class Hashed(Protocol):
    """Anything with a path, a 16-hex-digit dHash and a pixel count (e.g. ``ImageHash``)."""

    @property
    def path(self) -> str: ...

    @property
    def dhash(self) -> str: ...

    @property
    def pixels(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ClusterItem:
    """A minimal :class:`Hashed`: ``pixels`` only breaks ties when picking a representative."""

    path: str
    dhash: str
    pixels: int = 0


@dataclass(frozen=True, slots=True)
class Cluster:
    """Two or more near-duplicate images; ``members`` sorted by path, representative included."""

    representative: str
    members: tuple[str, ...]
    distances: tuple[int, ...]  # per member, its Hamming distance to the representative

    @property
    def duplicates(self) -> list[tuple[str, int]]:
        """``(path, distance to representative)`` for every member but the representative."""
        return [
            (m, d) for m, d in zip(self.members, self.distances, strict=True)
            if m != self.representative
        ]  # fmt: skip

    def records(self) -> list[dict[str, str | int]]:
        """``{"original", "duplicate", "hammingDistance"}`` rows, as library.json stores them."""
        return [
            {"original": self.representative, "duplicate": m, "hammingDistance": d}
            for m, d in self.duplicates
        ]


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller index wins, so the structure does not depend on edge order either.
            self.parent[max(ra, rb)] = min(ra, rb)


def _canonical(items: Iterable[Hashed]) -> list[ClusterItem]:
    by_path: dict[str, ClusterItem] = {}
    for item in items:
        seen = by_path.get(item.path)
        current = ClusterItem(item.path, item.dhash.lower(), item.pixels)
        if seen is not None and seen != current:
            raise ValueError(f"{item.path!r} is listed twice with different hashes or sizes")
        by_path[item.path] = current
    return [by_path[p] for p in sorted(by_path)]


def _pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def find_clusters(
    items: Iterable[Hashed],
    threshold: int = DEFAULT_THRESHOLD,
    *,
    duplicates: Iterable[tuple[str, str]] = (),
    not_duplicates: Iterable[tuple[str, str]] = (),
    pairs: Pairs | None = None,
    workers: int | None = None,
) -> list[Cluster]:
    """Clusters of images whose hashes are within ``threshold`` bits, linked transitively.

    ``duplicates`` and ``not_duplicates`` are path pairs a human decided on: the first add an
    edge whatever the distance, the second remove one (a cluster can still join the two paths
    through other members). Paths in decisions that are not among ``items`` are ignored.
    ``pairs``, if given, must come from :func:`find_pairs` over ``items`` in the order given
    (at this radius or a larger one), to save a second search; otherwise one is run.
    """
    given = list(items)
    ordered = _canonical(given)
    index = {item.path: k for k, item in enumerate(ordered)}
    cut = {_pair_key(a, b) for a, b in not_duplicates}
    uf = _UnionFind(len(ordered))
    if pairs is None:
        hashes = [item.dhash for item in ordered]
        edges = [(i, j) for i, j, _ in find_pairs(hashes, threshold, workers=workers)]
    else:
        close = pairs.within(0, threshold)
        to_canonical = [index[item.path] for item in given]
        edges = [(to_canonical[i], to_canonical[j]) for i, j, _ in close]
    for i, j in edges:
        if _pair_key(ordered[i].path, ordered[j].path) not in cut:
            uf.union(i, j)
    for a, b in duplicates:
        if a in index and b in index:
            uf.union(index[a], index[b])
    return _collect(ordered, uf)


def _collect(ordered: Sequence[ClusterItem], uf: _UnionFind) -> list[Cluster]:
    groups: dict[int, list[int]] = {}
    for k in range(len(ordered)):
        groups.setdefault(uf.find(k), []).append(k)
    clusters = []
    for members in groups.values():
        if len(members) < 2:
            continue
        # members are in index order, which is path order; max() keeps the first of equals.
        rep = max(members, key=lambda k: (ordered[k].pixels, -k))
        clusters.append(
            Cluster(
                representative=ordered[rep].path,
                members=tuple(ordered[k].path for k in members),
                distances=tuple(hamming(ordered[k].dhash, ordered[rep].dhash) for k in members),
            )
        )
    clusters.sort(key=lambda c: c.members[0])
    return clusters
