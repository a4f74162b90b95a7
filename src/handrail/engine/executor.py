"""The run state machine: plan, run (and resume), gates, rollback.

A run goes: validate resources -> take the lease -> snapshot and verify every resource a
changing step writes -> record check baselines -> for each step: plan, plan gates, apply
in stages and batches (each batch recorded), verify, stage and done gates. Every
transition is journalled before the next action, so a crash at any instant leaves a
journal from which ``run`` resumes and ``rollback`` undoes.

Exactly-once batches: a step whose target is transactional commits each batch together
with a ledger record inside the target (``Step.exactly_once``). On resume, batches the
ledger knows are marked done without re-applying. Other steps are idempotent: re-applying
a committed batch changes nothing (see each step's docstring).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    BackupError,
    CheckFailed,
    CredentialsRefused,
    HandrailError,
    PolicyError,
    RollbackConflict,
    StepFailed,
)
from ..model import RESUMABLE, CheckResult, Outcome, Plan, RunStatus, StepStatus, Tier
from ..resources.base import Fingerprint, Resource, verify_backup
from ..runbook import Check, Gate, Runbook, Step
from .context import StepContext
from .diskfull import disk_full, is_disk_full
from .fencing import holding
from .journal import Heartbeat, Journal, Lease, whoami
from .preflight import DEFAULT_LIMIT, PreflightReport, preflight, validate_steps
from .restore import RestoreResult, backup_objects, restore_backups


class Observer:
    """Receives what happens during a run. The CLI draws it; the library never prints."""

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        """Something happened (a step started, a backup verified, a gate passed...)."""

    def progress(self, step: str, done: int, total: int) -> None:
        """Items done out of total for a batched step."""

    def gate(self, key: str, gate: Gate, results: list[CheckResult], needs_human: bool) -> None:
        """A gate was evaluated."""

    def ask(self, key: str, gate: Gate, results: list[CheckResult]) -> bool | None:
        """Ask a human now: True approves, False rejects, None leaves the run paused."""
        return None


@dataclass
class RunOptions:
    """How to run: who approves what, and which dangerous things are allowed."""

    auto_approve: bool = False  # approve gates that need a human (--yes); fails still stop
    allow_destructive: bool = False  # policy 4
    take_over: bool = False  # take a stale lease (policy 5)
    new_run: bool = False  # start a new run even if the last one can resume
    clock: str | None = None  # the run's logical time; default its start (see StepContext.clock)
    lease_ttl: float = 60.0
    #: prove every step can run before a new run's first change (see handrail.engine.preflight)
    preflight: bool = True
    preflight_limit: int = DEFAULT_LIMIT
    observer: Observer = field(default_factory=Observer)


@dataclass
class RunResult:
    """How a run (or a rollback) ended."""

    run_id: str
    status: RunStatus
    message: str = ""
    paused_gate: str | None = None
    conflicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: a rollback that stopped: at which step, and whether before it (blocked: its undo
    #: would remove others' data) or after it (``conflicts`` were left alone)
    stopped_at: str | None = None
    blocked: bool = False
    #: the class of the error that failed the run ("" when none did)
    error_type: str = ""
    preflight: PreflightReport | None = None

    @property
    def exit_code(self) -> int:
        if self.status is RunStatus.PAUSED:
            return 3
        done = (RunStatus.COMPLETED, RunStatus.ROLLED_BACK, RunStatus.ROLLED_BACK_TO)
        if self.status in done and not self.conflicts:
            return 0
        return 1


@dataclass
class _Undone:
    """How far a rollback got: where it stopped and why, and what it left in place."""

    stopped_at: str | None = None
    blocked: list[str] = field(default_factory=list)  # what undoing stopped_at would remove
    conflicts: list[str] = field(default_factory=list)  # what stopped_at's undo left alone
    kept: list[str] = field(default_factory=list)  # --keep-theirs: what stayed in place


class _Paused(Exception):
    def __init__(self, gate_key: str) -> None:
        super().__init__(gate_key)
        self.gate_key = gate_key


class _Rejected(Exception):
    def __init__(self, gate_key: str, who: str) -> None:
        super().__init__(gate_key)
        self.gate_key, self.who = gate_key, who


def gate_key(step: Step, gate: Gate, stage: int | None = None) -> str:
    """The journal's name for one evaluation point of a gate."""
    key = f"{step.name}/{gate.name}"
    return f"{key}#stage{stage}" if stage is not None else key


def check_key(step: Step, gate: Gate, check: Check) -> str:
    return f"{step.name}/{gate.name}/{check.name}"


class Executor:
    """Runs one runbook against one journal.

    ``runbook_key`` identifies the runbook across runs (its absolute path); ``bindings``
    replaces resources by other ones of the same name (clones, in a rehearsal).
    """

    def __init__(
        self,
        runbook: Runbook,
        journal: Journal,
        *,
        runbook_key: str,
        options: RunOptions | None = None,
        bindings: dict[str, Resource] | None = None,
        mode: str = "run",
    ) -> None:
        self.runbook = runbook
        self.journal = journal
        self.key = runbook_key
        self.options = options or RunOptions()
        self.bindings = bindings or {}
        self.mode = mode
        self.plan_hash = runbook.plan_hash()
        self.obs = self.options.observer
        self.warnings: list[str] = []

    # -- helpers ------------------------------------------------------------------------
    def resource(self, r: Resource) -> Resource:
        return self.bindings.get(r.name, r)

    def _ctx(self, run_id: str, step: Step, *, dry_run: bool = False) -> StepContext:
        row = None if dry_run else self.journal.step(run_id, step.name)
        backups = {} if dry_run else backup_objects(self.journal, run_id)
        plan = Plan.from_json(row.plan) if row is not None and row.plan else None
        run = None if dry_run else self.journal.run(run_id)
        return StepContext(
            clock=run.clock if run is not None else "",
            run_id=run_id,
            step=step.name,
            journal=None if dry_run else self.journal,
            bindings=self.bindings,
            backups=backups,
            work_dir=self.journal.run_dir(run_id),
            dry_run=dry_run,
            state=row.state if row is not None else None,
            plan=plan,
        )

    def _event(
        self, run_id: str | None, kind: str, message: str, step: str | None = None, **data: Any
    ) -> None:
        self.journal.event(run_id, kind, message, step=step, data=data)
        self.obs.event(kind, message, data)

    def validate_resources(self) -> None:
        """Every resource readable and not corrupt: raise before anything is changed."""
        for r in self.runbook.resources:
            self.resource(r).validate()

    def check_writable(self) -> None:
        """Everything a changing step writes can be written: raise before the first change."""
        check_writable(self.runbook, self.bindings)

    # -- plan ---------------------------------------------------------------------------
    def plan(self) -> list[tuple[Step, Plan]]:
        """Every step's dry run against the current state. Writes nothing anywhere."""
        return plan_runbook(self.runbook, self.bindings)

    # -- run ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Start a run, or resume the last one if it can be resumed."""
        self.validate_resources()
        self.check_writable()
        self._check_policy()
        lease = self.journal.acquire_lease(
            self.key, ttl=self.options.lease_ttl, take_over=self.options.take_over
        )
        try:
            fence = holding(self.journal.fence(lease))  # targets refuse a stale holder
            with Heartbeat(self.journal, lease, self.options.lease_ttl), fence:
                return self._run_locked(lease)
        finally:
            self.journal.release_lease(lease)

    def _preflight(self) -> None:
        """Before a new run's first change: every step validated, and the runbook run
        forward on clones (handrail.engine.preflight). Raises PreflightFailed (exit 2)."""
        if not self.options.preflight or self.mode != "run":
            return
        self.obs.event("preflight", "preflight: proving every step can run before any change")
        report = preflight(
            self.runbook,
            forward=self._forward_on_clones,
            bindings=self.bindings,
            scratch_parent=self.journal.state_dir,
            limit=self.options.preflight_limit,
            clock=self.options.clock,
        )
        self.preflight_report = report
        self.obs.event("preflight-done", report.summary(), report.to_json())
        for note in report.notes:
            self.warnings.append(f"preflight: {note}")

    def _forward_on_clones(
        self, clones: dict[str, Resource], state: Path, clock: str | None
    ) -> RunResult:
        """The preflight's forward run: this runbook on ``clones``, with a throwaway
        journal in ``state``, every gate answered, nothing asked of a person."""
        journal = Journal(state)
        try:
            ex = Executor(
                self.runbook,
                journal,
                runbook_key="preflight",
                options=RunOptions(
                    auto_approve=True, allow_destructive=True, preflight=False, clock=clock
                ),
                bindings=clones,
                mode="preflight",
            )
            return ex.run()
        finally:
            journal.close()

    #: what the preflight of this run found and cost (None: it did not run)
    preflight_report: PreflightReport | None = None

    def _check_policy(self) -> None:
        for step in self.runbook.steps:
            if step.tier is Tier.DESTRUCTIVE and not self.options.allow_destructive:
                raise PolicyError(
                    f"step {step.name!r} is destructive ({step.blast.changes})",
                    hint="read the plan, then run again with --allow-destructive",
                )
            if step.tier is Tier.EXTERNAL and (step.stages is None or not step.gates_at("stage")):
                raise PolicyError(
                    f"step {step.name!r} writes to {', '.join(r.name for r in step.writes)} "
                    "that other people see; it must run in stages with a gate after each",
                    hint="give it stages=[100, 1000, None] and a Gate(at='stage')",
                )

    def _run_locked(self, lease: Lease) -> RunResult:
        last = None if self.options.new_run else self.journal.latest_run(self.key, mode=self.mode)
        if last is not None and last.status in RESUMABLE:
            run_id = last.id
            if last.plan_hash != self.plan_hash:
                self._event(
                    run_id,
                    "plan-changed",
                    "the runbook changed since this run started; approvals given "
                    "before the change no longer count",
                    old=last.plan_hash,
                    new=self.plan_hash,
                )
                self.journal.set_plan_hash(run_id, self.plan_hash)
            self._event(run_id, "resume", f"resuming run {run_id} ({last.status.value})")
        elif last is not None and last.status is RunStatus.ROLLING_BACK:
            raise PolicyError(
                f"run {last.id} is being rolled back, or its rollback stopped part way",
                hint=f"finish it with `handrail rollback {last.id}` (--force overwrites "
                "conflicting values, --keep-theirs leaves them) before running again",
            )
        elif last is not None and last.status is RunStatus.REJECTED and not self.options.new_run:
            raise PolicyError(
                f"run {last.id} was rejected at gate {last.paused_gate}",
                hint=f"roll it back with `handrail rollback {last.id}`, or start over with --new",
            )
        else:
            self._preflight()
            run_id = self.journal.create_run(
                self.key,
                self.runbook.name,
                self.plan_hash,
                self.runbook.describe(),
                mode=self.mode,
                clock=self.options.clock,
            )
            self._event(
                run_id,
                "start",
                f"run {run_id} of {self.runbook.name} started",
                by=whoami(),
                plan_hash=self.plan_hash,
            )
        self.journal.lease_run(lease, run_id)
        try:
            self._snapshot_all(run_id)
            self.journal.set_run_status(run_id, RunStatus.RUNNING)
            for step in self.runbook.steps:
                self._run_step(run_id, step)
        except _Paused as p:
            self.journal.set_run_status(run_id, RunStatus.PAUSED, paused_gate=p.gate_key)
            self._event(run_id, "paused", f"paused at gate {p.gate_key}", gate=p.gate_key)
            return RunResult(
                run_id,
                RunStatus.PAUSED,
                f"paused at gate {p.gate_key}",
                paused_gate=p.gate_key,
                warnings=self.warnings,
            )
        except _Rejected as r:
            self.journal.set_run_status(run_id, RunStatus.REJECTED, paused_gate=r.gate_key)
            self._event(run_id, "rejected", f"gate {r.gate_key} was rejected by {r.who}")
            return RunResult(
                run_id,
                RunStatus.REJECTED,
                f"gate {r.gate_key} was rejected by {r.who}",
                paused_gate=r.gate_key,
                warnings=self.warnings,
            )
        except KeyboardInterrupt:
            self.journal.set_run_status(run_id, RunStatus.INTERRUPTED)
            self._event(run_id, "interrupted", "interrupted; run the same command to resume")
            raise
        except HandrailError as exc:
            self.journal.set_run_status(run_id, RunStatus.FAILED)
            self._event(run_id, "failed", str(exc))
            if isinstance(exc, CredentialsRefused):
                raise  # bad input (exit 2); the run stays resumable once the token is right
            return RunResult(
                run_id,
                RunStatus.FAILED,
                str(exc),
                error_type=type(exc).__name__,
                warnings=self.warnings,
            )
        self.journal.set_run_status(run_id, RunStatus.COMPLETED)
        self._event(run_id, "completed", f"run {run_id} completed")
        return RunResult(run_id, RunStatus.COMPLETED, "completed", warnings=self.warnings)

    # -- policy 1: verified backups before any change ---------------------------------------
    def _snapshot_all(self, run_id: str) -> None:
        done = {b["resource"] for b in self.journal.backups(run_id)}
        dest = self.journal.backups_dir / run_id
        for original in self.runbook.snapshotted:
            if original.name in done:
                continue
            r = self.resource(original)
            self._event(run_id, "backup", f"snapshot of {r.describe()}", resource=r.name)
            try:
                backup = r.snapshot(dest)
                if self.mode == "preflight":
                    # A scratch clone's backup proves nothing about the user's data; the
                    # preflight keeps it only for the steps and checks that read it.
                    evidence = {"restore_test": "not verified (a preflight clone)"}
                else:
                    evidence = verify_backup(r, backup, dest / f".verify-{r.name}")
            except HandrailError:
                raise
            except Exception as exc:
                if is_disk_full(exc, dest):
                    raise disk_full(dest, f"the backup of {r.name}", exc) from exc
                raise BackupError(f"backup of {r.describe()} failed: {exc!r}") from exc
            self.journal.record_backup(run_id, backup, evidence)
            self._event(
                run_id,
                "backup-verified",
                f"backup of {r.name} verified ({evidence['restore_test']})",
                resource=r.name,
                sha256=backup.sha256,
                size=backup.size,
            )
        if not self.journal.baselines(run_id):
            self._baselines(run_id)

    def _baselines(self, run_id: str) -> None:
        values: dict[str, Any] = {}
        for step in self.runbook.steps:
            ctx = self._ctx(run_id, step)
            for gate in step.gates:
                for check in gate.checks:
                    values[check_key(step, gate, check)] = check.baseline(ctx)
        # One record for all of them, so a crash never leaves half the baselines.
        with self.journal.transaction():
            for key, value in values.items():
                self.journal.set_baseline(run_id, key, value)
            self.journal.set_baseline(run_id, "_taken", True)

    # -- one step -----------------------------------------------------------------------
    def _run_step(self, run_id: str, step: Step) -> None:
        row = self.journal.step(run_id, step.name)
        if row.status is StepStatus.DONE:
            return
        if row.status is StepStatus.ROLLED_BACK:
            # Undone by `rollback --to` (or a gate's on_fail): apply it again, from scratch.
            self.journal.reset_step(run_id, step.name)
            self._event(
                run_id,
                "step-reapply",
                f"step {step.name}: applying again after its rollback",
                step=step.name,
            )
            row = self.journal.step(run_id, step.name)
        ctx = self._ctx(run_id, step)
        if row.plan is None:
            self._event(run_id, "step", f"step {step.name}: planning", step=step.name)
            plan = self._guard(step, "plan", lambda: step.plan(ctx))
            self.journal.update_step(run_id, step.name, plan=plan.to_json())
            ctx.plan = plan
        for gate in step.gates_at("plan"):
            self._gate(run_id, step, gate, ctx)
        if row.status in (StepStatus.PENDING, StepStatus.APPLYING, StepStatus.FAILED):
            try:
                self._apply(run_id, step, ctx)
            finally:
                ctx.close()
            row = self.journal.step(run_id, step.name)
        if row.status is StepStatus.APPLIED:
            results = self._guard(step, "verify", lambda: step.verify(ctx))
            failed = [r for r in results if r.outcome is Outcome.FAIL]
            for r in results:
                self.journal.record_check(run_id, step.name, f"{step.name}/verify", r.to_json())
            if failed:
                self.journal.update_step(
                    run_id,
                    step.name,
                    status=StepStatus.FAILED,
                    error="; ".join(f"{r.name}: {r.message}" for r in failed),
                )
                raise CheckFailed(
                    f"step {step.name!r} did not verify: "
                    + "; ".join(f"{r.name}: {r.message}" for r in failed)
                )
        for gate in step.gates_at("done"):
            self._gate(run_id, step, gate, ctx)
        self.journal.update_step(
            run_id, step.name, status=StepStatus.DONE, finished_at=_now(), error=None
        )
        self._event(run_id, "step-done", f"step {step.name}: done", step=step.name)

    def _guard(self, step: Step, phase: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (HandrailError, KeyboardInterrupt):
            raise
        except Exception as exc:
            self._raise_disk_full(step, f"step {step.name!r} ({phase})", exc)
            raise StepFailed(f"step {step.name!r} failed in {phase}: {exc!r}") from exc

    def _raise_disk_full(self, step: Step, what: str, exc: Exception) -> None:
        """A step's error that is a full disk under what it writes: say so (DiskFull)."""
        where = _data_path(step, self)
        if where is not None and is_disk_full(exc, where):
            raise disk_full(where, what, exc) from exc

    def _apply(self, run_id: str, step: Step, ctx: StepContext) -> None:
        row = self.journal.step(run_id, step.name)
        if row.pre_fingerprints is None:
            pre = {r.name: self.resource(r).fingerprint().to_json() for r in step.writes}
            self.journal.update_step(
                run_id,
                step.name,
                status=StepStatus.APPLYING,
                started_at=_now(),
                pre_fingerprints=pre,
            )
        elif row.status is not StepStatus.APPLYING:
            self.journal.update_step(run_id, step.name, status=StepStatus.APPLYING)
        if row.items_total is None:
            items = self._guard(step, "items", lambda: step.items(ctx))
            self.journal.add_batches(run_id, step.name, self._partition(step, items))
        batches = self.journal.batches(run_id, step.name)
        total = sum(len(items) for _, _, items, _ in batches)
        committed = self._guard(step, "ledger", lambda: step.committed_batches(ctx))
        stages = sorted({stage for _, stage, _, _ in batches})
        done_items = sum(len(items) for _, _, items, s in batches if s == "done")
        started = time.monotonic()
        self.obs.progress(step.name, done_items, total)  # the bar's rate counts from here
        for stage in stages:
            ctx.stage = stage
            for b, s, items, status in batches:
                if s != stage or status == "done":
                    continue
                if b in committed:
                    # The target committed it; the crash came before the journal heard.
                    self.journal.batch_done(run_id, step.name, b, len(items))
                    self._event(
                        run_id,
                        "batch-recovered",
                        f"batch {b} had committed before a crash; not applied again",
                        step=step.name,
                        batch=b,
                    )
                else:
                    try:
                        changed = step.apply_batch(ctx, b, items)
                    except (HandrailError, KeyboardInterrupt):
                        raise
                    except Exception as exc:
                        self.journal.update_step(run_id, step.name, error=repr(exc))
                        self._raise_disk_full(step, f"batch {b} of step {step.name!r}", exc)
                        raise StepFailed(
                            f"step {step.name!r} failed in batch {b}: {exc!r}",
                            hint=f"fix the cause and run again to resume, or roll back "
                            f"with `handrail rollback {run_id}`",
                        ) from exc
                    ctx.flush_rejects()
                    self.journal.batch_done(run_id, step.name, b, changed)
                done_items += len(items)
                self.obs.progress(step.name, done_items, total)
            if step.stages is not None:
                for gate in step.gates_at("stage"):
                    self._gate(run_id, step, gate, ctx, stage=stage + 1)
        elapsed = time.monotonic() - started
        self._guard(step, "record", lambda: step.record_owned(ctx))
        self.journal.update_step(
            run_id,
            step.name,
            status=StepStatus.APPLIED,
            applied_at=_now(),
            apply_seconds=(row.apply_seconds or 0.0) + elapsed,
        )

    def _partition(self, step: Step, items: list[Any] | None) -> list[tuple[int, int, list[Any]]]:
        if items is None:
            return [(0, 0, [])]
        stages = step.stages.split(len(items)) if step.stages else [(0, len(items))]
        out: list[tuple[int, int, list[Any]]] = []
        n = 0
        for stage, (start, end) in enumerate(stages):
            for lo in range(start, end, step.batch_size):
                out.append((n, stage, items[lo : min(end, lo + step.batch_size)]))
                n += 1
        return out

    # -- gates --------------------------------------------------------------------------
    def _gate(
        self, run_id: str, step: Step, gate: Gate, ctx: StepContext, *, stage: int | None = None
    ) -> None:
        key = gate_key(step, gate, stage)
        if key in self.journal.passed_gates(run_id):
            return
        baselines = self.journal.baselines(run_id)
        results = []
        for check in gate.checks:
            try:
                res = check.evaluate(ctx, baselines.get(check_key(step, gate, check)))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                res = CheckResult(
                    check.name,
                    Outcome.FAIL,
                    {"error": repr(exc)},
                    f"the check itself raised: {exc}",
                )
            results.append(res)
            self.journal.record_check(run_id, step.name, key, res.to_json())
        failed = [r for r in results if r.outcome is Outcome.FAIL]
        needs_human = gate.approval or any(r.outcome is Outcome.INCONCLUSIVE for r in results)
        self.obs.gate(key, gate, results, needs_human and not failed)
        if failed:
            message = f"gate {key} failed: " + "; ".join(
                f"{r.name}: {r.message or 'failed'}" for r in failed
            )
            if gate.on_fail == "rollback":
                blockers = self._blockers(run_id, step)
                if blockers:
                    raise CheckFailed(
                        message + "; the step was not rolled back: its undo would remove data "
                        "that is not this run's: " + "; ".join(blockers[:3])
                    )
                self._event(
                    run_id, "gate-failed", message + " — rolling the step back", step=step.name
                )
                self._rollback_step(run_id, step, force=False)
            raise CheckFailed(message)
        if needs_human:
            decision = self.journal.decision(run_id, key, self.plan_hash)
            if decision is None:
                if self.options.auto_approve:
                    self.journal.approve(
                        run_id,
                        key,
                        "approve",
                        f"{whoami()} (--yes)",
                        self.plan_hash,
                        "auto-approved",
                        automatic=True,
                    )
                    self._event(
                        run_id,
                        "auto-approved",
                        f"gate {key} auto-approved (--yes)",
                        step=step.name,
                        gate=key,
                    )
                    decision = {"decision": "approve", "who": whoami()}
                else:
                    answer = self.obs.ask(key, gate, results)
                    if answer is None:
                        raise _Paused(key)
                    self.journal.approve(
                        run_id,
                        key,
                        "approve" if answer else "reject",
                        whoami(),
                        self.plan_hash,
                        "answered at the prompt",
                    )
                    decision = {"decision": "approve" if answer else "reject", "who": whoami()}
            if decision["decision"] != "approve":
                raise _Rejected(key, str(decision["who"]))
        self.journal.gate_passed(run_id, key)
        self._event(run_id, "gate-passed", f"gate {key} passed", step=step.name, gate=key)

    # -- rollback -------------------------------------------------------------------------
    def rollback(
        self,
        run_id: str,
        *,
        to_step: str | None = None,
        force: bool = False,
        keep_theirs: bool = False,
    ) -> RunResult:
        """Undo the run's applied steps, newest first, verifying each against its
        fingerprint from before it ran. ``to_step``: stop after undoing that step (the run
        stays resumable: ``run`` applies the undone steps again).

        Nothing that is not this run's is destroyed. Before undoing a step the engine asks
        it what its undo would remove that others wrote (:meth:`Step.rollback_blockers`);
        if anything, the rollback stops before that step. A step whose undo left values
        someone changed since (conflicts) stops it after that step. Either way the run
        stays ``rolling_back``, consistent and resumable, and the result lists what
        stopped it. ``force`` rewrites conflicting values with what they held before the
        run, and is refused up front, changing nothing, when finishing would need to
        remove others' data (found by rehearsing the forced rollback on clones).
        ``keep_theirs`` finishes the rollback around what others changed: conflicting
        values stay, and a step whose undo would remove others' data is not undone; the
        run ends rolled back with those items listed (exit 1).
        """
        run = self.journal.run(run_id)
        if run is None:
            raise PolicyError(f"no run {run_id} in {self.journal.path}")
        names = [s.name for s in self.runbook.steps]
        if to_step is not None and to_step not in names:
            raise PolicyError(f"run {run_id} has no step {to_step!r}; steps: {names}")
        if force and keep_theirs:
            raise PolicyError(
                "--force and --keep-theirs ask for opposite things",
                hint="--force rewrites what others changed; --keep-theirs leaves it: pick one",
            )
        todo = self._undo_order(to_step)
        lease = self.journal.acquire_lease(
            self.key, ttl=self.options.lease_ttl, take_over=self.options.take_over, run_id=run_id
        )
        try:
            fence = holding(self.journal.fence(lease))  # targets refuse a stale holder
            with Heartbeat(self.journal, lease, self.options.lease_ttl), fence:
                if force:
                    refusals = self._force_refusals(run_id, todo)
                    if refusals:
                        raise PolicyError(
                            "--force refused, nothing was changed: finishing this rollback "
                            "would remove data that is not this run's:\n  - "
                            + "\n  - ".join(refusals[:20]),
                            hint="move or remove that data yourself and roll back again, or "
                            f"finish around it with `handrail rollback {run_id} --keep-theirs`",
                        )
                self.journal.set_run_status(run_id, RunStatus.ROLLING_BACK)
                self._event(run_id, "rollback", f"rolling back run {run_id}")
                undone = self._undo_steps(run_id, todo, force=force, keep_theirs=keep_theirs)
        finally:
            self.journal.release_lease(lease)
        return self._rollback_result(run_id, to_step, undone)

    def _undo_order(self, to_step: str | None) -> list[Step]:
        """The steps a rollback visits, newest first, down to ``to_step`` included."""
        out: list[Step] = []
        for step in reversed(self.runbook.steps):
            out.append(step)
            if step.name == to_step:
                break
        return out

    def _undo_steps(
        self, run_id: str, todo: list[Step], *, force: bool, keep_theirs: bool
    ) -> _Undone:
        """Undo ``todo`` in order; stop at the first step whose undo is blocked or left
        conflicts (unless ``keep_theirs``)."""
        undone = _Undone()
        for step in todo:
            row = self.journal.step(run_id, step.name)
            if step.tier is Tier.READ_ONLY:
                if row.status is not StepStatus.PENDING:
                    self.journal.update_step(run_id, step.name, status=StepStatus.ROLLED_BACK)
                continue
            if row.status in (StepStatus.PENDING, StepStatus.ROLLED_BACK):
                continue
            if step.name in self._simulated_skip:
                continue
            blockers = self._blockers(run_id, step)
            if blockers:
                self._event(
                    run_id,
                    "rollback-blocked",
                    f"step {step.name}: not undone, its undo would remove data that is not "
                    f"this run's: {'; '.join(blockers[:3])}",
                    step=step.name,
                    blockers=blockers[:100],
                )
                if not keep_theirs:
                    undone.stopped_at, undone.blocked = step.name, blockers
                    return undone
                self._keep_step(run_id, step, blockers)
                undone.kept += [f"{step.name}: {b}" for b in blockers]
                continue
            left = self._rollback_step(run_id, step, force=force)
            if left:
                if not keep_theirs:
                    undone.stopped_at, undone.conflicts = step.name, left
                    return undone
                self._keep_step(run_id, step, left)
                undone.kept += [f"{step.name}: {c}" for c in left]
        return undone

    def _blockers(self, run_id: str, step: Step) -> list[str]:
        ctx = self._ctx(run_id, step)
        try:
            return step.rollback_blockers(ctx)
        except (HandrailError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise StepFailed(
                f"could not check what undoing step {step.name!r} would remove: {exc!r}",
                hint="nothing of this step was undone; fix the cause and roll back again",
            ) from exc
        finally:
            ctx.close()

    def _keep_step(self, run_id: str, step: Step, kept: list[str]) -> None:
        """--keep-theirs: the step counts as rolled back, with what it left in place."""
        self.journal.update_step(
            run_id,
            step.name,
            status=StepStatus.ROLLED_BACK,
            finished_at=_now(),
            error=f"rolled back around {len(kept)} item(s) others changed, kept as they are",
        )
        self.journal.forget_gates(run_id, step.name)
        self._event(
            run_id,
            "rollback-kept",
            f"step {step.name}: left in place what others changed ({len(kept)} item(s))",
            step=step.name,
            kept=kept[:100],
        )

    def _rollback_result(self, run_id: str, to_step: str | None, undone: _Undone) -> RunResult:
        names = [s.name for s in self.runbook.steps]
        if undone.stopped_at is not None:
            status = RunStatus.ROLLING_BACK  # unfinished: consistent, and `rollback` resumes
            what = undone.blocked or undone.conflicts
            if undone.blocked:
                message = (
                    f"rollback stopped before step {undone.stopped_at!r}: undoing it would "
                    f"remove data that is not this run's ({len(what)} item(s)); nothing of "
                    "it was touched"
                )
            else:
                message = (
                    f"rollback stopped after step {undone.stopped_at!r}: {len(what)} item(s) "
                    "changed by someone else since this run wrote them were left alone"
                )
            self.journal.set_run_status(run_id, status)
            self._event(run_id, "rollback-stopped", message, items=what[:100])
            return RunResult(
                run_id,
                status,
                message,
                conflicts=what,
                warnings=self.warnings,
                stopped_at=undone.stopped_at,
                blocked=bool(undone.blocked),
            )
        whole = to_step is None or to_step == names[0]
        status = RunStatus.ROLLED_BACK if whole else RunStatus.ROLLED_BACK_TO
        self.journal.set_run_status(run_id, status)
        message = f"rolled back {'every step' if whole else 'down to ' + repr(to_step)}"
        if undone.kept:
            message += f", {len(undone.kept)} item(s) others changed left as they are"
        self._event(run_id, "rolled-back", message, kept=undone.kept[:100])
        return RunResult(run_id, status, message, conflicts=undone.kept, warnings=self.warnings)

    # -- --force, rehearsed first -----------------------------------------------------------
    #: steps a rehearsal of a forced rollback does not run (they write no database)
    _simulated_skip: frozenset[str] = frozenset()

    def _force_refusals(self, run_id: str, todo: list[Step]) -> list[str]:
        """What a forced rollback would refuse to remove, found before anything changes.

        Steps that write only databases are undone, forced, on clones of those databases
        with a copy of the journal (later steps' undo changes what earlier ones find);
        other steps (files, services) are asked on the live state: their undo rewrites or
        moves aside, and what blocks it does not depend on the databases."""
        pending = (StepStatus.PENDING, StepStatus.ROLLED_BACK)
        applied = [
            s
            for s in todo
            if s.tier > Tier.READ_ONLY and self.journal.step(run_id, s.name).status not in pending
        ]
        in_db = [s for s in applied if all(self.resource(r).transactional for r in s.writes)]
        refusals = [
            f"{s.name}: {b}" for s in applied if s not in in_db for b in self._blockers(run_id, s)
        ]
        if in_db:
            refusals += self._rehearse_forced(run_id, todo, in_db)
        return refusals

    def _rehearse_forced(self, run_id: str, todo: list[Step], in_db: list[Step]) -> list[str]:
        names = {r.name for s in in_db for r in s.writes}
        with tempfile.TemporaryDirectory(prefix="force-", dir=self.journal.state_dir) as tmp:
            copy = self.journal.copy_to(Path(tmp) / "journal")
            clones: dict[str, Resource] = {}
            try:
                for name in sorted(names):
                    original = self.resource(self.runbook_resource(name))
                    clones[name] = original.clone(Path(tmp) / "clones" / name)
                sim = Executor(
                    self.runbook,
                    copy,
                    runbook_key=self.key,
                    bindings={**self.bindings, **clones},
                    mode=self.mode,
                )
                sim._simulated_skip = frozenset(s.name for s in todo if s not in in_db)
                undone = sim._undo_steps(run_id, todo, force=True, keep_theirs=False)
            finally:
                for clone in clones.values():
                    try:
                        clone.discard()
                    except HandrailError:
                        pass
                copy.close()
        return [f"{undone.stopped_at}: {b}" for b in undone.blocked]

    def runbook_resource(self, name: str) -> Resource:
        return next(r for r in self.runbook.resources if r.name == name)

    def _rollback_step(self, run_id: str, step: Step, *, force: bool) -> list[str]:
        row = self.journal.step(run_id, step.name)
        if not step.reversible():
            raise PolicyError(
                f"step {step.name!r} has no inverse",
                hint=f"restore the run's backups instead: `handrail backups restore {run_id}`",
            )
        ctx = self._ctx(run_id, step)
        ctx.state["_force"] = force
        self._event(run_id, "step-rollback", f"step {step.name}: rolling back", step=step.name)
        started = time.monotonic()
        conflicts: list[str] = []
        try:
            step.rollback(ctx)
        except RollbackConflict as exc:
            conflicts = exc.items or [str(exc)]
            self._event(run_id, "rollback-conflict", str(exc), step=step.name)
        except (HandrailError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise StepFailed(f"rollback of step {step.name!r} failed: {exc!r}") from exc
        elapsed = time.monotonic() - started
        # Verify against the fingerprints taken just before the step first ran. A
        # difference the step's own undo did not report means someone else changed the
        # resource meanwhile (their work is kept): reported, not undone.
        pre = row.pre_fingerprints or {}
        diffs: list[str] = []
        for r in step.writes:
            if r.name in pre:
                before = Fingerprint.from_json(pre[r.name])
                now = self.resource(r).fingerprint()
                diffs += [f"{r.name}: {d}" for d in before.diff(now)]
        if diffs:
            self._event(
                run_id,
                "rollback-drift",
                f"step {step.name}: rolled back what it changed, but {'; '.join(diffs[:5])} "
                "differs from before the step (changed by someone else since?)",
                step=step.name,
                parts=diffs,
            )
            self.warnings += [
                f"{d} since step {step.name!r} ran; kept (not this run's change)" for d in diffs
            ]
        if conflicts:
            # Keep the step undoable: a forced rollback can still finish it.
            self.journal.update_step(
                run_id,
                step.name,
                status=StepStatus.FAILED,
                rollback_seconds=elapsed,
                error=f"rollback left {len(conflicts)} conflicting item(s) alone",
            )
        else:
            self.journal.update_step(
                run_id,
                step.name,
                status=StepStatus.ROLLED_BACK,
                rollback_seconds=elapsed,
                finished_at=_now(),
            )
        self.journal.forget_gates(run_id, step.name)
        self._event(
            run_id,
            "step-rolled-back",
            f"step {step.name}: rolled back and verified"
            if not diffs
            else f"step {step.name}: rolled back; {len(conflicts)} conflict(s) left alone",
            step=step.name,
            seconds=round(elapsed, 3),
        )
        return conflicts

    # -- restore from backups (the last resort) ---------------------------------------------
    def restore_backups(self, run_id: str) -> RestoreResult:
        """Put every resource back from this run's verified backups, whole, after keeping
        the current state as an undoable restore run (see :mod:`handrail.engine.restore`)."""
        return restore_backups(
            self.journal,
            self.runbook,
            run_id,
            runbook_key=self.key,
            take_over=self.options.take_over,
            lease_ttl=self.options.lease_ttl,
            resource=self.resource,
            event=self._event,
        )


def check_writable(runbook: Runbook, bindings: dict[str, Resource]) -> None:
    """Ask every resource a changing step writes whether it can be written (read-only
    mounts, immutable files, locked databases are found here, not half way through)."""
    written = {r.name: r for s in runbook.steps if s.tier > Tier.READ_ONLY for r in s.writes}
    for name, r in written.items():
        bindings.get(name, r).check_writable()


def plan_runbook(
    runbook: Runbook, bindings: dict[str, Resource] | None = None
) -> list[tuple[Step, Plan]]:
    """Validate every resource, then each step's dry run. Needs no journal; writes nothing."""
    bindings = bindings or {}
    for r in runbook.resources:
        bindings.get(r.name, r).validate()
    check_writable(runbook, bindings)
    out = []
    written: dict[str, str] = {}  # resource -> the earlier step that changes it
    with tempfile.TemporaryDirectory(prefix="handrail-plan-") as tmp:
        validate_steps(runbook, bindings, Path(tmp))  # what `run`'s preflight checks first
        for step in runbook.steps:
            ctx = StepContext(
                run_id="plan",
                step=step.name,
                journal=None,
                bindings=bindings,
                backups={},
                work_dir=Path(tmp),
                dry_run=True,
            )
            depends = sorted(
                {written[r.name] for r in (*step.reads, *step.writes) if r.name in written}
            )
            try:
                out.append((step, step.plan(ctx)))
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                # Resources were validated above, so with an earlier step changing what
                # this one reads, the error is about state that step will create.
                if not depends:
                    if isinstance(exc, HandrailError):
                        raise
                    raise StepFailed(f"step {step.name!r} failed to plan: {exc!r}") from exc
                # It reads what an earlier step has not changed yet (a column to come):
                # the run plans it again right before applying it, on the real state.
                out.append(
                    (
                        step,
                        Plan(
                            summary="planned when the run reaches it "
                            f"(after {', '.join(depends)}): "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                            details={"deferred": repr(exc), "after": depends},
                        ),
                    )
                )
            if step.tier > Tier.READ_ONLY:
                for r in step.writes:
                    written.setdefault(r.name, step.name)
    return out


def _data_path(step: Step, ex: Executor) -> Path | None:
    """Where the first file a step writes lives (to name its disk when it fills)."""
    for r in step.writes:
        path = getattr(ex.resource(r), "path", None)
        if isinstance(path, Path):
            return path
    return None


def _now() -> str:
    from .journal import now_iso

    return now_iso()
