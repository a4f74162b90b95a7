"""A throwaway PostgreSQL cluster for tests, benches and ``handrail demo``.

:class:`TempCluster` runs ``initdb`` into a temporary directory, starts ``postgres`` on a
free loopback port with its unix socket inside that directory, waits until it accepts
connections, and on close stops it and removes every file. Trust authentication and
``fsync=off``: it is for data nobody needs tomorrow.

PostgreSQL refuses to run as root. When the current user is root, the server side
(``initdb``, ``pg_ctl``, ``postgres``) runs as an unprivileged system user (``handrail-pg``,
created with ``useradd`` when missing, else ``nobody``) through ``runuser`` or
``setpriv``; the client side (psycopg, ``pg_dump``) stays the current user and connects
over TCP as the database superuser ``postgres``.

Example::

    with TempCluster() as pg:
        dsn = pg.create_database("app")
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from ...errors import ResourceError

# The binary locator lives with the Postgres resource (its backups run pg_dump); the names
# stay importable from here, where tests and benches found them before.
from ...resources._pgbin import PostgresNotFound as PostgresNotFound
from ...resources._pgbin import client_tool as client_tool
from ...resources._pgbin import find_bindir

SUPERUSER = "postgres"
SERVICE_USER = "handrail-pg"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _service_user() -> str:
    """An unprivileged user to run the server as when we are root (created if needed)."""
    try:
        pwd.getpwnam(SERVICE_USER)
        return SERVICE_USER
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd:
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0 or "already exists" in proc.stderr:
            return SERVICE_USER
    return "nobody"


class TempCluster:
    """A PostgreSQL cluster in a temporary directory, removed on :meth:`close`.

    ``dsn(dbname)`` gives a libpq URI over TCP; :meth:`create_database` and
    :meth:`drop_database` manage databases. Use it as a context manager.
    """

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        base: Path | None = None,
        settings: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.bindir = bindir or find_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="handrail-pg-", dir=base))
        self.datadir = self.base / "data"
        self.sockdir = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self.port = 0
        self.host = "127.0.0.1"
        self.settings = {
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "60",
            "shared_buffers": "128MB",
            "max_wal_size": "2GB",
            "log_min_messages": "warning",
        } | (settings or {})
        self.start_timeout = start_timeout
        self.run_as: str | None = _service_user() if os.geteuid() == 0 else None
        self._started = False

    # -- running server-side programs ----------------------------------------------------
    def _cmd(self, exe: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / exe), *args]
        if self.run_as is None:
            return cmd
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", self.run_as, "--", *cmd]
        setpriv = shutil.which("setpriv")
        if setpriv:
            pw = pwd.getpwnam(self.run_as)
            return [
                setpriv,
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--clear-groups",
                *cmd,
            ]
        raise ResourceError(
            "running as root, and neither runuser nor setpriv is available to start "
            "PostgreSQL as an unprivileged user",
            hint="run as a normal user, or install util-linux",
        )

    def _run(self, exe: str, *args: str, timeout: float = 120.0) -> None:
        proc = subprocess.run(
            self._cmd(exe, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=str(self.base),
        )
        if proc.returncode != 0:
            raise ResourceError(
                f"{exe} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}"
            )

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> TempCluster:
        """initdb, then start the server and wait until it accepts connections."""
        if self._started:
            return self
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            for p in (self.base, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            )
            opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
            last: Exception | None = None
            for _ in range(5):  # the port may be taken between free_port() and bind
                self.port = free_port()
                try:
                    self._run(
                        "pg_ctl",
                        "-D",
                        str(self.datadir),
                        "-l",
                        str(self.logfile),
                        "-w",
                        "-t",
                        str(int(self.start_timeout)),
                        "-o",
                        f"-p {self.port} -h {self.host} -k {self.sockdir} {opts}",
                        "start",
                        timeout=self.start_timeout + 10,
                    )
                    last = None
                    break
                except ResourceError as exc:
                    last = exc
            if last is not None:
                raise ResourceError(f"{last}\n{self._log_tail()}")
            self._started = True
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=5):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ResourceError(f"PostgreSQL did not become ready: {exc}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        try:
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        except (ResourceError, subprocess.TimeoutExpired):
            pass

    def close(self) -> None:
        """Stop the server and remove the cluster's directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> TempCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- databases ---------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI for ``dbname`` over TCP, as the superuser (no password: trust)."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str, *, template: str = "template0") -> str:
        """Create database ``name`` (dropping a leftover of that name) and return its DSN."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def start_cluster(*, settings: dict[str, str] | None = None) -> TempCluster:
    """Start a :class:`TempCluster` for a CLI command (``handrail demo --recipe ...``).

    The caller owns it and must call :meth:`TempCluster.close` (or use ``with``); the
    cluster's files live in a temporary directory that ``close`` removes.
    """
    return TempCluster(settings=settings).start()
