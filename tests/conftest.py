"""Suite-wide fixtures: one throwaway PostgreSQL cluster, a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from handrail.testing.postgres import TempCluster

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[TempCluster]:
    """A PostgreSQL cluster started once for the session (initdb + pg_ctl), then removed."""
    with TempCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(pg_cluster: TempCluster) -> Iterator[str]:
    """The DSN of a new empty database ``test_<n>``, dropped after the test."""
    name = f"test_{next(_counter)}"
    dsn = pg_cluster.create_database(name)
    yield dsn
    pg_cluster.drop_database(name)
