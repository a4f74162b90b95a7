"""The sample py-captions data directory: deterministic, realistic, honest about its bad records."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from handrail.recipes.json_state.sample import (
    ENV_FILE,
    EXECUTIONS_FILE,
    FILES,
    HEARTBEAT_MANUAL_FILE,
    HEARTBEAT_POLLING_FILE,
    PROGRESS_FILE,
    SETTINGS_FILE,
    STATE_FILE,
    STATE_PATHS,
    Malformed,
    SampleInfo,
    StateForm,
    make_sample,
)

EXECUTION_FIELDS = {
    "title",
    "path",
    "status",
    "kind",
    "started_at",
    "completed_at",
    "success",
    "elapsed_seconds",
    "error",
}


def load(info: SampleInfo, name: str) -> Any:
    return json.loads((info.data_dir / name).read_text(encoding="utf-8"))


def is_timestamp(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# An importer's view of a good record, written independently of the sample maker, so the
# test finds the planted records itself instead of trusting SampleInfo's list.
def bad_executions(data: dict[str, Any]) -> set[str]:
    bad = set()
    for key, rec in data["executions"].items():
        ok = (
            isinstance(rec, dict)
            and set(rec) == EXECUTION_FIELDS
            and is_timestamp(rec["started_at"])
            and (rec["completed_at"] is None or is_timestamp(rec["completed_at"]))
            and (rec["elapsed_seconds"] is None or is_number(rec["elapsed_seconds"]))
        )
        if not ok:
            bad.add(key)
    return bad


def bad_progress(data: dict[str, Any]) -> set[str]:
    return {
        key
        for key, rec in data.items()
        if not (isinstance(rec, dict) and is_number(rec.get("percent")))
    }


def bad_queue(queue: Any) -> set[str]:
    if isinstance(queue, list):
        return {f"[{i}]" for i, p in enumerate(queue) if not isinstance(p, str)}
    return {
        path
        for path, opts in queue.items()
        if not (
            isinstance(opts, dict)
            and isinstance(opts.get("skip_caption_generation"), bool)
            and opts.get("log_verbosity") in ("NORMAL", "VERBOSE", "MINIMAL")
        )
    }


def found_bad(info: SampleInfo) -> set[tuple[str, str]]:
    state = load(info, STATE_FILE)
    return (
        {(EXECUTIONS_FILE, k) for k in bad_executions(load(info, EXECUTIONS_FILE))}
        | {(PROGRESS_FILE, k) for k in bad_progress(load(info, PROGRESS_FILE))}
        | {(STATE_FILE, k) for k in bad_queue(state[info.queue_key])}
    )


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    return make_sample(tmp_path_factory.mktemp("sample") / "data")


# -- determinism ---------------------------------------------------------------------------


def read_all(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}


@pytest.mark.parametrize("state_form", ["list", "dict", "legacy"])
def test_same_seed_gives_byte_identical_files(tmp_path: Path, state_form: StateForm) -> None:
    a = make_sample(tmp_path / "a", executions=800, seed=7, state_form=state_form)
    b = make_sample(tmp_path / "b", executions=800, seed=7, state_form=state_form)
    assert read_all(a.data_dir) == read_all(b.data_dir)
    assert set(read_all(a.data_dir)) == set(FILES)
    assert a.malformed == b.malformed
    assert a.counts == b.counts


def test_different_seed_gives_different_files(tmp_path: Path) -> None:
    a = read_all(make_sample(tmp_path / "a", executions=300, seed=1).data_dir)
    b = read_all(make_sample(tmp_path / "b", executions=300, seed=2).data_dir)
    for name in (SETTINGS_FILE, EXECUTIONS_FILE, STATE_FILE, PROGRESS_FILE):
        assert a[name] != b[name], name


# -- settings and .env ---------------------------------------------------------------------


def test_settings_hold_every_value_type(sample: SampleInfo) -> None:
    on_disk = load(sample, SETTINGS_FILE)
    assert on_disk == dict(sample.settings)
    types = {type(v) for v in on_disk.values()}
    assert {bool, int, float, str, list, dict, type(None)} <= types
    assert 20 <= len(on_disk) <= 30
    # values an importer must not flatten into the wrong type
    assert on_disk["min_free_space_gb"] == 25.0
    assert isinstance(on_disk["min_free_space_gb"], float)
    assert on_disk["extra_ffmpeg_args"] == ""
    assert any(isinstance(v, str) and not v.isascii() for v in on_disk.values())


def test_env_has_defaults_comments_blanks_and_quotes(sample: SampleInfo) -> None:
    lines = (sample.data_dir / ENV_FILE).read_text(encoding="utf-8").splitlines()
    assert any(line.startswith("#") for line in lines)
    assert "" in lines
    assert any('="' in line for line in lines)
    assert any("='" in line for line in lines)
    assignments = [line for line in lines if line and not line.startswith("#")]
    assert len(assignments) == len(sample.env) == sample.counts[ENV_FILE].records
    assert sample.env["CAPTION_COMMAND"] == "whisper --model medium --output_format srt {path}"
    assert sample.env["X264_OPTS"] == "preset=veryfast:tune=film"  # '=' inside the value
    overlap = [k for k in sample.env if k.lower() in sample.settings]
    assert overlap
    assert sample.env_only
    assert set(overlap).isdisjoint(sample.env_only)


def test_without_env_no_env_file(tmp_path: Path) -> None:
    info = make_sample(tmp_path / "data", executions=50, with_env=False)
    assert not (info.data_dir / ENV_FILE).exists()
    assert ENV_FILE not in info.counts
    assert info.env == {}
    assert info.env_only == ()


# -- executions, state, progress, heartbeats -----------------------------------------------


def test_executions_look_like_the_apps(sample: SampleInfo) -> None:
    data = load(sample, EXECUTIONS_FILE)
    assert set(data) == {"executions", "execution_counter"}
    assert data["execution_counter"] == sample.execution_counter >= len(data["executions"])
    planted = {m.key for m in sample.malformed_in(EXECUTIONS_FILE)}
    good = {k: v for k, v in data["executions"].items() if k not in planted}
    assert {r["status"] for r in good.values()} == {
        "completed",
        "failed",
        "running",
        "cancelled",
        "pending",
    }
    assert {r["kind"] for r in good.values()} == {"polling", "manual", "reprocess"}
    for job_id, rec in good.items():
        prefix, _, rest = job_id.partition("::")
        assert prefix == rec["kind"]
        if prefix == "polling":
            assert rest.isdigit()
        else:
            assert rest == rec["path"]
        assert rec["path"].startswith("/tank/recordings/")
        if rec["status"] in ("running", "pending"):
            assert rec["completed_at"] is None
            assert rec["success"] is None
        else:
            assert rec["completed_at"] is not None
        if rec["status"] == "failed":
            assert rec["error"]
            assert rec["success"] is False
    stamps = [r["started_at"] for r in good.values()]
    assert any(s.endswith("Z") for s in stamps)
    assert any(s.endswith("+00:00") for s in stamps)
    assert any(datetime.fromisoformat(s).tzinfo is None for s in stamps)
    titles = [r["title"] for r in good.values()]
    assert any(not t.isascii() for t in titles)
    assert any('"' in t for t in titles)
    assert any("'" in t for t in titles)


@pytest.mark.parametrize(
    ("state_form", "queue_key", "queue_type"),
    [
        ("list", "manual_process_paths", list),
        ("dict", "manual_process_paths", dict),
        ("legacy", "reprocess_paths", list),
    ],
)
def test_state_forms(
    tmp_path: Path, state_form: StateForm, queue_key: str, queue_type: type
) -> None:
    info = make_sample(tmp_path / "data", executions=400, state_form=state_form)
    state = load(info, STATE_FILE)
    assert set(state) == {"last_timestamp", queue_key}
    assert state["last_timestamp"] == info.last_timestamp
    assert is_timestamp(state["last_timestamp"])
    assert isinstance(state[queue_key], queue_type)
    queue: Any = state[queue_key]
    assert len(queue) == STATE_PATHS == info.counts[STATE_FILE].records
    assert info.queue_key == queue_key
    assert info.state_form == state_form
    paths = list(queue)
    assert len({json.dumps(p) for p in paths}) == len(paths)  # no duplicate paths
    if queue_type is dict:
        verbosities = {o["log_verbosity"] for o in queue.values() if isinstance(o, dict)}
        assert verbosities <= {"NORMAL", "VERBOSE", "MINIMAL"}
        assert {o["skip_caption_generation"] for o in queue.values() if isinstance(o, dict)} == {
            True,
            False,
        }


def test_progress_and_heartbeats(sample: SampleInfo) -> None:
    progress = load(sample, PROGRESS_FILE)
    assert len(progress) == sample.counts[PROGRESS_FILE].records == 20
    good = [v for v in progress.values() if isinstance(v, dict) and is_number(v["percent"])]
    for rec in good:
        assert set(rec) == {"process_type", "percent", "message", "details"}
        assert rec["process_type"] in ("whisper", "ffmpeg")
        assert 0 <= rec["percent"] <= 100
        assert isinstance(rec["details"], dict)
    for name in (HEARTBEAT_POLLING_FILE, HEARTBEAT_MANUAL_FILE):
        text = (sample.data_dir / name).read_text(encoding="utf-8")
        assert text.endswith("\n")
        assert text.count("\n") == 1
        assert datetime.fromisoformat(text.strip()).tzinfo is not None


# -- malformed records and counts ----------------------------------------------------------


@pytest.mark.parametrize("state_form", ["list", "dict", "legacy"])
def test_planted_records_are_exactly_the_listed_ones(tmp_path: Path, state_form: StateForm) -> None:
    info = make_sample(tmp_path / "data", executions=3000, seed=3, state_form=state_form)
    listed = {(m.file, m.key) for m in info.malformed}
    assert len(listed) == len(info.malformed)
    assert found_bad(info) == listed
    assert len(info.malformed) >= 5
    assert len(info.malformed_in(EXECUTIONS_FILE)) == 6  # 0.2% of 3000
    assert len(info.malformed_in(PROGRESS_FILE)) == 2
    assert len(info.malformed_in(STATE_FILE)) == 1
    problems = " | ".join(m.problem for m in info.malformed)
    for needle in ("'title'", "not a date", "string, not an object", "'fast'", "'half'", "list"):
        assert needle in problems


def test_malformed_records_show_the_listed_problem(sample: SampleInfo) -> None:
    execs = load(sample, EXECUTIONS_FILE)["executions"]
    progress = load(sample, PROGRESS_FILE)
    queue = load(sample, STATE_FILE)["manual_process_paths"]
    for m in sample.malformed:
        if m.file == EXECUTIONS_FILE:
            rec = execs[m.key]
            if "title" in m.problem:
                assert "title" not in rec
            elif "not a date" in m.problem:
                assert rec["started_at"] == "not a date"
            elif "string" in m.problem:
                assert isinstance(rec, str)
            else:
                assert rec["elapsed_seconds"] == "fast"
        elif m.file == PROGRESS_FILE:
            rec = progress[m.key]
            assert isinstance(rec, list) or rec["percent"] == "half"
        else:
            assert m.file == STATE_FILE
            assert isinstance(queue[m.key], int)


def test_small_samples_still_plant_every_execution_problem(tmp_path: Path) -> None:
    info = make_sample(tmp_path / "data", executions=10)
    assert len(info.malformed_in(EXECUTIONS_FILE)) == 4
    assert len({m.problem for m in info.malformed_in(EXECUTIONS_FILE)}) == 4
    assert found_bad(info) == {(m.file, m.key) for m in info.malformed}


def test_without_malformed_only_the_planted_records_differ(tmp_path: Path) -> None:
    bad = make_sample(tmp_path / "bad", executions=1000, seed=5)
    clean = make_sample(tmp_path / "clean", executions=1000, seed=5, malformed=False)
    assert clean.malformed == ()
    assert found_bad(clean) == set()
    assert all(c.malformed == 0 for c in clean.counts.values())
    assert {n: c.records for n, c in clean.counts.items()} == {
        n: c.records for n, c in bad.counts.items()
    }
    for name in (EXECUTIONS_FILE, PROGRESS_FILE):
        a, b = load(bad, name), load(clean, name)
        if name == EXECUTIONS_FILE:
            a, b = a["executions"], b["executions"]
        assert list(a) == list(b)
        differing = {k for k in a if a[k] != b[k]}
        assert differing == {m.key for m in bad.malformed_in(name)}


def test_counts_match_the_files(sample: SampleInfo) -> None:
    assert set(sample.counts) == set(FILES)
    assert sample.counts[SETTINGS_FILE].records == len(load(sample, SETTINGS_FILE))
    assert sample.counts[EXECUTIONS_FILE].records == 3000
    assert len(load(sample, EXECUTIONS_FILE)["executions"]) == 3000
    assert sample.counts[HEARTBEAT_POLLING_FILE].records == 1
    for name, count in sample.counts.items():
        assert count.malformed == len(sample.malformed_in(name))
        assert count.valid == count.records - count.malformed
    assert sum(c.malformed for c in sample.counts.values()) == len(sample.malformed)
    assert all(isinstance(m, Malformed) for m in sample.malformed)


# -- refusals ------------------------------------------------------------------------------


def test_refuses_to_overwrite_a_data_dir(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{}", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"state\.json"):
        make_sample(tmp_path, executions=10)
    assert (tmp_path / STATE_FILE).read_text(encoding="utf-8") == "{}"
    assert not (tmp_path / EXECUTIONS_FILE).exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"executions": -1}, "executions"),
        ({"state_form": "yaml"}, "state_form"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_sample(tmp_path, **kwargs)
