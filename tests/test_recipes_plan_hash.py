"""A recipe's plan hash is the same in every process.

Approvals are bound to the plan hash, and the functions a step calls enter it by their
source text. A function with no source to read (a ``functools.partial``, an instance with
``__call__``) is described by its memory address instead, so the hash would differ in
every process and every approval would be voided on the next command. The recipes bind
what their functions need with small classes and pass bound methods; this builds each
runbook in two fresh interpreters and compares.

(The merge recipe is not here: its ``CopyTable`` steps describe their column mapping with
``repr``, which names the conversion functions by address; that belongs to the table copy.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from handrail.images.sample import make_sample_library
from handrail.recipes.domains.sample import make_sample as make_domains
from handrail.recipes.json_state.sample import make_sample as make_json_state
from handrail.recipes.merge.sample import make_sample as make_merge

HASH = """
import sys
from handrail.recipes.{module}.recipe import build
rb = build(sys.argv[1]{kwargs})
print(rb.plan_hash())
print(" at 0x" in repr(rb.describe()))
"""

#: the push half of the domains recipe is built (not run): its URL and DSN are not dialled
DOMAINS_KW = (
    ", peertube_url='http://127.0.0.1:9', peertube_dsn='postgresql://nobody@127.0.0.1:9/none'"
)


#: the merge is built (not run): its DSN is not dialled
MERGE_KW = ", dsn='postgresql://nobody@127.0.0.1:9/none'"


def plan_hash(module: str, root: Path, kwargs: str = "") -> tuple[str, str]:
    """The runbook's plan hash, and whether its description names a memory address, as a
    new interpreter computes them."""
    script = HASH.format(module=module, kwargs=kwargs)
    out = subprocess.run(
        [sys.executable, "-c", script, str(root)], capture_output=True, text=True, check=True
    )
    digest, has_address = out.stdout.split()
    return digest, has_address


def sample(name: str, root: Path) -> Path:
    if name == "json_state":
        make_json_state(root / "data", executions=40, seed=3)
        return root / "data"
    if name == "dhash":
        make_sample_library(root, count=6, seed=3)
        return root
    if name == "merge":
        make_merge(root, videos=200, seed=3)
        return root
    make_domains(root, documents=40, seed=3)
    return root


@pytest.mark.parametrize(
    ("module", "kwargs"),
    [("json_state", ""), ("dhash", ""), ("domains", DOMAINS_KW), ("merge", MERGE_KW)],
)
def test_recipe_plan_hash_is_the_same_in_every_process(
    module: str, kwargs: str, tmp_path: Path
) -> None:
    root = sample(module, tmp_path)
    first = plan_hash(module, root, kwargs)
    second = plan_hash(module, root, kwargs)
    assert first[1] == "False", "a step's description names a memory address"
    assert len(first[0]) == 64
    assert first == second
