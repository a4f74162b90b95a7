"""Recipe A: the domain-categorization backfill and its push to PeerTube.

From shared/seeds/000 (the hand-written runbook) and 001 (its blast-radius table). What
the hand-written version did and what this does instead:

- Its rollback of a bad backfill was ``UPDATE documents SET recon_domain = NULL`` for every
  row, which also wiped assignments that did not come from the run; here rollback restores
  exactly the rows this run changed, and leaves rows someone edited since (reported).
- Its push rollback set every category >= 100 to NULL, losing PeerTube's own categories
  and anything set before; here each video's prior category is recorded and put back.
- Its destructive step deleted concept directories and relied on an off-site rsync hours
  old; here they go to the run's quarantine (a rename) and come back byte-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...checks import ColumnsExist, IndexExists, PlanDistribution, Sample, SchemaSuperset
from ...errors import ResourceError
from ...model import BlastRadius
from ...ops.backfill import Backfill
from ...ops.sql import AddColumns, CreateIndex
from ...resources import Directory, SQLite
from ...runbook import Gate, Runbook, Step
from .logic import COLUMNS, Catalogue, pass1, pass2

NAME = "domains"
SUMMARY = "RECON domain categorization: schema, backfill, tiebreaker, PeerTube push, reprocess"
NEW_COLUMNS = {
    "recon_domain": "TEXT",
    "recon_domain_status": "TEXT",
    "recon_domain_assigned_at": "TEXT",
    "peertube_category_pushed_at": "TEXT",
}
INDEX = "idx_documents_recon_domain_status"
#: the investigation's benchmarks the dry run is compared with (seeds/README.md A)
BENCHMARK = {"assigned": 94.8, "tied_pass_1": 5.2}
REPROCESS_BENCHMARK = {"needs_reprocess": 19.5}


def backfill_steps(
    root: Path, *, assigned_at: str, tolerance_pp: float = 5.0, batch_size: int = 1000
) -> tuple[SQLite, Directory, list[Step]]:
    """Schema change, pass 1 and the tiebreaker: the part of the recipe on recon.db."""
    recon = SQLite("recon", root / "recon.db")
    concepts = Directory("concepts", root / "concepts", backup_when_read=False)
    if not (root / "recon.db").exists():
        raise ResourceError(
            f"recon.db not found in {root}", hint="point the runbook at RECON's data directory"
        )
    schema = AddColumns(
        "schema change",
        recon,
        table="documents",
        columns=NEW_COLUMNS,
        blast=BlastRadius(
            changes="4 new nullable columns in recon.db documents",
            worst_case="an ALTER fails: the transaction leaves no column behind",
            detection="the schema gate's column and index checks",
        ),
    )
    index = CreateIndex(
        "status index",
        recon,
        index=INDEX,
        table="documents",
        columns=["recon_domain_status"],
        gates=[
            Gate(
                "schema verified",
                checks=[
                    ColumnsExist(recon, "documents", list(NEW_COLUMNS)),
                    IndexExists(recon, INDEX),
                    SchemaSuperset(recon),
                ],
            )
        ],
        blast=BlastRadius(
            changes=f"index {INDEX} on documents",
            worst_case="index build fails: nothing created",
            detection="the schema gate",
        ),
    )
    p1 = Backfill(
        "backfill pass 1",
        recon,
        table="documents",
        key="hash",
        columns=list(COLUMNS),
        compute=pass1(root / "concepts", assigned_at=assigned_at),
        reads=[concepts],
        batch_size=batch_size,
        gates=[
            Gate(
                "dry run matches the benchmarks",
                at="plan",
                checks=[
                    PlanDistribution(
                        "recon_domain_status",
                        BENCHMARK,
                        tolerance_pp=tolerance_pp,
                        among=list(BENCHMARK),
                        name="assigned vs tied",
                    ),
                    PlanDistribution(
                        "recon_domain_status",
                        REPROCESS_BENCHMARK,
                        tolerance_pp=tolerance_pp,
                        name="needs_reprocess share",
                    ),
                ],
                instructions="Halt and investigate any deviation beyond the tolerance.",
            ),
            Gate(
                "spot check 20 assignments",
                approval=True,
                checks=[
                    Sample(
                        recon,
                        "SELECT hash, filename, recon_domain FROM documents "
                        "WHERE recon_domain_status = 'assigned' ORDER BY hash",
                        20,
                        instructions="open concepts/<hash>/ for a few; is the domain plausible?",
                    )
                ],
            ),
        ],
        blast=BlastRadius(
            changes="recon_domain, recon_domain_status, recon_domain_assigned_at on ~22K rows",
            worst_case="wrong domain assignments",
            detection="the dry-run distribution gate; the 20-document spot check",
        ),
    )
    p2 = Backfill(
        "tiebreaker",
        recon,
        table="documents",
        key="hash",
        columns=list(COLUMNS),
        compute=pass2(
            root / "concepts", Catalogue.sqlite(root / "recon.db"), assigned_at=assigned_at
        ),
        where="recon_domain_status = 'tied_pass_1'",
        reads=[concepts],
        batch_size=batch_size,
        gates=[
            Gate(
                "spot check 5 tie resolutions",
                approval=True,
                checks=[
                    Sample(
                        recon,
                        "SELECT hash, filename, recon_domain, recon_domain_status FROM documents "
                        "WHERE recon_domain_status = 'tied_pass_2' ORDER BY hash",
                        5,
                        instructions="is the resolved domain plausible for the channel's other videos?",
                    )
                ],
            )
        ],
        blast=BlastRadius(
            changes="~1,000 rows: tied_pass_1 to tied_pass_2 / tied_manual / assigned",
            worst_case="wrong tiebreaker resolutions",
            detection="the 5-item spot check; the status breakdown",
        ),
    )
    return recon, concepts, [schema, index, p1, p2]


def build(
    root: str | Path,
    *,
    assigned_at: str = "2026-01-01T00:00:00+00:00",
    tolerance_pp: float = 5.0,
    **kw: Any,
) -> Runbook:
    """The recipe's runbook on RECON's data directory ``root`` (recon.db, concepts/)."""
    root = Path(root)
    _, _, steps = backfill_steps(root, assigned_at=assigned_at, tolerance_pp=tolerance_pp)
    return Runbook(
        NAME,
        steps=steps,
        description=SUMMARY,
        prerequisites=[
            "no enrichment or embedding workers running on RECON",
            "the PeerTube plugin with categories 100..117 installed",
        ],
    )
