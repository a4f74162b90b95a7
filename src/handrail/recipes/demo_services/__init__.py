"""The throwaway services a recipe's demo runs against, also used by the tests.

A recipe declares what it ``needs`` by name; :func:`services` starts exactly that and gives
the environment variables its runbook reads, so ``handrail demo`` just runs the recipe:

    postgres   a throwaway PostgreSQL cluster (:class:`~.postgres.TempCluster`)
               HANDRAIL_DEMO_PG_DSN
    peertube   a PeerTube-like API on loopback over that cluster
               (:class:`~.peertube.PeerTubeServer`; needs postgres)
               PEERTUBE_URL, PEERTUBE_TOKEN
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

#: what each service is, in the words the demo prints
DESCRIPTIONS: dict[str, str] = {
    "postgres": "a throwaway PostgreSQL cluster",
    "peertube": "a PeerTube-like API on loopback",
}


def describe(needs: Sequence[str]) -> str:
    """``a throwaway PostgreSQL cluster and a PeerTube-like API on loopback``."""
    return " and ".join(DESCRIPTIONS[n] for n in needs)


@contextmanager
def services(needs: Sequence[str]) -> Iterator[dict[str, str]]:
    """Start the services named in ``needs`` and give the environment variables that
    reach them; everything stops (and its files go) when the block ends."""
    if not needs:
        yield {}
        return
    from .postgres import TempCluster

    with TempCluster() as cluster:
        dsn = cluster.create_database("demo")
        env = {"HANDRAIL_DEMO_PG_DSN": dsn}
        if "peertube" not in needs:
            yield env
            return
        from .peertube import PeerTubeServer

        token = secrets.token_hex(16)
        with PeerTubeServer(dsn, token=token) as server:
            yield env | {"PEERTUBE_URL": server.url, "PEERTUBE_TOKEN": token}
