"""Where the PostgreSQL programs are: the server binaries (initdb, pg_ctl, postgres) and
the client programs of the same version (pg_dump, pg_restore, psql).

The :class:`~handrail.resources.postgres.Postgres` resource runs pg_dump and pg_restore for
its backups; the throwaway cluster of the demo and the tests starts the server binaries.
``HANDRAIL_PG_BINDIR`` overrides the search.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from ..errors import ResourceError

#: where Debian/Ubuntu (``apt-get install postgresql``) put the server binaries
_SEARCH_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
)


class PostgresNotFound(ResourceError):
    """initdb/pg_ctl are not installed where handrail looks for them."""


def _version_key(path: str) -> tuple[int, ...]:
    parts = [p for p in Path(path).parts if p.replace(".", "").isdigit()]
    if not parts:
        return (0,)
    return tuple(int(x) for x in parts[-1].split("."))


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and pg_dump: PATH first, then known places.

    ``HANDRAIL_PG_BINDIR`` overrides the search. The newest versioned directory wins.
    """
    override = os.environ.get("HANDRAIL_PG_BINDIR")
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for pattern in _SEARCH_GLOBS:
        found = sorted(glob.glob(pattern), key=_version_key, reverse=True)
        candidates.extend(Path(p) for p in found)
    for bindir in candidates:
        if all((bindir / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in "
        "/usr/lib/postgresql/*/bin",
        hint="install them (Debian: apt-get install postgresql, or `make postgres`), "
        "or set HANDRAIL_PG_BINDIR",
    )


def client_tool(name: str) -> str:
    """Path of a client program (pg_dump, pg_restore, psql) matching the server binaries."""
    try:
        d = find_bindir()
        if (d / name).exists():
            return str(d / name)
    except PostgresNotFound:
        pass
    found = shutil.which(name)
    if found:
        return found
    raise PostgresNotFound(
        f"the PostgreSQL client program {name} was not found",
        hint="install PostgreSQL's client programs (Debian: apt-get install postgresql-client)",
    )
