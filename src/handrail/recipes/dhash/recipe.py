"""The dhash recipe: add dHash fingerprints to an image library and find near-duplicates.

The library is ``library.json`` (``{"images": [{"path", "filename", ...}]}``). Steps:

1. ``hash images`` (read-only for the user's data): every listed image is hashed on all
   cores with a cache keyed by path, size and mtime (a re-run hashes only new or changed
   files); results and errors go to the run's own store, idempotently, batch by batch.
   Gate: the failure rate is at most ``max_failure_rate`` (1%), and the per-image time
   (mean and p95, reported) is within the targets.
2. ``find duplicates``: an exact all-pairs search within the low-confidence band's upper
   edge, clusters within ``threshold`` (every member, not only the first match), and the
   review queue (pairs in the band) exported as JSON, CSV and a self-contained HTML page.
   Decisions imported with ``handrail review import`` join or split clusters on re-runs.
3. ``write library``: a new ``library.json`` written atomically (temp file, fsync,
   rename) with ``dhash`` and ``dhash_generated_at`` per image and the top-level
   ``dhash_migration``, ``dhash_duplicates`` (every cluster member) and ``dhash_errors``.
   Gate: no image lost, every original field unchanged. Rollback restores the backup if
   the file is as the step wrote it; if someone edited it since, it removes only the dHash
   fields and keeps their edits.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...checks import Predicate
from ...engine.context import StepContext
from ...errors import ResourceError
from ...hashing import sha256_file
from ...inline import code
from ...model import BlastRadius, Plan
from ...resources import JSONFile
from ...resources._files import atomic_write_bytes
from ...resources.jsonfile import load_json
from ...resources.sqlite import transaction
from ...runbook import Gate, Runbook, Step
from ...steps.json_transform import TransformJSON

NAME = "dhash"
SUMMARY = "image library: dHash fingerprints, near-duplicate clusters and a review queue"
DHASH_FIELDS = ("dhash", "dhash_generated_at")
TOP_FIELDS = ("dhash_migration", "dhash_duplicates", "dhash_errors")
STORE = "results.sqlite"

if TYPE_CHECKING:
    from ...images.dhash import Mode


def _images(doc: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise ResourceError(
            f'{path}: expected {{"images": [...]}}',
            hint="point the runbook at the library's library.json",
        )
    return [i for i in doc["images"] if isinstance(i, dict)]


def _store(ctx: StepContext, name: str) -> sqlite3.Connection:
    """The run's own results store (state, not user data): idempotent by path."""
    path = ctx.work_dir / "hash images" / STORE
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, dhash TEXT, width INTEGER, "
        "height INTEGER, seconds REAL, cached INTEGER);"
        "CREATE TABLE IF NOT EXISTS errors (path TEXT PRIMARY KEY, reason TEXT, detail TEXT);"
        "CREATE TABLE IF NOT EXISTS timings (batch INTEGER, n INTEGER, seconds REAL, "
        "PRIMARY KEY (batch, n));"
    )
    return conn


class HashImages(Step):
    """dHash every image listed in the library; writes only the run's results store."""

    def __init__(
        self,
        name: str,
        library: JSONFile,
        *,
        cache: Path,
        mode: Mode = "fast",
        workers: int | None = None,
        **kw: Any,
    ) -> None:
        self.library, self.cache, self.mode, self.workers = library, cache, mode, workers
        kw.setdefault("reads", (library,))
        kw.setdefault("batch_size", 500)
        super().__init__(name, **kw)

    def params(self) -> dict[str, Any]:
        return {"library": self.library.name, "mode": self.mode}

    def _paths(self, ctx: StepContext) -> list[str]:
        lib = ctx.use(self.library)
        images = _images(lib.read(), lib.path)
        # Relative paths are relative to where the library lives, not to a rehearsal's
        # clone of it: the images are read, never written, and are not cloned.
        root = self.library.path.parent
        out = []
        for img in images:
            p = img.get("path") or img.get("filename")
            if isinstance(p, str) and p:
                out.append(str(root / p) if not Path(p).is_absolute() else p)
        return list(dict.fromkeys(out))

    def plan(self, ctx: StepContext) -> Plan:
        from ...images import HashCache, hash_files

        paths = self._paths(ctx)
        cached = 0
        if self.cache.exists():
            keys = []
            for p in paths:
                try:
                    st = Path(p).stat()
                except OSError:
                    continue
                keys.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
            with HashCache(self.cache) as cache:
                cached = len(cache.lookup(keys, self.mode))
        probe = hash_files(paths[:12], mode=self.mode, workers=1)  # no cache: writes nothing
        per_image = probe.mean_seconds
        workers = self.workers or _cpus()
        estimate = per_image * (len(paths) - cached) / max(1, workers)
        return Plan(
            summary=f"hash {len(paths) - cached} of {len(paths)} image(s) "
            f"({cached} cached), about {estimate:.0f}s on {workers} core(s)",
            items=len(paths),
            counts={"images": len(paths), "cached": cached, "to_hash": len(paths) - cached},
            samples=[{"path": r.path, "dhash": r.dhash} for r in probe.results[:5]],
            details={
                "estimated_seconds": round(estimate, 2),
                "probe_mean_ms": round(per_image * 1000, 2),
                "probe_errors": [{"path": e.path, "reason": e.reason} for e in probe.errors],
            },
        )

    def items(self, ctx: StepContext) -> list[Any] | None:
        return list(self._paths(ctx))

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        from ...images import hash_files

        self.cache.parent.mkdir(parents=True, exist_ok=True)
        run = hash_files(items, mode=self.mode, workers=self.workers, cache=self.cache)
        with closing(_store(ctx, self.name)) as conn, transaction(conn, immediate=False):
            conn.executemany(
                "INSERT OR REPLACE INTO hashes VALUES (?,?,?,?,?,?)",
                [(r.path, r.dhash, r.width, r.height, r.seconds, 0) for r in run.results],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO timings VALUES (?,?,?)",
                [(batch, n, t) for n, t in enumerate(run.timings)],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO errors VALUES (?,?,?)",
                [(e.path, e.reason, e.detail) for e in run.errors],
            )
        for e in run.errors:
            ctx.reject("library.json", e.path, f"{e.reason}: {e.detail}".rstrip(": "))
        return len(run.results)

    def rollback(self, ctx: StepContext) -> None:
        """Nothing of the user's changed: the results store belongs to the run."""


def _cpus() -> int:
    from ...images.hasher import default_workers

    return default_workers()


@dataclasses.dataclass(frozen=True)
class FailureRate:
    """Hash images' gate: the share of images that failed to hash, from the results store."""

    max_rate: float

    def __call__(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        conn = _store(ctx, "hash images")
        try:
            ok = conn.execute("SELECT count(*) FROM hashes").fetchone()[0]
            bad = conn.execute("SELECT reason, count(*) FROM errors GROUP BY 1").fetchall()
        finally:
            conn.close()
        failed = sum(n for _, n in bad)
        total = ok + failed
        rate = failed / total if total else 0.0
        max_rate = self.max_rate
        return rate <= max_rate, {
            "images": total,
            "failed": failed,
            "rate": round(rate, 5),
            "max_rate": max_rate,
            "by_reason": dict(bad),
            "message": f"{failed} of {total} images failed ({rate:.2%}; limit {max_rate:.2%})",
        }


def failure_rate(max_rate: float) -> Predicate:
    """Hash images: halt when more than ``max_rate`` of the images fail to hash."""
    return Predicate(
        "failure rate",
        FailureRate(max_rate),
        f"at most {max_rate:.1%} of images fail to hash (halt above)",
    )


@dataclasses.dataclass(frozen=True)
class HashTiming:
    """Hash images' gate: mean and p95 time per hashed image against the targets."""

    mean_ms: float
    p95_ms: float

    def __call__(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        conn = _store(ctx, "hash images")
        try:
            times = sorted(s for (s,) in conn.execute("SELECT seconds FROM timings"))
        finally:
            conn.close()
        if not times:
            return True, {"hashed": 0, "message": "every image came from the cache"}
        mean = 1000 * sum(times) / len(times)
        p95 = 1000 * times[max(0, -(-95 * len(times) // 100) - 1)]
        ok = mean <= self.mean_ms and p95 <= self.p95_ms
        return ok, {
            "hashed": len(times),
            "mean_ms": round(mean, 2),
            "p95_ms": round(p95, 2),
            "target_mean_ms": self.mean_ms,
            "target_p95_ms": self.p95_ms,
            "message": f"mean {mean:.1f} ms, p95 {p95:.1f} ms per image",
        }


def hash_timing(mean_ms: float, p95_ms: float) -> Predicate:
    """Hash images: the time per image (mean and p95) is within the targets."""
    return Predicate(
        "hash time per image",
        HashTiming(mean_ms, p95_ms),
        f"mean <= {mean_ms:g} ms and p95 <= {p95_ms:g} ms per image",
    )


class FindDuplicates(Step):
    """All pairs within the band's upper edge, clusters within ``threshold``, the review
    queue exported for a human; writes only the run's own files."""

    def __init__(
        self, name: str, *, threshold: int, band: tuple[int, int], decisions: Path, **kw: Any
    ) -> None:
        self.threshold, self.band, self.decisions = threshold, band, decisions
        super().__init__(name, **kw)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "band": list(self.band)}

    def plan(self, ctx: StepContext) -> Plan:
        return Plan(
            summary=f"all pairs within {max(self.band[1], self.threshold)} bits; "
            f"clusters within {self.threshold}; review band {self.band}"
        )

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        from ...images import (
            DecisionStore,
            ImageHash,
            export_csv,
            export_html,
            export_json,
            find_clusters,
            find_pairs,
            review_pairs,
        )

        conn = _store(ctx, "hash images")
        try:
            rows = conn.execute(
                "SELECT path, dhash, width, height, seconds FROM hashes ORDER BY path"
            ).fetchall()
        finally:
            conn.close()
        results = [ImageHash(p, d, w, h, s) for p, d, w, h, s in rows]
        pairs = find_pairs([r.dhash for r in results], radius=max(self.band[1], self.threshold))
        store = DecisionStore(self.decisions)
        dup, not_dup = store.edges({r.path: r.dhash for r in results})
        clusters = find_clusters(
            results, self.threshold, pairs=pairs, duplicates=dup, not_duplicates=not_dup
        )
        queue = store.pending(review_pairs(results, pairs, self.band))
        out = ctx.step_dir()
        export_json(queue, out / "review.json", band=self.band)
        export_csv(queue, out / "review.csv")
        export_html(queue, out / "review.html")
        doc = {
            "clusters": [
                {
                    "representative": c.representative,
                    "members": list(c.members),
                    "distances": list(c.distances),
                }
                for c in clusters
            ],
            "pairs_within_threshold": len(pairs.within(0, self.threshold)),
            "review_pairs": len(queue),
        }
        atomic_write_bytes(out / "clusters.json", json.dumps(doc, indent=1).encode())
        ctx.save_state(
            clusters=len(clusters), review=len(queue), review_html=str(out / "review.html")
        )
        return len(clusters)

    def rollback(self, ctx: StepContext) -> None:
        """Nothing of the user's changed."""


class WriteLibrary(TransformJSON):
    """Write the new library atomically. Rollback: the backup's bytes if the file is as
    written; otherwise strip only the dHash fields and keep the edits made since."""

    def plan(self, ctx: StepContext) -> Plan:
        lib = ctx.use(self.file)
        n = len(_images(lib.read(), lib.path))
        return Plan(
            summary=f"write {lib.path.name} with dHash fields on {n} image(s) "
            "(temp file, fsync, atomic rename)",
            items=n,
        )

    def explain_rollback(self) -> str:
        return (
            f"writes back the previous bytes of {code(self.file.name)} if it still holds "
            "what the step wrote; otherwise strips only the dHash fields and keeps the edits "
            "made since"
        )

    def rollback(self, ctx: StepContext) -> None:
        f = ctx.use(self.file)
        if "post" not in ctx.state or not f.exists():
            return
        current = sha256_file(f.path)[0]
        if current in (ctx.state["post"], ctx.state["pre"]) or ctx.state.get("_force"):
            super().rollback(ctx)
            return
        doc = load_json(f.path, what=self.file.name)
        for img in _images(doc, f.path):
            for k in DHASH_FIELDS:
                img.pop(k, None)
        for k in TOP_FIELDS:
            doc.pop(k, None)
        atomic_write_bytes(f.path, self._render(doc))
        ctx.save_state(stripped=True)


@dataclasses.dataclass(frozen=True)
class NewLibrary:
    """Write library: the library with the run's dHash fields per image and the top-level
    ``dhash_migration``, ``dhash_duplicates`` and ``dhash_errors``, from the results store
    and the clusters of ``find duplicates``. The settings are recorded in the file."""

    lib_path: Path
    threshold: int
    band: tuple[int, int]
    batch_size: int
    mode: Mode

    def document(self, old: Any, ctx: StepContext) -> Any:
        hashes, errors = _results(ctx)
        clusters_file = ctx.work_dir / "find duplicates" / "clusters.json"
        clusters = json.loads(clusters_file.read_text())["clusters"]
        stamp = ctx.state.setdefault("generated_at", _run_time(ctx))
        images = _images(old, self.lib_path)
        for img in images:
            p = img.get("path") or img.get("filename")
            full = (
                str(self.lib_path.parent / p)
                if isinstance(p, str) and not Path(p).is_absolute()
                else p
            )
            if full in hashes:
                img["dhash"] = hashes[full]
                img["dhash_generated_at"] = stamp
        dup_rows = [
            {"original": c["representative"], "duplicate": m, "hammingDistance": d}
            for c in clusters
            for m, d in zip(c["members"], c["distances"], strict=True)
            if m != c["representative"]
        ]
        old["dhash_duplicates"] = dup_rows
        old["dhash_errors"] = [
            {"image": p, "error": f"{r}: {d}".rstrip(": ")} for p, r, d in errors
        ]
        old["dhash_migration"] = {
            "total": len(images),
            "hashed": len(hashes),
            "errors": len(errors),
            "clusters": len(clusters),
            "duplicates_found": len(dup_rows),
            "threshold": self.threshold,
            "review_band": list(self.band),
            "batch_size": self.batch_size,
            "mode": self.mode,
            "generated_at": stamp,
        }
        return old


def _results(ctx: StepContext) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """The results store's hashes by path, and its errors (path, reason, detail)."""
    conn = _store(ctx, "hash images")
    try:
        hashes = dict(conn.execute("SELECT path, dhash FROM hashes"))
        errors = conn.execute("SELECT path, reason, detail FROM errors ORDER BY path").fetchall()
    finally:
        conn.close()
    return hashes, errors


def _without_dhash(imgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in img.items() if k not in DHASH_FIELDS} for img in imgs]


@dataclasses.dataclass(frozen=True)
class NothingLost:
    """Write library's gate: every image of the backup is in the new file with all its
    original fields (compared without the dHash fields on both sides: a re-run replaces
    its own)."""

    library: JSONFile
    lib_path: Path

    def __call__(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        backup = ctx.backup_of(self.library)
        if backup is None or backup.path is None:
            return False, {"message": "no backup of the library to compare with"}
        before = _images(load_json(backup.path), backup.path)
        after = _images(ctx.use(self.library).read(), self.lib_path)
        kept = _without_dhash(after)
        lost = [b.get("path") for b in _without_dhash(before) if b not in kept]
        return not lost and len(after) == len(before), {
            "before": len(before),
            "after": len(after),
            "lost_or_changed": lost[:20],
            "message": f"{len(lost)} image(s) lost or changed" if lost else "",
        }


# -- the steps, in runbook order ----------------------------------------------------------
def hash_images(
    library: JSONFile,
    state_dir: Path,
    *,
    mode: Mode,
    workers: int | None,
    batch_size: int,
    max_failure_rate: float,
    mean_ms: float,
    p95_ms: float,
) -> HashImages:
    """Step 1: hash every listed image (cached), gated on failure rate and time per image."""
    return HashImages(
        "hash images",
        library,
        cache=state_dir / "dhash-cache.sqlite",
        mode=mode,
        workers=workers,
        batch_size=batch_size,
        gates=[
            Gate(
                "hashing healthy",
                checks=[failure_rate(max_failure_rate), hash_timing(mean_ms, p95_ms)],
            )
        ],
        blast=BlastRadius(
            changes="nothing of the library: reads images, fills the hash cache",
            worst_case="a worker crashes: the batch is hashed again on resume",
            detection="the failure-rate gate",
        ),
    )


def find_duplicates(state_dir: Path, *, threshold: int, band: tuple[int, int]) -> FindDuplicates:
    """Step 2: clusters and the review queue, with the decisions imported so far."""
    return FindDuplicates(
        "find duplicates",
        threshold=threshold,
        band=band,
        decisions=state_dir / "dhash-decisions.json",
        blast=BlastRadius(
            changes="nothing of the library: writes the review queue files",
            worst_case="none",
            detection="cluster counts in the journal",
        ),
    )


def write_library(library: JSONFile, new_library: NewLibrary) -> WriteLibrary:
    """Step 3: the new library.json, atomically, gated on no image lost."""
    return WriteLibrary(
        "write library",
        library,
        new_library.document,
        gates=[
            Gate(
                "no image lost",
                checks=[
                    Predicate(
                        "every image kept with its fields",
                        NothingLost(library, new_library.lib_path),
                        "every image of the input is in the output with all its original fields",
                    )
                ],
            )
        ],
        blast=BlastRadius(
            changes="rewrites library.json with dHash fields (atomic rename)",
            worst_case="none half-written: the old or the new file, never a mix",
            detection="the no-image-lost gate",
        ),
    )


# -- the runbook --------------------------------------------------------------------------
def build(
    root: str | Path,
    *,
    threshold: int = 10,
    band: tuple[int, int] = (8, 15),
    max_failure_rate: float = 0.01,
    mean_ms: float = 50.0,
    p95_ms: float = 200.0,
    mode: Mode = "fast",
    workers: int | None = None,
    state: str | Path | None = None,
    batch_size: int = 500,
) -> Runbook:
    """The dHash migration for the library at ``root/library.json``.

    ``state``: where the hash cache and the review decisions live (default:
    ``root/.handrail``, beside the journal).
    """
    root = Path(root)
    lib_path = root / "library.json" if root.is_dir() else root
    if not lib_path.exists():
        raise ResourceError(
            f"library not found: {lib_path}", hint="give the directory holding library.json"
        )
    state_dir = Path(state) if state else lib_path.parent / ".handrail"
    library = JSONFile("library", lib_path)
    new_library = NewLibrary(lib_path, threshold, band, batch_size, mode)
    return Runbook(
        NAME,
        steps=[
            hash_images(
                library,
                state_dir,
                mode=mode,
                workers=workers,
                batch_size=batch_size,
                max_failure_rate=max_failure_rate,
                mean_ms=mean_ms,
                p95_ms=p95_ms,
            ),
            find_duplicates(state_dir, threshold=threshold, band=band),
            write_library(library, new_library),
        ],
        description=SUMMARY,
        prerequisites=["no other program writes library.json during the run"],
    )


def _run_time(ctx: StepContext) -> str:
    # The run's logical clock: the same after a resume, and in a rehearsal's second run.
    return ctx.clock or "dry-run"
