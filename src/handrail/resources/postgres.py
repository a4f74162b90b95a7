"""PostgreSQL databases: ``pg_dump -Fc`` snapshots, in-server fingerprints, a ledger.

Scope. ``Postgres(name, dsn)`` covers every schema of the database; ``schemas=[...]`` or
``tables=[...]`` restrict what is fingerprinted, dumped and restored. handrail's own
schema ``_handrail`` (the ledger) is outside every scope, and relations whose names start
with ``_handrail`` are never fingerprinted.

Consistency. A snapshot opens one REPEATABLE READ transaction, exports its snapshot, and
runs ``pg_dump --snapshot`` on it, so the dump, the recorded fingerprint and the recorded
object list are one and the same state, taken while the application keeps writing.

Restore. One transaction (``psql --single-transaction``): first drop what exists in the
scope now but was not in the backup (tables created after the snapshot, ...), then replay
``pg_restore --clean --if-exists``. Either all of it applies or none.

Secrets. The DSN's password never reaches argv, errors, logs or :attr:`Backup.meta`: child
programs get it in ``PGPASSWORD`` and everything shown goes through :func:`redact`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..engine.fencing import current_fence, postgres_fence
from ..errors import BackupError, HandrailError, ResourceError
from ..hashing import digest_parts, sha256_file
from ..redact import redact
from .base import ABSENT, Backup, Fingerprint, Resource
from .names import pg_literal_percent as pg_literal_percent  # its home before the move
from .names import qualified as qualified
from .names import quote_ident as quote_ident
from .names import split_table

#: handrail's own schema in a PostgreSQL database (ledger); outside every scope
HANDRAIL_SCHEMA = "_handrail"
#: relations named with this prefix are handrail's bookkeeping, never fingerprinted
HANDRAIL_PREFIX = "_handrail"
LEDGER_TABLE = f"{HANDRAIL_SCHEMA}.ledger"

#: rows per server-side hash chunk in a fingerprint
FINGERPRINT_CHUNK = 50_000

#: session settings that make every value's text form independent of the client
CANONICAL_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)

_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


class LockTimeout(HandrailError):
    """DDL could not take its lock within ``lock_timeout``: another session holds it."""


class Postgres(Resource):
    """A PostgreSQL database, reached through a libpq DSN (URI or ``key=value`` form).

    ``schemas`` or ``tables`` (``"schema.table"`` or ``"table"`` in ``public``) restrict
    the scope; by default it is the whole database. ``lock_timeout`` bounds how long DDL
    run through :meth:`run_ddl` waits for a lock before giving up.
    """

    kind: ClassVar[str] = "postgres"
    transactional: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        dsn: str,
        *,
        schemas: Sequence[str] | None = None,
        tables: Sequence[str] | None = None,
        lock_timeout: str = "3s",
        backup_when_read: bool = True,
    ) -> None:
        super().__init__(name, backup_when_read=backup_when_read)
        if schemas is not None and tables is not None:
            raise ResourceError(f"{name}: give schemas= or tables=, not both")
        try:
            self._params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
        except psycopg.ProgrammingError as exc:
            raise ResourceError(f"{name}: not a valid PostgreSQL DSN: {redact(dsn)}") from exc
        self.dsn = dsn
        self.schemas = list(schemas) if schemas is not None else None
        self.tables = [split_table(t) for t in tables] if tables is not None else None
        self.lock_timeout = lock_timeout
        #: True for a database this object created (a clone): only those can be discarded
        self.owned = False

    # -- identity ---------------------------------------------------------------------
    @property
    def dbname(self) -> str:
        return (
            self._params.get("dbname")
            or self._params.get("user")
            or os.environ.get("PGDATABASE", "postgres")
        )

    def location(self) -> str:
        return redact(self.dsn)

    def _conninfo(self, dbname: str | None = None, *, with_password: bool = True) -> str:
        params = dict(self._params)
        if dbname is not None:
            params["dbname"] = dbname
        if not with_password:
            params.pop("password", None)
        return make_conninfo("", **params)

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if "password" in self._params:
            env["PGPASSWORD"] = self._params["password"]
        return env

    def with_database(self, dbname: str) -> Postgres:
        """The same server, credentials and scope, another database."""
        params = dict(self._params, dbname=dbname)
        other = Postgres(
            self.name,
            make_conninfo("", **params),
            schemas=self.schemas,
            tables=[f"{s}.{t}" for s, t in self.tables] if self.tables is not None else None,
            lock_timeout=self.lock_timeout,
            backup_when_read=self.backup_when_read,
        )
        return other

    # -- connections ------------------------------------------------------------------
    def _connect_error(self, exc: Exception) -> ResourceError:
        return ResourceError(
            f"{self.name}: cannot connect to PostgreSQL at {self.location()}: "
            f"{redact(str(exc)).strip()}",
            hint="check the DSN, that the server is running, and the credentials",
        )

    def _open(self, dbname: str | None = None, *, autocommit: bool = False) -> psycopg.Connection:
        try:
            return psycopg.connect(
                self._conninfo(dbname), autocommit=autocommit, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None

    @contextmanager
    def connect(self, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        """A connection to the database, closed on exit (rolled back if not committed)."""
        conn = self._open(autocommit=autocommit)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self, *, lock_timeout: str | None = None) -> Iterator[psycopg.Connection]:
        """One transaction with ``lock_timeout`` set; commits on success, else rolls back.

        A lock wait past the timeout raises :class:`LockTimeout` instead of queueing the
        application's queries behind this one.
        """
        with self.connect() as conn:
            try:
                with conn.transaction():
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, true)",
                        (lock_timeout or self.lock_timeout,),
                    )
                    yield conn
            except psycopg.errors.LockNotAvailable as exc:
                raise self._lock_error(exc, lock_timeout) from None

    def _lock_error(self, exc: Exception, lock_timeout: str | None) -> LockTimeout:
        return LockTimeout(
            f"{self.name}: a statement waited more than lock_timeout="
            f"{lock_timeout or self.lock_timeout} for a lock another session holds; "
            f"nothing was changed ({redact(str(exc)).strip()})",
            hint="find the blocking session (pg_stat_activity, pg_locks) or retry when "
            "the application is quieter; raise lock_timeout only if waiting is acceptable",
        )

    def run_ddl(self, statements: str | Sequence[str], *, lock_timeout: str | None = None) -> None:
        """Run DDL statements in one transaction with ``SET LOCAL lock_timeout``.

        A migration must never stall a live application: ``ALTER TABLE`` waits for its
        lock while every later query on the table waits behind it. With a short timeout
        the DDL gives up instead (:class:`LockTimeout`) and nothing is changed.
        """
        stmts = [statements] if isinstance(statements, str) else list(statements)
        with self.transaction(lock_timeout=lock_timeout) as conn:
            for stmt in stmts:
                conn.execute(stmt.encode())

    def query(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query."""
        with self.connect() as conn:
            conn.read_only = True
            return list(conn.execute(query.encode(), tuple(params)).fetchall())

    # -- state ------------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            conn = psycopg.connect(self._conninfo(), connect_timeout=10)
        except psycopg.OperationalError as exc:
            if "does not exist" in str(exc):
                return False
            raise self._connect_error(exc) from None
        conn.close()
        return True

    def validate(self) -> None:
        with self.connect() as conn:
            conn.execute("SELECT 1")
            if self.tables is not None:
                missing = [
                    f"{s}.{t}"
                    for s, t in self.tables
                    if conn.execute("SELECT to_regclass(%s)", (qualified(s, t),)).fetchone()
                    == (None,)
                ]
                if missing:
                    raise ResourceError(
                        f"{self.name}: table(s) not found in {self.location()}: "
                        f"{', '.join(missing)}"
                    )

    # -- scope ------------------------------------------------------------------------
    def _scope_schemas(self, conn: psycopg.Connection) -> list[str]:
        """Schemas in scope that exist now (whole database: every user schema)."""
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' "
            "AND nspname <> 'information_schema' AND nspname <> %s ORDER BY nspname",
            (HANDRAIL_SCHEMA,),
        ).fetchall()
        present = [r[0] for r in rows]
        if self.tables is not None:
            wanted = {s for s, _ in self.tables}
            return [s for s in present if s in wanted]
        if self.schemas is not None:
            return [s for s in present if s in self.schemas]
        return present

    def _in_scope(self, schema: str, name: str) -> bool:
        if self.tables is not None:
            return (schema, name) in self.tables
        return True

    def objects(self, conn: psycopg.Connection) -> dict[str, list[str]]:
        """Objects in scope by kind (schemas, relations, functions, types), for restore."""
        schemas = self._scope_schemas(conn)
        rels = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r','p','v','m','S','f') "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid='pg_class'::regclass "
            "  AND d.objid=c.oid AND d.deptype IN ('e','a','i')) "
            "ORDER BY 1, 2",
            (schemas,),
        ).fetchall()
        out: dict[str, list[str]] = {
            "schemas": [] if self.tables is not None else schemas,
            "relations": [
                f"{kind}:{qualified(s, n)}" for s, n, kind in rels if self._in_scope(s, n)
            ],
            "functions": [],
            "types": [],
        }
        if self.tables is None:
            out["functions"] = [
                f"{'PROCEDURE' if k == 'p' else 'FUNCTION'}:{sig}"
                for sig, k in conn.execute(
                    "SELECT p.oid::regprocedure::text, p.prokind FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY(%s) "
                    "AND p.prokind IN ('f','p') AND NOT EXISTS (SELECT 1 FROM pg_depend d "
                    "WHERE d.classid='pg_proc'::regclass AND d.objid=p.oid AND d.deptype='e') "
                    "ORDER BY 1",
                    (schemas,),
                ).fetchall()
            ]
            out["types"] = [
                f"{'DOMAIN' if t == 'd' else 'TYPE'}:{qualified(s, n)}"
                for s, n, t in conn.execute(
                    "SELECT n.nspname, t.typname, t.typtype FROM pg_type t "
                    "JOIN pg_namespace n ON n.oid = t.typnamespace "
                    "LEFT JOIN pg_class c ON c.oid = t.typrelid "
                    "WHERE n.nspname = ANY(%s) AND t.typtype IN ('e','d','r','m','c') "
                    "AND (t.typtype <> 'c' OR c.relkind = 'c') "
                    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE "
                    "d.classid='pg_type'::regclass AND d.objid=t.oid AND d.deptype='e') "
                    "ORDER BY 1, 2",
                    (schemas,),
                ).fetchall()
            ]
        return out

    def _dump_args(self, conn: psycopg.Connection) -> list[str]:
        if self.tables is not None:
            args = []
            for s, t in self.tables:
                if conn.execute("SELECT to_regclass(%s)", (qualified(s, t),)).fetchone() != (None,):
                    args += ["-t", qualified(s, t)]
            if not args:
                raise BackupError(f"{self.name}: none of the scoped tables exist; nothing to dump")
            return args
        if self.schemas is not None:
            present = self._scope_schemas(conn)
            if not present:
                raise BackupError(f"{self.name}: none of the scoped schemas exist")
            return [a for s in present for a in ("-n", quote_ident(s))]
        return ["-N", quote_ident(HANDRAIL_SCHEMA)]

    # -- fingerprint ------------------------------------------------------------------
    def size_bytes(self) -> int | None:
        rows = self.query("SELECT pg_database_size(current_database())")
        return int(rows[0][0]) if rows else None

    def fingerprint(self) -> Fingerprint:
        if not self.exists():
            return ABSENT
        with self.connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                return self._fingerprint(conn)

    def _fingerprint(self, conn: psycopg.Connection) -> Fingerprint:
        """Schema from the catalogs and rows hashed in the server, one part per object."""
        for stmt in CANONICAL_SETTINGS:
            conn.execute(stmt.encode())
        schemas = self._scope_schemas(conn)
        parts: dict[str, str] = {}
        rels = conn.execute(
            "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r','p','v','m','S','f') "
            "AND c.relname NOT LIKE '\\_handrail%%' AND NOT c.relispartition "
            "ORDER BY 2, 3",
            (schemas,),
        ).fetchall()
        for oid, schema, rel, kind in rels:
            if not self._in_scope(schema, rel):
                continue
            label = f"{schema}.{rel}"
            if kind in ("r", "p", "f"):
                parts[f"schema:{label}"] = _sha(_table_schema(conn, oid))
                if kind != "f":
                    parts[f"rows:{label}"] = _table_rows_digest(conn, oid, schema, rel)
            elif kind in ("v", "m"):
                (defn,) = conn.execute("SELECT pg_get_viewdef(%s::oid)", (oid,)).fetchone() or ("",)
                parts[f"schema:{label}"] = _sha({"kind": kind, "def": defn})
            elif kind == "S":
                row = conn.execute(
                    "SELECT s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax, "
                    "s.seqmin, s.seqcycle, l.last_value, l.is_called "
                    "FROM pg_sequence s, LATERAL (SELECT last_value, is_called FROM "
                    f"{qualified(schema, rel)}) l WHERE s.seqrelid = %s",
                    (oid,),
                ).fetchone()
                parts[f"sequence:{label}"] = _sha(list(row or ()))
        if self.tables is None:
            for sig, body in conn.execute(
                "SELECT p.oid::regprocedure::text, "
                "CASE WHEN p.prokind IN ('f','p') THEN pg_get_functiondef(p.oid) END "
                "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_depend d "
                "WHERE d.classid='pg_proc'::regclass AND d.objid=p.oid AND d.deptype='e') "
                "ORDER BY 1",
                (schemas,),
            ).fetchall():
                parts[f"function:{sig}"] = _sha(body)
            for schema, typ, labels in conn.execute(
                "SELECT n.nspname, t.typname, "
                "array(SELECT enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid "
                "ORDER BY e.enumsortorder) FROM pg_type t "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = ANY(%s) AND t.typtype = 'e' ORDER BY 1, 2",
                (schemas,),
            ).fetchall():
                parts[f"type:{schema}.{typ}"] = _sha(labels)
        return Fingerprint(digest_parts("postgres", parts), parts)

    # -- backups ----------------------------------------------------------------------
    def snapshot(self, dest: Path) -> Backup:
        if not self.exists():
            return Backup(self.name, self.kind, None, "", 0, ABSENT, {"absent": True})
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{self.name}.pgdump"
        tmp = target.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        with self.connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                (snap,) = conn.execute("SELECT pg_export_snapshot()").fetchone() or ("",)
                args = self._dump_args(conn)
                objects = self.objects(conn)
                fp = self._fingerprint(conn)
                version = conn.info.server_version
                self._pg_tool(
                    "pg_dump",
                    "-Fc",
                    "-w",
                    f"--snapshot={snap}",
                    "-f",
                    str(tmp),
                    *args,
                    f"--dbname={self._conninfo(with_password=False)}",
                )
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(target)
        digest, size = sha256_file(target)
        meta = {
            "database": self.dbname,
            "location": self.location(),
            "scope": self._scope_meta(),
            "objects": objects,
            "format": "pg_dump custom",
            "server_version": version,
        }
        return Backup(self.name, self.kind, target, digest, size, fp, meta)

    def _scope_meta(self) -> dict[str, Any]:
        if self.tables is not None:
            return {"tables": [f"{s}.{t}" for s, t in self.tables]}
        if self.schemas is not None:
            return {"schemas": list(self.schemas)}
        return {"database": True}

    def _pg_tool(
        self, tool: str, *args: str, stdin: Any = None
    ) -> subprocess.CompletedProcess[str]:
        from ._pgbin import client_tool

        proc = subprocess.run(
            [client_tool(tool), *args],
            env=self._child_env(),
            stdin=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BackupError(
                f"{self.name}: {tool} failed for {self.location()} (exit {proc.returncode}): "
                f"{redact(proc.stderr.strip())[-2000:]}"
            )
        return proc

    def _ensure_database(self) -> None:
        if self.exists():
            return
        admin = self._open(_maintenance_db(self.dbname), autocommit=True)
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        except psycopg.Error as exc:
            raise ResourceError(
                f"{self.name}: cannot create database {self.dbname!r} at {self.location()}: "
                f"{redact(str(exc)).strip()}"
            ) from None
        finally:
            admin.close()

    def restore(self, backup: Backup) -> None:
        if backup.path is None:
            self._drop_database(force=False)
            return
        backup.check_artefact()
        self._ensure_database()
        before = {str(k): list(v) for k, v in backup.meta.get("objects", {}).items()}
        with self.connect() as conn:
            now = self.objects(conn)
        prelude = [f"SET lock_timeout = '{self.lock_timeout}';"]
        if self.tables is not None:
            for schema in sorted({s for s, _ in self.tables}):
                prelude.append(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)};")
        # What exists now in the scope but did not at the snapshot: made after it.
        kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
        kinds |= {"S": "SEQUENCE", "f": "FOREIGN TABLE"}
        for entry in now["relations"]:
            if entry not in before.get("relations", []):
                kind, name = entry.split(":", 1)
                prelude.append(f"DROP {kinds[kind]} IF EXISTS {name} CASCADE;")
        for entry in now["functions"]:
            if entry not in before.get("functions", []):
                kind, sig = entry.split(":", 1)
                prelude.append(f"DROP {kind} IF EXISTS {sig} CASCADE;")
        for entry in now["types"]:
            if entry not in before.get("types", []):
                kind, name = entry.split(":", 1)
                prelude.append(f"DROP {kind} IF EXISTS {name} CASCADE;")
        for schema in now["schemas"]:
            if schema not in before.get("schemas", []) and schema != "public":
                prelude.append(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE;")
        with tempfile.TemporaryDirectory(prefix="handrail-pgrestore-") as tmp:
            script = Path(tmp) / "prelude.sql"
            script.write_text("\n".join(prelude) + "\n")
            restore_sql = self._pg_tool(
                "pg_restore", "--clean", "--if-exists", "-f", "-", str(backup.path)
            ).stdout
            # pg_restore's script turns lock_timeout off; a restore must not queue behind
            # the application's locks forever either, so it keeps ours
            restore_sql = restore_sql.replace(
                "SET lock_timeout = 0;", f"SET lock_timeout = '{self.lock_timeout}';", 1
            )
            body = Path(tmp) / "restore.sql"
            body.write_text(restore_sql)
            self._pg_tool(
                "psql",
                "-X",
                "-q",
                "--single-transaction",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                str(script),
                "-f",
                str(body),
                f"--dbname={self._conninfo(with_password=False)}",
            )

    def clone(self, scratch: Path) -> Postgres:
        """A copy in a new database on the same server.

        ``CREATE DATABASE ... TEMPLATE`` copies files and is fast, but PostgreSQL refuses
        it while other sessions are connected to the source; then the copy is a
        ``pg_dump`` of the scope restored into a fresh database.
        """
        copy = self.clone_empty(scratch)
        admin = self._open(_maintenance_db(self.dbname), autocommit=True)
        try:
            # PostgreSQL waits 5 s for other sessions to leave before refusing a template
            # copy; when some are connected, go straight to the dump.
            busy = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                "pg_backend_pid()",
                (self.dbname,),
            ).fetchone()
            if busy and busy[0]:
                raise _SourceBusy
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(copy.dbname), sql.Identifier(self.dbname)
                )
            )
            copy.clone_method = "template"
            return copy
        except (_SourceBusy, psycopg.errors.ObjectInUse):
            pass
        except psycopg.Error as exc:
            raise ResourceError(
                f"{self.name}: cannot create a clone database at {self.location()}: "
                f"{redact(str(exc)).strip()}",
                hint="the role needs CREATEDB to rehearse on a clone",
            ) from None
        finally:
            admin.close()
        backup = self.snapshot(scratch / f"clone-{copy.dbname}")
        try:
            copy.restore(backup)
        except BaseException:
            copy.discard()
            raise
        finally:
            if backup.path is not None:
                backup.path.unlink(missing_ok=True)
        copy.clone_method = "dump"
        return copy

    #: how :meth:`clone` made this copy ("template" or "dump"); empty for originals
    clone_method: str = ""

    def clone_empty(self, scratch: Path) -> Postgres:
        base = self.dbname[:40]
        copy = self.with_database(f"{base}_hr_{uuid.uuid4().hex[:10]}")
        copy.owned = True
        return copy

    def restored_matches(self, copy: Resource, backup: Backup) -> bool:
        return False  # a restore is logical: compare fingerprints

    def discard(self) -> None:
        """Drop a database this object created (a clone); refuses any other database."""
        if not self.owned:
            raise ResourceError(
                f"{self.name}: refusing to drop {self.location()}: handrail did not create it"
            )
        self._drop_database(force=True)

    def _drop_database(self, *, force: bool) -> None:
        admin = self._open(_maintenance_db(self.dbname), autocommit=True)
        try:
            stmt = (
                "DROP DATABASE IF EXISTS {} WITH (FORCE)" if force else "DROP DATABASE IF EXISTS {}"
            )
            admin.execute(sql.SQL(stmt).format(sql.Identifier(self.dbname)))
        except psycopg.Error as exc:
            raise ResourceError(
                f"{self.name}: cannot drop database {self.dbname!r}: {redact(str(exc)).strip()}"
            ) from None
        finally:
            admin.close()

    # -- ledger: batch records committed with the batch --------------------------------
    # One row per applied batch in _handrail.ledger, inserted by ledger_mark inside the
    # very transaction that applies the batch. A crash before COMMIT loses both; after it,
    # both are durable. On resume the engine asks ledger_batches() which batches committed
    # and skips them, so none applies twice (and the primary key refuses a second mark).
    LEDGER_DDL: ClassVar[tuple[str, ...]] = (
        f"CREATE SCHEMA IF NOT EXISTS {HANDRAIL_SCHEMA}",
        f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} ("
        "run_id text NOT NULL, step text NOT NULL, batch integer NOT NULL, "
        "items integer NOT NULL DEFAULT 0, rejects jsonb, "
        "at timestamptz NOT NULL DEFAULT clock_timestamp(), "
        "PRIMARY KEY (run_id, step, batch))",
    )

    @staticmethod
    def ensure_ledger(conn: psycopg.Connection) -> None:
        """Create handrail's schema and ledger table when missing (idempotent)."""
        row = conn.execute("SELECT to_regclass(%s)", (LEDGER_TABLE,)).fetchone()
        if row is None or row[0] is None:
            for stmt in Postgres.LEDGER_DDL:
                conn.execute(stmt.encode())

    @staticmethod
    def ledger_mark(
        conn: psycopg.Connection,
        run_id: str,
        step: str,
        batch: int,
        items: int = 0,
        rejects: list[dict[str, str]] | None = None,
    ) -> None:
        """Record a batch inside the caller's open transaction, beside the change itself.

        ``rejects`` (records the batch refused, with key and reason) are stored with it, so
        a resumed run can still report what an earlier process rejected.
        """
        Postgres.ensure_ledger(conn)
        postgres_fence(conn)  # a process that lost its lease: the whole batch rolls back
        conn.execute(
            f"INSERT INTO {LEDGER_TABLE} (run_id, step, batch, items, rejects) "
            "VALUES (%s, %s, %s, %s, %s)",
            (run_id, step, batch, items, json.dumps(rejects) if rejects else None),
        )

    def ledger_batches(self, run_id: str, step: str) -> set[int]:
        """Batches of ``step`` in ``run_id`` that committed in this database.

        During a run, our lease generation is recorded first, in the same transaction:
        a holder we took over cannot commit a batch after this answer (its ledger_mark
        waits for our fence row, then finds the newer generation).
        """
        if not self.exists():
            return set()
        if current_fence() is not None:
            with self.connect() as conn, conn.transaction():
                Postgres.ensure_ledger(conn)
                postgres_fence(conn)
                rows = conn.execute(
                    f"SELECT batch FROM {LEDGER_TABLE} WHERE run_id = %s AND step = %s",
                    (run_id, step),
                ).fetchall()
            return {int(r[0]) for r in rows}
        with self.connect() as conn:
            row = conn.execute("SELECT to_regclass(%s)", (LEDGER_TABLE,)).fetchone()
            if row is None or row[0] is None:
                return set()
            rows = conn.execute(
                f"SELECT batch FROM {LEDGER_TABLE} WHERE run_id = %s AND step = %s",
                (run_id, step),
            ).fetchall()
        return {int(r[0]) for r in rows}

    def ledger_rejects(self, run_id: str, step: str) -> list[dict[str, str]]:
        """Every reject stored with the committed batches of ``step``, in batch order."""
        with self.connect() as conn:
            row = conn.execute("SELECT to_regclass(%s)", (LEDGER_TABLE,)).fetchone()
            if row is None or row[0] is None:
                return []
            rows = conn.execute(
                f"SELECT rejects FROM {LEDGER_TABLE} WHERE run_id = %s AND step = %s "
                "AND rejects IS NOT NULL ORDER BY batch",
                (run_id, step),
            ).fetchall()
        return [r for (batch,) in rows for r in batch]

    def ledger_clear(
        self, run_id: str, step: str, *, conn: psycopg.Connection | None = None
    ) -> None:
        """Forget a step's batches (pass ``conn`` to do it inside a rollback's transaction)."""
        if conn is None:
            with self.connect() as own, own.transaction():
                self.ledger_clear(run_id, step, conn=own)
            return
        row = conn.execute("SELECT to_regclass(%s)", (LEDGER_TABLE,)).fetchone()
        if row is None or row[0] is None:
            return
        postgres_fence(conn)  # a stale rollback must not undo under a newer holder
        conn.execute(f"DELETE FROM {LEDGER_TABLE} WHERE run_id = %s AND step = %s", (run_id, step))


class _SourceBusy(Exception):
    """Other sessions are connected to a database we want to use as a template."""


def _maintenance_db(current: str) -> str:
    return "template1" if current == "postgres" else "postgres"


def _sha(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class TableColumn:
    """One column of a PostgreSQL table, as the catalogs describe it."""

    name: str
    type: str  # format_type(): "integer", "character varying(20)", "numeric(10,2)"
    not_null: bool
    default: str | None  # the default's expression text
    identity: str  # pg_attribute.attidentity: '' or 'a' / 'd' (ALWAYS / BY DEFAULT)
    generated: str  # pg_attribute.attgenerated: '' or 's' (stored)
    collation: str | None  # set only when not the database's default collation

    def as_list(self) -> list[Any]:
        return [
            self.name,
            self.type,
            self.not_null,
            self.default,
            self.identity,
            self.generated,
            self.collation,
        ]


def table_columns(conn: psycopg.Connection, table: str | int) -> list[TableColumn]:
    """The columns of ``table`` in their order: the one query of a table's columns.

    ``table`` is a table's OID, or its name as SQL writes it (``"public"."t"``; a bare
    name is looked up on the search path). A table that does not exist has no columns.
    """
    target = "%s" if isinstance(table, int) else "to_regclass(%s)"
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, co.collname "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
        "AND d.adnum = a.attnum LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        "AND a.attcollation <> 100 "
        f"WHERE a.attrelid = {target} AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (table,),
    ).fetchall()
    return [TableColumn(*r) for r in rows]


def _table_schema(conn: psycopg.Connection, oid: int) -> dict[str, Any]:
    """A table's definition from the catalogs, free of OIDs and DDL whitespace."""
    cols = [c.as_list() for c in table_columns(conn, oid)]
    cons = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s "
        "ORDER BY conname",
        (oid,),
    ).fetchall()
    idx = conn.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s ORDER BY 1",
        (oid,),
    ).fetchall()
    trg = conn.execute(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal "
        "ORDER BY tgname",
        (oid,),
    ).fetchall()
    return {
        "columns": cols,
        "constraints": [list(c) for c in cons],
        "indexes": [i[0] for i in idx],
        "triggers": [t[0] for t in trg],
    }


def table_key(conn: psycopg.Connection, oid: int) -> list[str]:
    """The primary key's columns, else a unique index's whose columns are all NOT NULL."""
    rows = conn.execute(
        "SELECT i.indisprimary, array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY "
        "AS k(attnum, n) JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "ORDER BY k.n)::text[], bool_and(a2.attnotnull) "
        "FROM pg_index i JOIN pg_attribute a2 ON a2.attrelid = i.indrelid "
        "AND a2.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL "
        "AND i.indexprs IS NULL AND 0 <> ALL(i.indkey) "
        "GROUP BY i.indexrelid, i.indisprimary, i.indkey, i.indrelid "
        "ORDER BY i.indisprimary DESC, array_length(i.indkey, 1), i.indexrelid",
        (oid,),
    ).fetchall()
    for _primary, cols, notnull in rows:
        if notnull:
            return list(cols)
    return []


def _table_rows_digest(conn: psycopg.Connection, oid: int, schema: str, table: str) -> str:
    """``count:sha256`` of a table's rows, hashed in the server in key-ordered chunks.

    Each chunk is ``md5(string_agg(row::text, E'\\n' ORDER BY key))`` over the next
    :data:`FINGERPRINT_CHUNK` rows after the previous chunk's last key (keyset, so every
    chunk is an index range scan); only the chunk digests and the last key come back.
    A table without a usable key is hashed as the sorted per-row md5s in one query.
    """
    key = table_key(conn, oid)
    rel = qualified(schema, table)
    h = hashlib.sha256()
    total = 0
    if not key:
        row = conn.execute(
            f"SELECT count(*), md5(string_agg(m, '' ORDER BY m)) FROM "
            f"(SELECT md5(t::text) AS m FROM {rel} AS t) s"
        ).fetchone()
        n, digest = row or (0, None)
        return f"{n}:{digest or ''}"
    kcols = ", ".join(quote_ident(k) for k in key)
    kdesc = ", ".join(f"{quote_ident(k)} DESC" for k in key)
    first = (
        f"WITH c AS MATERIALIZED (SELECT {kcols}, t::text AS r FROM {rel} AS t "
        f"ORDER BY {kcols} LIMIT {FINGERPRINT_CHUNK}) "
    )
    nxt = (
        f"WITH c AS MATERIALIZED (SELECT {kcols}, t::text AS r FROM {rel} AS t "
        f"WHERE ({kcols}) > ({', '.join(['%s'] * len(key))}) "
        f"ORDER BY {kcols} LIMIT {FINGERPRINT_CHUNK}) "
    )
    tail = (
        f"SELECT (SELECT count(*) FROM c), "
        f"(SELECT md5(string_agg(r, E'\\n' ORDER BY {kcols})) FROM c), l.* "
        f"FROM (SELECT {kcols} FROM c ORDER BY {kdesc} LIMIT 1) l"
    )
    last: tuple[Any, ...] | None = None
    while True:
        if last is None:
            row = conn.execute((first + tail).encode()).fetchone()
        else:
            row = conn.execute((nxt + tail).encode(), last).fetchone()
        if row is None:
            break
        n, digest, *lastkey = row
        total += int(n)
        h.update(f"{n}:{digest}\n".encode())
        last = tuple(lastkey)
        if n < FINGERPRINT_CHUNK:
            break
    return f"{total}:{h.hexdigest()}"
