"""Benchmark: what the preflight costs on each demo recipe, as a ratio to the run without it.

Not a test: nothing asserts on time. For each recipe the sample data is made once; every
round then runs ``handrail run runbook.py --yes --allow-destructive`` twice on fresh copies
of that data (and, for the PostgreSQL recipes, a fresh database copied from a template):
once as users run it (the preflight validates every step, then runs the runbook forward on
clones) and once with ``--no-preflight``. The order alternates between rounds. Each round
prints the wall-clock ratio; the summary gives the median ratio per recipe and what the
preflight did (a forward run on clones, or why not: the domains recipe pushes to another
service, which a preflight never writes to, so it only validates).

    .venv/bin/python bench/preflight.py --rounds 3
    .venv/bin/python bench/preflight.py --recipes json-state,merge
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from handrail.recipes import RECIPES

console = Console()


@contextmanager
def services(needs: tuple[str, ...]) -> Iterator[tuple[dict[str, str], object]]:
    """A throwaway cluster (and PeerTube-like API) when the recipe needs them."""
    if not needs:
        yield {}, None
        return
    from handrail.testing.postgres import TempCluster

    with TempCluster() as cluster:
        dsn = cluster.create_database("template_demo")
        env = {"HANDRAIL_DEMO_PG_DSN": dsn}
        if "peertube" in needs:
            from handrail.testing.peertube import PeerTubeServer

            token = secrets.token_hex(16)
            # The server reads whichever database the run's copy points at: one per run.
            env |= {"PEERTUBE_TOKEN": token}
            yield env, (cluster, PeerTubeServer, token)
        else:
            yield env, (cluster, None, None)


def one_run(
    template: Path, env: dict[str, str], extra: list[str], ctx: object, scratch: Path, n: int
) -> tuple[float, str]:
    """Copy the sample, run it, return (seconds, the preflight's line)."""
    work = scratch / f"run-{n}"
    shutil.copytree(template, work, symlinks=True)
    run_env = os.environ | env | {"COLUMNS": "200", "NO_COLOR": "1"}
    server = None
    if ctx is not None:
        cluster, server_cls, token = ctx  # type: ignore[misc]
        dsn = cluster.create_database(f"run_{n}", template="template_demo")
        run_env["HANDRAIL_DEMO_PG_DSN"] = dsn
        if server_cls is not None:
            server = server_cls(dsn, token=token).__enter__()
            run_env["PEERTUBE_URL"] = server.url
    try:
        cmd = [sys.executable, "-m", "handrail.cli", "run", str(work / "runbook.py")]
        started = time.perf_counter()
        proc = subprocess.run(
            [*cmd, "--yes", "--allow-destructive", *extra],
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    said = proc.stdout.splitlines()
    line = next((ln for ln in said if ln.startswith("preflight: ") and "validated" in ln), "")
    shutil.rmtree(work, ignore_errors=True)
    return seconds, line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--recipes", default="json-state,dhash,merge,domains")
    args = ap.parse_args()
    summary = Table(title="Preflight cost: run with it / run without it (median of rounds)")
    for col in ("recipe", "with (s, median)", "without (s, median)", "ratio", "what it did"):
        summary.add_column(col)
    with tempfile.TemporaryDirectory(prefix="bench-preflight-") as tmp:
        scratch = Path(tmp)
        for name in args.recipes.split(","):
            recipe = RECIPES[name]
            with services(recipe.needs) as (env, ctx):
                template = scratch / f"{name}-sample"
                template.mkdir()
                old = {k: os.environ.get(k) for k in env}
                os.environ.update(env)
                try:
                    (template / "runbook.py").write_text(recipe.prepare(template))
                finally:
                    for k, v in old.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v
                withs, withouts, ratios, what = [], [], [], ""
                n = 0
                for r in range(args.rounds):
                    order = [True, False] if r % 2 == 0 else [False, True]
                    times: dict[bool, float] = {}
                    for pre in order:
                        n += 1
                        extra = [] if pre else ["--no-preflight"]
                        times[pre], line = one_run(template, env, extra, ctx, scratch, n)
                        if pre:
                            what = line.removeprefix("preflight: ")
                    withs.append(times[True])
                    withouts.append(times[False])
                    ratios.append(times[True] / times[False])
                    console.print(
                        f"{name} round {r + 1}: with {times[True]:.2f} s, without "
                        f"{times[False]:.2f} s, ratio {ratios[-1]:.2f}"
                    )
                summary.add_row(
                    name,
                    f"{statistics.median(withs):.2f}",
                    f"{statistics.median(withouts):.2f}",
                    f"{statistics.median(ratios):.2f}x",
                    what,
                )
    console.print(summary)


if __name__ == "__main__":
    main()
