"""Image fingerprints: dHash, a cached parallel hasher, all-pairs search, clusters, review.

    from handrail.images import hash_files, find_pairs, find_clusters

    run = hash_files(paths, cache="dhash-cache.sqlite")          # results + errors, timings
    pairs = find_pairs([r.dhash for r in run.results], radius=15)  # (i, j, distance), i < j
    clusters = find_clusters(run.results, threshold=10, pairs=pairs)
    queue = review_pairs(run.results, pairs, band=(8, 15))        # for a human to decide

Needs the ``images`` extra (Pillow, NumPy); the HTML review page also needs Jinja2.
"""

from __future__ import annotations

from .clusters import Cluster, ClusterItem, find_clusters
from .dhash import DEFAULT_MAX_PIXELS, HashError, ImageHash, Mode, Reason, dhash_file, hamming
from .hasher import HashCache, HashRun, hash_files
from .pairs import DEFAULT_THRESHOLD, LOW_CONFIDENCE, Pairs, find_pairs
from .review import (
    DecisionStore,
    ReviewDecision,
    ReviewFileError,
    ReviewPair,
    export_csv,
    export_html,
    export_json,
    import_decisions,
    review_pairs,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_THRESHOLD",
    "LOW_CONFIDENCE",
    "Cluster",
    "ClusterItem",
    "DecisionStore",
    "HashCache",
    "HashError",
    "HashRun",
    "ImageHash",
    "Mode",
    "Pairs",
    "Reason",
    "ReviewDecision",
    "ReviewFileError",
    "ReviewPair",
    "dhash_file",
    "export_csv",
    "export_html",
    "export_json",
    "find_clusters",
    "find_pairs",
    "hamming",
    "hash_files",
    "import_decisions",
    "review_pairs",
]
