"""Recipe C end to end on real files and SQLite: the demo, idempotence, rejects, the
reject-share gate, every state form, and a rollback to the exact original fingerprint."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from handrail import RunStatus, SQLite
from handrail.engine.loader import load_runbook
from handrail.recipes.json_state.recipe import DB_FILE, MARKER_FILE, build, infer_value, parse_time
from handrail.recipes.json_state.sample import FILES, SampleInfo, make_sample
from handrail.resources import Directory

from .helpers import cli, run_runbook, write


def sources(data: Path) -> dict[str, bytes]:
    return {name: (data / name).read_bytes() for name in FILES if (data / name).exists()}


def test_demo_end_to_end_and_its_rollback_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("demo", "--dir", "demo")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Plan (dry run: nothing was changed)" in out
    assert "import executions" in out
    assert "auto-approved" in out
    assert "records not imported" in out
    assert "completed" in out
    data = tmp_path / "demo" / "data"
    assert (data / DB_FILE).exists()
    command = re.search(r"undo it exactly: (handrail rollback .+)", out)
    assert command, out
    args = shlex.split(command.group(1))[1:]
    undone = cli(*args)
    assert undone.exit_code == 0, undone.output
    assert not (data / DB_FILE).exists()
    assert not (data / MARKER_FILE).exists()
    # Running the demo again starts from fresh sample data.
    again = cli("demo", "--dir", "demo")
    assert again.exit_code == 0, again.output


def test_demo_refuses_to_delete_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("years of work")
    result = cli("demo", "--dir", tmp_path / "precious")
    assert result.exit_code == 2
    assert (tmp_path / "precious" / "thesis.txt").read_text() == "years of work"


@pytest.fixture
def sample(tmp_path: Path) -> SampleInfo:
    return make_sample(tmp_path / "data", executions=1500, seed=5, state_form="dict")


def test_run_reports_every_planted_record_and_keeps_sources(sample: SampleInfo) -> None:
    data = sample.data_dir
    before = sources(data)
    original = Directory("d", data).fingerprint()
    ex, result = run_runbook(build(data), data.parent / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED
    assert sources(data) == before  # byte-identical originals
    rejects = ex.journal.rejects(result.run_id)
    got = {(r["source"], r["key"]) for r in rejects}
    planted = {(m.file, m.key) for m in sample.malformed}
    assert got == planted
    db = SQLite("db", data / DB_FILE)
    n_exec = sample.counts["executions.json"]
    assert db.query("SELECT count(*) FROM executions")[0][0] == n_exec.valid
    assert db.query("SELECT count(*) FROM manual_queue")[0][0] == sample.counts["state.json"].valid
    assert db.query("SELECT count(*) FROM heartbeats")[0][0] == 2
    # state.json still has its last_timestamp (we never rewrite it)
    assert json.loads((data / "state.json").read_text())["last_timestamp"] == sample.last_timestamp
    marker = json.loads((data / MARKER_FILE).read_text())
    assert marker["database"] == DB_FILE
    ex.rollback(result.run_id)
    assert Directory("d", data).fingerprint().digest == original.digest


def test_second_run_imports_nothing_new(sample: SampleInfo) -> None:
    data = sample.data_dir
    _, first = run_runbook(build(data), data.parent / ".handrail", auto_approve=True)
    db = SQLite("db", data / DB_FILE)
    fp = db.fingerprint().digest
    ex, second = run_runbook(build(data), data.parent / ".handrail", auto_approve=True)
    assert second.status is RunStatus.COMPLETED
    assert second.run_id != first.run_id
    assert db.fingerprint().digest == fp
    for step in ex.journal.steps(second.run_id):
        counts = (step.plan or {}).get("counts", {})
        assert counts.get("insert", 0) == 0, step.name
        assert counts.get("update", 0) == 0, step.name


def test_settings_types_and_env_fallback(sample: SampleInfo) -> None:
    run_runbook(build(sample.data_dir), sample.data_dir.parent / ".handrail", auto_approve=True)
    db = SQLite("db", sample.data_dir / DB_FILE)
    rows = {k: (v, t) for k, v, t in db.query("SELECT key, value, value_type FROM settings")}
    for key, value in sample.settings.items():
        assert rows[key] == infer_value(value), key
    types = {t for _, t in rows.values()}
    assert types == {"bool", "int", "float", "string", "json"}
    for env_key in sample.env_only:
        assert env_key.lower() in rows, env_key
    assert rows["webhook_port"] == ("9000", "int")
    assert rows["server_tz"] == ("America/Los_Angeles", "string")


@pytest.mark.parametrize("form", ["list", "dict", "legacy"])
def test_every_state_form_imports(tmp_path: Path, form: str) -> None:
    info = make_sample(tmp_path / "data", executions=200, seed=9, state_form=form)  # type: ignore[arg-type]
    _, result = run_runbook(
        build(info.data_dir, max_reject_share=0.1),
        info.data_dir.parent / ".handrail",
        auto_approve=True,
    )
    assert result.status is RunStatus.COMPLETED
    db = SQLite("db", info.data_dir / DB_FILE)
    assert db.query("SELECT count(*) FROM manual_queue")[0][0] == info.counts["state.json"].valid
    verbosities = {v for (v,) in db.query("SELECT DISTINCT log_verbosity FROM manual_queue")}
    assert verbosities <= {"NORMAL", "VERBOSE", "MINIMAL"}


def test_gate_fails_when_too_many_records_are_rejected(tmp_path: Path) -> None:
    info = make_sample(tmp_path / "data", executions=1500, seed=5)
    original = Directory("d", info.data_dir).fingerprint().digest
    ex, result = run_runbook(
        build(info.data_dir, max_reject_share=0.001),
        info.data_dir.parent / ".handrail",
        auto_approve=True,
    )
    assert result.status is RunStatus.FAILED
    assert result.exit_code == 1
    assert "reject share" in result.message
    assert not (info.data_dir / MARKER_FILE).exists()  # stopped before the marker
    ex.rollback(result.run_id)
    assert Directory("d", info.data_dir).fingerprint().digest == original


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000000+00:00"),
        ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00.000000+00:00"),
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00.000000+00:00"),
        ("2024-05-01T10:00:00.123456", "2024-05-01T10:00:00.123456+00:00"),
    ],
)
def test_parse_time(text: str, expected: str) -> None:
    assert parse_time(text, "t") == expected


def test_malformed_source_file_is_exit_2_and_changes_nothing(tmp_path: Path) -> None:
    info = make_sample(tmp_path / "data", executions=100, seed=1)
    (info.data_dir / "executions.json").write_text('{"executions": {"a": {"title": "x"},}}')
    rb = write(
        tmp_path / "runbook.py",
        """
        from pathlib import Path
        from handrail.recipes.json_state.recipe import build
        runbook = build(Path(__file__).parent / "data")
    """,
    )
    before = Directory("d", info.data_dir).fingerprint().digest
    result = cli("run", rb, "--yes")
    assert result.exit_code == 2
    assert "executions.json:1:" in result.output
    assert "not valid JSON" in result.output
    assert Directory("d", info.data_dir).fingerprint().digest == before
    assert load_runbook(rb).name == "json-state"
