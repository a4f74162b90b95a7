"""The json-state recipe: a py-captions data directory's JSON state files into one SQLite database.

What the hand-written guide did, and what this does instead:

- It backed up with a tar of ``*.json``; here every resource gets a verified snapshot.
- Its importers swallowed errors and dropped bad records silently; here every record
  that cannot be imported is journalled with file, key and reason, and the run stops at a
  gate when more than ``max_reject_share`` of them fail.
- It renamed source files and left markers that disagreed with its own guide; here the
  sources stay byte-identical (a check proves it) and one marker file, written
  atomically, records what was imported from which file digest.
- Its rollback deleted the database and hoped the tarball was current; here rollback
  drops exactly what the run created and the data directory returns to its fingerprint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...checks import ColumnsExist, FilesUnchanged, Predicate, Sample, SchemaSuperset
from ...engine.context import StepContext
from ...errors import ResourceError
from ...hashing import sha256_file
from ...model import BlastRadius
from ...resources import Directory, JSONFile, SQLite
from ...runbook import Gate, Runbook
from ...steps.checkpoint import Checkpoint
from ...steps.json_import import ImportJSON, ImportRecords, RecordError, RejectShare, SourceRecord
from ...steps.json_transform import TransformJSON
from ...steps.sql import CreateSchema

NAME = "json-state"
SUMMARY = (
    "py-captions JSON state files (settings, executions, queue, progress, heartbeats) into SQLite"
)
DB_FILE = "py_captions.db"
MARKER_FILE = "handrail_migration.json"
SOURCES = (
    "settings.json",
    "executions.json",
    "state.json",
    "progress.json",
    "heartbeat_polling.txt",
    "heartbeat_manual.txt",
    ".env",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key VARCHAR(100) PRIMARY KEY,
    value TEXT NOT NULL,
    value_type VARCHAR(20) NOT NULL,
    updated_at DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    id VARCHAR(200) PRIMARY KEY,
    title VARCHAR(500) NOT NULL,
    path VARCHAR(1000),
    status VARCHAR(50) NOT NULL,
    kind VARCHAR(50),
    started_at DATETIME NOT NULL,
    completed_at DATETIME,
    success BOOLEAN,
    error_message TEXT,
    elapsed_seconds FLOAT,
    input_size_bytes INTEGER,
    output_size_bytes INTEGER,
    cancel_requested BOOLEAN DEFAULT 0
);
CREATE TABLE IF NOT EXISTS execution_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id VARCHAR(200) NOT NULL,
    step_name VARCHAR(100) NOT NULL,
    status VARCHAR(50) NOT NULL,
    started_at DATETIME,
    completed_at DATETIME,
    input_path VARCHAR(1000),
    output_path VARCHAR(1000),
    step_metadata TEXT,
    FOREIGN KEY (execution_id) REFERENCES executions(id)
);
CREATE TABLE IF NOT EXISTS manual_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path VARCHAR(1000) UNIQUE NOT NULL,
    skip_caption_generation BOOLEAN DEFAULT 0 NOT NULL,
    log_verbosity VARCHAR(50) DEFAULT 'NORMAL' NOT NULL,
    added_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    priority INTEGER DEFAULT 0 NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    job_id VARCHAR(200) PRIMARY KEY,
    process_type VARCHAR(50) NOT NULL,
    percent FLOAT NOT NULL,
    message VARCHAR(500),
    progress_metadata TEXT,
    updated_at DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS polling_cache (
    rec_id VARCHAR(100) PRIMARY KEY,
    yielded_at DATETIME NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    service_name VARCHAR(50) PRIMARY KEY,
    last_beat DATETIME NOT NULL,
    status VARCHAR(50) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_executions_status ON executions(status);
CREATE INDEX IF NOT EXISTS idx_executions_started_at ON executions(started_at);
"""

TABLES = {
    "settings": ["key", "value", "value_type", "updated_at"],
    "executions": ["id", "title", "path", "status", "started_at", "success", "elapsed_seconds"],
    "execution_steps": ["execution_id", "step_name", "status"],
    "manual_queue": ["path", "skip_caption_generation", "log_verbosity", "priority"],
    "progress": ["job_id", "process_type", "percent", "progress_metadata"],
    "polling_cache": ["rec_id", "yielded_at"],
    "heartbeats": ["service_name", "last_beat", "status"],
}
VERBOSITIES = ("MINIMAL", "NORMAL", "VERBOSE")


# -- value conversions --------------------------------------------------------------------
def kind_of(value: Any) -> str:
    """'a string', 'a number', 'an object'… for messages about wrong types."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    names: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def parse_time(value: Any, field: str) -> str:
    """ISO 8601 (with Z, an offset, or naive = UTC) -> 'YYYY-MM-DDTHH:MM:SS.ffffff+00:00'."""
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"{field} is not a timestamp: {value!r}")
    text = value.strip().replace("Z", "+00:00").replace(" ", "T", 1)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(f"{field} is not a timestamp: {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def infer_value(value: Any) -> tuple[str, str]:
    """(stored text, value_type) for a settings value, as the app's SettingsService reads it."""
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool"
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError(f"number {value!r} cannot be stored")
        return repr(value), "float"
    if isinstance(value, str):
        return value, "string"
    return json.dumps(value, sort_keys=True, ensure_ascii=False), "json"


def infer_env(text: str) -> Any:
    """A .env string as the typed value it stands for."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
        return f if math.isfinite(f) else text
    except ValueError:
        return text


def file_time(path: Path) -> str:
    """A source file's modification time: a stable 'updated_at' for what it holds."""
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="microseconds")


def read_env(path: Path) -> dict[str, tuple[int, str]]:
    """KEY=VALUE lines -> {KEY: (line number, value)}; comments and blanks skipped."""
    out: dict[str, tuple[int, str]] = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("export "):
            s = s[7:].lstrip()
        key, sep, value = s.partition("=")
        if not sep or not key.strip():
            raise ResourceError(
                f"{path}:{n}: not a KEY=VALUE line: {line!r}",
                hint="fix or remove the line; nothing was changed",
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = (n, value)
    return out


# -- the records of each source file ----------------------------------------------------
def map_setting(rec: SourceRecord) -> dict[str, Any]:
    """Import settings: one settings row, its value stored as text with its type."""
    value, stamp = rec.value
    text, typ = infer_value(value)
    if len(rec.key) > 100:
        raise RecordError("setting name longer than 100 characters")
    return {"key": rec.key, "value": text, "value_type": typ, "updated_at": stamp}


def read_executions(doc: Any, name: str) -> Iterator[SourceRecord]:
    """Import executions: executions.json holds ``{"executions": {job_id: record}}``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("executions"), dict):
        raise ResourceError(f'{name}: expected {{"executions": {{job_id: ...}}}}')
    for job_id, rec in doc["executions"].items():
        yield SourceRecord(name, job_id, rec)


def map_execution(rec: SourceRecord) -> dict[str, Any]:
    """Import executions: one executions row; a record the app could not use is a reject."""
    v = rec.value
    if not isinstance(v, dict):
        raise RecordError(f"record is {kind_of(v)}, not an object")
    title = v.get("title")
    if not isinstance(title, str) or not title:
        raise RecordError("missing field 'title'")
    status = v.get("status")
    if not isinstance(status, str) or not status:
        raise RecordError("missing field 'status'")
    elapsed = v.get("elapsed_seconds")
    if elapsed is not None and (isinstance(elapsed, bool) or not isinstance(elapsed, int | float)):
        raise RecordError(f"elapsed_seconds is not a number: {elapsed!r}")
    success = v.get("success")
    if success is not None and not isinstance(success, bool):
        raise RecordError(f"success is not true/false: {success!r}")
    completed = v.get("completed_at")
    return {
        "id": rec.key,
        "title": title,
        "path": v.get("path"),
        "status": status,
        "kind": v.get("kind"),
        "started_at": parse_time(v.get("started_at"), "started_at"),
        "completed_at": parse_time(completed, "completed_at") if completed else None,
        "success": None if success is None else int(success),
        "error_message": v.get("error"),
        "elapsed_seconds": None if elapsed is None else float(elapsed),
    }


def read_queue(doc: Any, name: str) -> Iterator[SourceRecord]:
    """Import manual queue: state.json's queue, a list of paths or {path: options}."""
    if not isinstance(doc, dict):
        raise ResourceError(f"{name}: expected an object")
    queue = doc.get("manual_process_paths", doc.get("reprocess_paths", []))
    if isinstance(queue, list):
        for i, item in enumerate(queue):
            key = item if isinstance(item, str) else f"[{i}]"
            yield SourceRecord(name, key, (item, {}))
    elif isinstance(queue, dict):
        for path, opts in queue.items():
            yield SourceRecord(name, path, (path, opts))
    else:
        raise ResourceError(f"{name}: the queue is a {type(queue).__name__}, not a list or object")


def map_queue(rec: SourceRecord) -> dict[str, Any]:
    """Import manual queue: one manual_queue row with its options checked."""
    path, opts = rec.value
    if not isinstance(path, str) or not path:
        raise RecordError(f"queued path is {kind_of(path)}, not a string")
    if not isinstance(opts, dict):
        raise RecordError(f"options are {kind_of(opts)}, not an object")
    skip = opts.get("skip_caption_generation", False)
    if not isinstance(skip, bool):
        raise RecordError(f"skip_caption_generation is not true/false: {skip!r}")
    verbosity = str(opts.get("log_verbosity", "NORMAL")).upper()
    if verbosity not in VERBOSITIES:
        raise RecordError(f"log_verbosity {verbosity!r} is not one of {VERBOSITIES}")
    stamp = rec.stamp
    return {
        "path": path,
        "skip_caption_generation": int(skip),
        "log_verbosity": verbosity,
        "added_at": stamp,
        "updated_at": stamp,
        "priority": 0,
    }


def read_progress(doc: Any, name: str) -> Iterator[SourceRecord]:
    """Import progress: progress.json holds ``{job_id: progress}``."""
    if not isinstance(doc, dict):
        raise ResourceError(f"{name}: expected an object of job_id -> progress")
    for job_id, rec in doc.items():
        yield SourceRecord(name, job_id, rec)


def map_progress(rec: SourceRecord) -> dict[str, Any]:
    """Import progress: one progress row, its details kept as JSON text."""
    v = rec.value
    if not isinstance(v, dict):
        raise RecordError(f"record is {kind_of(v)}, not an object")
    pct = v.get("percent")
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 <= pct <= 100:
        raise RecordError(f"percent is not a number from 0 to 100: {pct!r}")
    ptype = v.get("process_type")
    if not isinstance(ptype, str) or not ptype:
        raise RecordError("missing field 'process_type'")
    details = v.get("details")
    return {
        "job_id": rec.key,
        "process_type": ptype,
        "percent": float(pct),
        "message": v.get("message"),
        "progress_metadata": None if details is None else json.dumps(details, sort_keys=True),
        "updated_at": rec.stamp,
    }


def map_heartbeat(rec: SourceRecord) -> dict[str, Any]:
    """Import heartbeats: one heartbeats row per heartbeat_<service>.txt."""
    return {
        "service_name": rec.key,
        "last_beat": parse_time(rec.value, "heartbeat"),
        "status": "alive",
    }


@dataclass(frozen=True)
class Timed:
    """A JSON file's reader whose records carry the file's mtime (the rows' stable
    updated_at). Steps get the bound ``read``, so its source is in the plan hash."""

    reader: Callable[[Any, str], Iterator[SourceRecord]]
    path: Path

    def read(self, doc: Any, name: str) -> Iterator[SourceRecord]:
        stamp = file_time(self.path)
        for rec in self.reader(doc, name):
            yield SourceRecord(rec.source, rec.key, rec.value, stamp)


# -- the resources ------------------------------------------------------------------------
@dataclass(frozen=True)
class StateFiles:
    """The data directory and the resources in it: what the runbook reads and writes.

    Its methods read what is not one JSON document (settings with their .env fallback,
    the heartbeat files) and compute the marker; they resolve paths through ``ctx.use``,
    so a rehearsal reads its clones."""

    root: Path  # as given: the timed readers stamp records with its files' mtimes
    data: Directory
    db: SQLite
    settings: JSONFile
    executions: JSONFile
    state: JSONFile
    progress: JSONFile
    marker: JSONFile

    @classmethod
    def of(cls, data_dir: Path) -> StateFiles:
        if not data_dir.is_dir():
            raise ResourceError(
                f"data directory not found: {data_dir}",
                hint="point the runbook at the app's data directory (the one with settings.json)",
            )
        return cls(
            root=data_dir,
            data=Directory("data", data_dir, exclude=[DB_FILE, f"{DB_FILE}-*", MARKER_FILE]),
            db=SQLite("db", data_dir / DB_FILE, create=True),
            settings=JSONFile("settings", data_dir / "settings.json", create=True),
            executions=JSONFile("executions", data_dir / "executions.json", create=True),
            state=JSONFile("state", data_dir / "state.json", create=True),
            progress=JSONFile("progress", data_dir / "progress.json", create=True),
            marker=JSONFile("marker", data_dir / MARKER_FILE, create=True),
        )

    def at(self, ctx: StepContext, name: str) -> Path:
        return ctx.use(self.data).path / name

    def read_settings(self, ctx: StepContext) -> list[SourceRecord]:
        """Import settings: settings.json, falling back to .env defaults for keys it lacks."""
        path = self.at(ctx, "settings.json")
        doc = ctx.use(self.settings).read() if path.exists() else {}
        if not isinstance(doc, dict):
            raise ResourceError(f"{path}: expected an object of settings, got {type(doc).__name__}")
        stamp = file_time(path) if path.exists() else None
        records = [SourceRecord("settings.json", k, (v, stamp)) for k, v in doc.items()]
        env_path = self.at(ctx, ".env")
        for key, (line, value) in read_env(env_path).items():
            if key.lower() not in doc:
                records.append(
                    SourceRecord(
                        f".env:{line}", key.lower(), (infer_env(value), file_time(env_path))
                    )
                )
        return records

    def read_heartbeats(self, ctx: StepContext) -> list[SourceRecord]:
        """Import heartbeats: the text of heartbeat_polling.txt and heartbeat_manual.txt."""
        out = []
        for service in ("polling", "manual"):
            path = self.at(ctx, f"heartbeat_{service}.txt")
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").strip()
                out.append(SourceRecord(path.name, service, text))
        return out

    def new_marker(self, old: Any, ctx: StepContext) -> Any:
        """Write migration marker: what was imported, from which source file digests."""
        root = ctx.use(self.data).path  # the clone in a rehearsal, never production
        sources = {name: sha256_file(root / name)[0] for name in SOURCES if (root / name).exists()}
        return {
            "format": 1,
            "database": DB_FILE,
            "tables": sorted(TABLES),
            "imported_from": sources,
            "note": "state lives in the database; the JSON files are kept unchanged",
        }


@dataclass(frozen=True)
class CountsMatch:
    """Check import: each table holds at least the records its import read minus those it
    rejected (the counts come from the journalled plans)."""

    imports: Sequence[ImportRecords]
    db: SQLite

    def __call__(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        assert ctx.journal is not None
        evidence: dict[str, Any] = {}
        ok = True
        for step in self.imports:
            row = ctx.journal.step(ctx.run_id, step.name)
            plan_counts = (row.plan or {}).get("counts", {})
            expected = int(plan_counts.get("records", 0)) - int(plan_counts.get("rejects", 0))
            have = ctx.use(self.db).query(f'SELECT count(*) FROM "{step.table}"')[0][0]
            evidence[step.table] = {"expected_at_least": expected, "rows": have}
            ok = ok and have >= expected
        return ok, evidence


# -- the steps, in runbook order ----------------------------------------------------------
def create_schema(db: SQLite) -> CreateSchema:
    """Step 1: the seven tables and two indexes, gated on every column being there."""
    return CreateSchema(
        "create schema",
        db,
        ddl=SCHEMA,
        blast=BlastRadius(
            changes=f"creates {DB_FILE} with 7 tables and 2 indexes",
            worst_case="a statement fails: the transaction leaves no table behind",
            detection="the schema gate's column checks fail",
        ),
        gates=[
            Gate(
                "schema in place",
                checks=[
                    *(ColumnsExist(db, t, cols) for t, cols in TABLES.items()),
                    SchemaSuperset(db),
                ],
            )
        ],
    )


def upsert_blast(table: str) -> BlastRadius:
    """The blast radius every import shares."""
    return BlastRadius(
        f"upserts rows into {table} by key",
        "a batch fails: it rolls back whole; earlier batches stay and resume skips them",
        "the import gate's reject share and row counts",
    )


def import_settings(files: StateFiles) -> ImportRecords:
    """Step 2: settings.json, with the .env defaults it lacks, into settings."""
    return ImportRecords(
        "import settings",
        db=files.db,
        table="settings",
        key="key",
        read=files.read_settings,
        mapper=map_setting,
        reads=(files.data, files.settings),
        blast=upsert_blast("settings"),
    )


def import_executions(files: StateFiles, batch_size: int) -> ImportJSON:
    """Step 3: executions.json (if there) into executions, ``batch_size`` rows a batch."""
    return ImportJSON(
        "import executions",
        db=files.db,
        table="executions",
        key="id",
        source=files.executions,
        reader=Timed(read_executions, files.root / "executions.json").read,
        mapper=map_execution,
        optional=True,
        batch_size=batch_size,
        blast=upsert_blast("executions"),
    )


def import_manual_queue(files: StateFiles) -> ImportJSON:
    """Step 4: state.json's queue (if there) into manual_queue."""
    return ImportJSON(
        "import manual queue",
        db=files.db,
        table="manual_queue",
        key="path",
        source=files.state,
        reader=Timed(read_queue, files.root / "state.json").read,
        mapper=map_queue,
        optional=True,
        blast=upsert_blast("manual_queue"),
    )


def import_progress(files: StateFiles) -> ImportJSON:
    """Step 5: progress.json (if there) into progress."""
    return ImportJSON(
        "import progress",
        db=files.db,
        table="progress",
        key="job_id",
        source=files.progress,
        reader=Timed(read_progress, files.root / "progress.json").read,
        mapper=map_progress,
        optional=True,
        blast=upsert_blast("progress"),
    )


def import_heartbeats(files: StateFiles) -> ImportRecords:
    """Step 6: the heartbeat files into heartbeats."""
    return ImportRecords(
        "import heartbeats",
        db=files.db,
        table="heartbeats",
        key="service_name",
        read=files.read_heartbeats,
        mapper=map_heartbeat,
        reads=(files.data,),
        blast=upsert_blast("heartbeats"),
    )


def check_import(
    files: StateFiles, imports: Sequence[ImportRecords], max_reject_share: float, sample_size: int
) -> Checkpoint:
    """Step 7: the STOP after the imports: reject share, row counts, sources untouched."""
    return Checkpoint(
        "check import",
        gates=[
            Gate(
                "import complete",
                checks=[
                    RejectShare(list(imports), max_share=max_reject_share),
                    Predicate(
                        "every good record is a row",
                        CountsMatch(imports, files.db),
                        "each table holds at least the records read minus those rejected",
                    ),
                    FilesUnchanged(files.data, list(SOURCES)),
                    Sample(
                        files.db,
                        "SELECT id, title, status, started_at, success FROM executions",
                        sample_size,
                        name="executions sample",
                        instructions="compare a few with executions.json",
                    ),
                ],
                instructions="Read the rejects; approve if each is a record the app could not "
                "use either.",
            )
        ],
    )


def write_marker(files: StateFiles) -> TransformJSON:
    """Step 8: the marker that tells the app to read the database, written atomically."""
    return TransformJSON(
        "write migration marker",
        files.marker,
        files.new_marker,
        blast=BlastRadius(
            changes=f"writes {MARKER_FILE}, which tells the app to read the database",
            worst_case="none: written atomically (temp file, fsync, rename)",
            detection="the marker is missing or names other digests",
        ),
    )


# -- the runbook --------------------------------------------------------------------------
def build(
    data_dir: str | Path,
    *,
    max_reject_share: float = 0.01,
    sample_size: int = 5,
    batch_size: int = 500,
) -> Runbook:
    """The migration runbook for one data directory.

    ``max_reject_share``: the import gate fails when more than this share of all source
    records cannot be imported (default 1%).
    """
    data_dir = Path(data_dir)
    files = StateFiles.of(data_dir)
    imports = [
        import_settings(files),
        import_executions(files, batch_size),
        import_manual_queue(files),
        import_progress(files),
        import_heartbeats(files),
    ]
    return Runbook(
        NAME,
        steps=[
            create_schema(files.db),
            *imports,
            check_import(files, imports, max_reject_share, sample_size),
            write_marker(files),
        ],
        description=SUMMARY,
        prerequisites=[
            "stop the app's services so the JSON files are not written meanwhile",
            f"free disk space for a copy of {data_dir}",
        ],
    )
