"""Sample data for the JSON-state recipe: a py-captions data directory, made from a seed.

:func:`make_sample` writes the files the app kept before its SQLite migration::

    settings.json           flat key -> value, every JSON value type
    .env                    KEY=VALUE defaults; ``FOO_BAR`` is the default of setting ``foo_bar``
    executions.json         {"executions": {job_id: {...}}, "execution_counter": N}
    state.json              {"last_timestamp": ..., "manual_process_paths" | "reprocess_paths": ...}
    progress.json           {job_id: {"process_type", "percent", "message", "details"}}
    heartbeat_polling.txt   one ISO timestamp and a newline
    heartbeat_manual.txt    the same

The same arguments give byte-identical files. With ``malformed=True`` a few records are
planted that an honest importer must report; :class:`SampleInfo` lists each one. Planting
replaces records in place, so the record counts and every other record are the same as
with ``malformed=False``.

Example::

    info = make_sample(tmp_path / "data", executions=500, state_form="list")
    assert info.counts["executions.json"].records == 500
    for bad in info.malformed:
        ...  # bad.file, bad.key, bad.problem
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

StateForm = Literal["list", "dict", "legacy"]
STATE_FORMS: tuple[StateForm, ...] = ("list", "dict", "legacy")

SETTINGS_FILE = "settings.json"
ENV_FILE = ".env"
EXECUTIONS_FILE = "executions.json"
STATE_FILE = "state.json"
PROGRESS_FILE = "progress.json"
HEARTBEAT_POLLING_FILE = "heartbeat_polling.txt"
HEARTBEAT_MANUAL_FILE = "heartbeat_manual.txt"
#: every file :func:`make_sample` writes, in the order it writes them
FILES: tuple[str, ...] = (
    SETTINGS_FILE,
    ENV_FILE,
    EXECUTIONS_FILE,
    STATE_FILE,
    PROGRESS_FILE,
    HEARTBEAT_POLLING_FILE,
    HEARTBEAT_MANUAL_FILE,
)

#: share of executions planted malformed (at least one of each of the four kinds)
MALFORMED_EXECUTION_SHARE = 0.002
STATE_PATHS = 40
PROGRESS_ENTRIES = 20
RECORDINGS_ROOT = "/tank/recordings"
LOG_VERBOSITIES = ("NORMAL", "VERBOSE", "MINIMAL")

# The app's clock for the sample: every timestamp lies before this instant plus up to a
# seed-chosen number of days, so files never depend on when the sample was made.
_EPOCH = datetime(2024, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Malformed:
    """One planted record that an importer must report rather than drop or import."""

    file: str  #: file name inside the data directory, e.g. ``"executions.json"``
    key: str  #: job id, queued path, or ``"[i]"`` for the i-th item of a list
    problem: str  #: what is wrong with it, in words


@dataclass(frozen=True)
class FileCount:
    """Records written to one file; ``malformed`` of them are planted bad ones."""

    records: int
    malformed: int = 0

    @property
    def valid(self) -> int:
        return self.records - self.malformed


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`make_sample` wrote, so tests can check an import against it."""

    data_dir: Path
    state_form: StateForm
    #: file name -> records written (settings keys, .env assignments, executions, queued
    #: paths, progress entries, one per heartbeat file) and how many of them are malformed
    counts: Mapping[str, FileCount]
    #: every planted malformed record, in file order then key order of the file
    malformed: tuple[Malformed, ...]
    #: settings.json as Python values (bool, int, float, str, list, dict, None)
    settings: Mapping[str, Any]
    #: .env assignments, surrounding quotes removed, in file order
    env: Mapping[str, str]
    execution_counter: int
    #: ``last_timestamp`` of state.json, which an import must leave in place
    last_timestamp: str
    #: the key holding the queued paths in state.json
    queue_key: str

    @property
    def env_only(self) -> tuple[str, ...]:
        """.env keys with no settings.json counterpart (the import falls back to these)."""
        return tuple(k for k in self.env if k.lower() not in self.settings)

    def malformed_in(self, file: str) -> tuple[Malformed, ...]:
        return tuple(m for m in self.malformed if m.file == file)


def make_sample(
    data_dir: Path,
    *,
    executions: int = 3000,
    seed: int = 0,
    state_form: StateForm = "dict",
    malformed: bool = True,
    with_env: bool = True,
) -> SampleInfo:
    """Write a py-captions data directory into ``data_dir`` and describe it.

    ``data_dir`` is created if missing; :class:`FileExistsError` is raised rather than
    overwrite any of :data:`FILES` already there. ``state_form`` picks how state.json
    holds the manual queue: ``"list"`` of paths, ``"dict"`` of path -> options, or
    ``"legacy"`` (a list under the old key ``reprocess_paths``). Without ``with_env`` no
    .env is written and its count is absent from ``counts``.
    """
    if executions < 0:
        raise ValueError(f"executions must be >= 0, got {executions}")
    if state_form not in STATE_FORMS:
        raise ValueError(f"state_form must be one of {', '.join(STATE_FORMS)}, got {state_form!r}")
    data_dir = Path(data_dir)
    names = [n for n in FILES if with_env or n != ENV_FILE]
    clashes = [n for n in names if (data_dir / n).exists()]
    if clashes:
        raise FileExistsError(f"{data_dir} already holds {', '.join(clashes)}; not overwriting")

    world = _World(seed)
    settings = _settings(_rng(seed, "settings"))
    env_lines, env = _env()
    execs, counter = _executions(world, _rng(seed, "executions"), executions)
    queue = _queue(world, _rng(seed, "state"), execs, state_form)
    progress = _progress(_rng(seed, "progress"), execs)
    bad: list[Malformed] = []
    if malformed:
        bad += _plant_executions(_rng(seed, "bad-executions"), execs["executions"])
        bad += _plant_state(_rng(seed, "bad-state"), queue, state_form)
        bad += _plant_progress(_rng(seed, "bad-progress"), progress)

    queue_key = "reprocess_paths" if state_form == "legacy" else "manual_process_paths"
    last_timestamp = _iso(world.now - timedelta(minutes=world.rng.randint(2, 90)), "offset")
    state = {"last_timestamp": last_timestamp, queue_key: queue}
    beat_polling = _iso(world.now - timedelta(seconds=world.rng.randint(5, 120)), "offset")
    beat_manual = _iso(world.now - timedelta(seconds=world.rng.randint(5, 30)), "offset")

    # settings.json and state.json as the web UI wrote them (raw UTF-8); executions.json
    # and progress.json as json.dump's defaults wrote them (non-ASCII as \u escapes).
    contents: dict[str, str] = {
        SETTINGS_FILE: _dump(settings, ascii_only=False),
        ENV_FILE: "".join(line + "\n" for line in env_lines),
        EXECUTIONS_FILE: _dump(execs, ascii_only=True),
        STATE_FILE: _dump(state, ascii_only=False),
        PROGRESS_FILE: _dump(progress, ascii_only=True),
        HEARTBEAT_POLLING_FILE: beat_polling + "\n",
        HEARTBEAT_MANUAL_FILE: beat_manual + "\n",
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (data_dir / name).write_bytes(contents[name].encode("utf-8"))

    def count(file: str, records: int) -> FileCount:
        return FileCount(records, sum(1 for m in bad if m.file == file))

    counts = {
        SETTINGS_FILE: count(SETTINGS_FILE, len(settings)),
        ENV_FILE: count(ENV_FILE, len(env)),
        EXECUTIONS_FILE: count(EXECUTIONS_FILE, len(execs["executions"])),
        STATE_FILE: count(STATE_FILE, len(queue)),
        PROGRESS_FILE: count(PROGRESS_FILE, len(progress)),
        HEARTBEAT_POLLING_FILE: count(HEARTBEAT_POLLING_FILE, 1),
        HEARTBEAT_MANUAL_FILE: count(HEARTBEAT_MANUAL_FILE, 1),
    }
    return SampleInfo(
        data_dir=data_dir,
        state_form=state_form,
        counts={n: counts[n] for n in names},
        malformed=tuple(bad),
        settings=settings,
        env=env if with_env else {},
        execution_counter=counter,
        last_timestamp=last_timestamp,
        queue_key=queue_key,
    )


# -- helpers ------------------------------------------------------------------------------


def _rng(seed: int, stream: str) -> random.Random:
    # One stream per concern, so planting malformed records draws from its own streams and
    # leaves every other record as it is without them. String seeds are hashed with
    # SHA-512 by `random`, so they do not depend on PYTHONHASHSEED.
    return random.Random(f"handrail-json-state:{seed}:{stream}")


def _dump(obj: Any, *, ascii_only: bool) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=ascii_only) + "\n"


def _iso(dt: datetime, style: str) -> str:
    """An ISO timestamp in one of the three spellings found in the app's files."""
    if style == "z":
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    if style == "naive":  # datetime.now().isoformat() on a UTC host
        return dt.replace(tzinfo=None).isoformat()
    return dt.isoformat()  # datetime.now(timezone.utc).isoformat()


def _pick_style(rng: random.Random) -> str:
    return rng.choices(("offset", "z", "naive"), weights=(80, 10, 10))[0]


# -- settings.json and .env ---------------------------------------------------------------


def _settings(rng: random.Random) -> dict[str, Any]:
    channels = [
        "2.1 KTVU FOX 2",
        "4.1 KRON",
        "5.1 KPIX",
        "7.1 KGO",
        "9.1 KQED",
        "14.1 Univision",
        "26.1 KTSF",
        "48.1 Telemundo",
        "Pokémon TV",
        "Канал 1",
    ]
    return {
        "whisper_model": rng.choice(["medium", "large-v3", "small.en"]),
        "whisper_device": "auto",
        "log_verbosity": rng.choice(LOG_VERBOSITIES),
        "discovery_mode": "polling",
        "channels_api_url": "http://dvr.local:8089/api/v1",
        "caption_command": 'whisper --model medium --output_format srt "{path}"',
        "optimization_mode": rng.choice(["standard", "automatic"]),
        "display_name": "Wohnzimmer DVR – Untertitel ✓",
        "extra_ffmpeg_args": "",
        "dry_run": False,
        "keep_original": rng.choice([True, False]),
        "use_polling": True,
        "orphan_cleanup_enabled": False,
        "preserve_all_audio_tracks": True,
        "poll_interval_seconds": rng.choice([60, 120, 300]),
        "poll_limit": 150,
        "pipeline_timeout": 3600,
        "caption_delay_ms": rng.choice([0, 250, 500]),
        "max_log_bytes": 10_485_760,
        "vad_threshold": round(rng.uniform(0.2, 0.6), 2),
        "min_free_space_gb": 25.0,
        "whisper_temperature": 0.0,
        "channel_whitelist": sorted(rng.sample(channels, 6)),
        "media_file_extensions": [".mpg", ".ts", ".mkv"],
        "caption_options": {
            "max_line_length": 42,
            "max_lines": 2,
            "burn_in": False,
            "font": None,
            "position": {"x": 0.5, "y": 0.9},
        },
        "local_test_dir": None,
    }


def _env() -> tuple[list[str], dict[str, str]]:
    """The .env lines and their parsed assignments (quotes removed)."""
    lines = [
        "# py-captions-for-channels defaults; settings.json overrides these",
        "DATA_DIR=/app/data",
        "CHANNELS_DVR_URL=http://dvr.local:8089",
        f"DVR_RECORDINGS_PATH={RECORDINGS_ROOT}",
        "WHISPER_MODEL=medium",
        "LOG_VERBOSITY=NORMAL",
        "POLL_INTERVAL_SECONDS=120",
        "DRY_RUN=false",
        "KEEP_ORIGINAL=true",
        "",
        "# pipeline",
        'CAPTION_COMMAND="whisper --model medium --output_format srt {path}"',
        "SERVER_TZ='America/Los_Angeles'",
        "WEBHOOK_PORT=9000",
        "AUDIO_LANGUAGE=eng",
        "STALE_EXECUTION_SECONDS=7200",
        "MANUAL_PROCESS_POLL_SECONDS=10",
        "X264_OPTS=preset=veryfast:tune=film",
    ]
    env: dict[str, str] = {}
    for line in lines:
        if not line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return lines, env


# -- recordings, executions, queue, progress -----------------------------------------------

# (show, episodic): episodic shows get SxxEyy names, the others a date and time.
_SHOWS: tuple[tuple[str, bool], ...] = (
    ("Grey's Anatomy", True),
    ("Law & Order: Special Victims Unit", True),
    ("Pokémon Horizons", True),
    ("Jeopardy!", False),
    ("NOVA", True),
    ("Antiques Roadshow", True),
    ("Señora Acero", True),
    ("The Great British Bake Off", True),
    ("CBS Evening News", False),
    ("Bluey", True),
    ("Saturday Night Live", True),
    ("Top Chef", True),
    ("KQED Newsroom", False),
    ("Mystery Science Theater 3000", True),
    ("Amélie's Kitchen", True),
    ("東京 Night Walk", False),
    ("Zoë & Friends", True),
)
_EPISODES = (
    "Pilot",
    'The "Big" Reveal',
    "Winner's Circle",
    "Déjà Vu",
    "Part 2",
    "Holiday Special 🎄",
    "Finale",
    "Tournament of Champions",
    "It's Complicated",
    "¿Quién Es?",
    "Back to School",
    "Night of the Living Bread",
    "Naïve Art",
    "The 100% Solution",
    "Smørrebrød",
)
_ERRORS = (
    "Whisper failed: CUDA out of memory. Tried to allocate 2.00 GiB",
    "ffmpeg exited with code 1: Invalid data found when processing input",
    "Recording file not found: {path}",
    "Caption file is empty after transcription",
    "Channels DVR API timeout after 10s",
    'Traceback (most recent call last):\n  File "pipeline.py", line 212, in run\n'
    "OSError: [Errno 28] No space left on device",
)


class _World:
    """The shared clock and recording-name generator of one sample."""

    def __init__(self, seed: int) -> None:
        self.rng = _rng(seed, "world")
        self.now = _EPOCH + timedelta(
            days=self.rng.randint(0, 180), seconds=self.rng.randint(0, 86_399)
        )
        self.seen: set[str] = set()
        # per episodic show: [season, episode]
        self.episode: dict[str, list[int]] = {
            show: [self.rng.randint(1, 20), self.rng.randint(1, 10)] for show, ep in _SHOWS if ep
        }

    def recording(self, rng: random.Random, when: datetime) -> tuple[str, str]:
        """A new (title, path) of a recording aired shortly before ``when``."""
        while True:
            show, episodic = rng.choice(_SHOWS)
            day = when.date().isoformat()
            if episodic:
                counter = self.episode[show]
                counter[1] += 1
                if counter[1] > 22:
                    counter[0], counter[1] = counter[0] + 1, 1
                episode = rng.choice(_EPISODES)
                title = f"{show} - {episode}"
                name = f"{show} S{counter[0]:02d}E{counter[1]:02d} {day}"
            else:
                title = f"{show} {day}"
                name = f"{show} {day} {day}-{when:%H%M}"
            path = f"{RECORDINGS_ROOT}/{show}/{name}.mpg"
            if path not in self.seen:
                self.seen.add(path)
                return title, path


def _executions(world: _World, rng: random.Random, n: int) -> tuple[dict[str, Any], int]:
    """``{"executions": {...}, "execution_counter": N}``, oldest first."""
    span = timedelta(days=max(7, n // 30))
    offsets = sorted(rng.uniform(0, span.total_seconds()) for _ in range(n))
    active = min(n, max(2, n // 400))  # the newest few are still running or pending
    records: dict[str, Any] = {}
    polling_paths: list[tuple[str, str]] = []
    rec_id = rng.randint(1000, 20000)
    for i, offset in enumerate(offsets):
        started = world.now - span + timedelta(seconds=round(offset, 6))
        kind = rng.choices(("polling", "manual", "reprocess"), weights=(70, 20, 10))[0]
        if kind == "reprocess" and polling_paths:
            title, path = polling_paths.pop(rng.randrange(len(polling_paths)))
            job_id = f"reprocess::{path}"
        else:
            title, path = world.recording(rng, started)
            if kind == "polling":
                rec_id += rng.randint(1, 5)
                job_id = f"polling::{rec_id}"
                polling_paths.append((title, path))
            else:
                kind = "manual"
                job_id = f"manual::{path}"
        style = _pick_style(rng)
        record: dict[str, Any] = {
            "title": title,
            "path": path,
            "status": "completed",
            "kind": kind,
            "started_at": _iso(started, style),
            "completed_at": None,
            "success": None,
            "elapsed_seconds": None,
            "error": None,
        }
        if i >= n - active:
            record["status"] = "running" if i == n - active else "pending"
        else:
            outcome = rng.choices(
                ("completed", "failed", "cancelled", "interrupted"), weights=(86, 9, 4, 1)
            )[0]
            if outcome == "interrupted":  # swept as stale after the pipeline timeout
                elapsed = round(3600 + rng.uniform(1, 1800), 3)
            else:
                elapsed = round(rng.lognormvariate(6.3, 0.6), 3)  # ~9 minutes typical
            completed = started + timedelta(seconds=elapsed)
            record.update(
                completed_at=_iso(completed, style),
                elapsed_seconds=elapsed,
                success=outcome == "completed",
                status=outcome,
            )
            if outcome == "failed":
                record["error"] = rng.choice(_ERRORS).format(path=path)
            elif outcome == "cancelled":
                record["error"] = "Cancelled by user"
            elif outcome == "interrupted":
                # The stale-job sweep marked these "completed" with a naive local clock.
                record["status"] = "completed"
                record["completed_at"] = _iso(completed, "naive")
                record["error"] = "Execution interrupted or timed out (exceeded 3600s)"
        records[job_id] = record
    counter = n + rng.randint(0, max(1, n // 10))  # older executions were pruned
    return {"executions": records, "execution_counter": counter}, counter


def _queue(world: _World, rng: random.Random, execs: dict[str, Any], form: StateForm) -> Any:
    """The manual queue: some recordings already seen in executions, some new ones."""
    known = [r["path"] for r in execs["executions"].values()]
    take = min(len(known), STATE_PATHS // 2)
    paths = rng.sample(known, take)
    while len(paths) < STATE_PATHS:
        paths.append(world.recording(rng, world.now - timedelta(days=rng.uniform(0, 30)))[1])
    if form != "dict":
        return paths
    return {
        p: {
            "skip_caption_generation": rng.random() < 0.2,
            "log_verbosity": rng.choices(LOG_VERBOSITIES, weights=(80, 15, 5))[0],
        }
        for p in paths
    }


def _progress(rng: random.Random, execs: dict[str, Any]) -> dict[str, Any]:
    """Progress of the active jobs, plus entries left behind by finished ones (at 100)."""
    ids = list(execs["executions"])[::-1][:PROGRESS_ENTRIES]
    rec_id = 900_000
    while len(ids) < PROGRESS_ENTRIES:  # orphans: jobs no longer in executions.json
        rec_id += 1
        ids.append(f"polling::{rec_id}")
    out: dict[str, Any] = {}
    for job_id in ids:
        record = execs["executions"].get(job_id, {})
        status = record.get("status")
        if status == "running":
            percent: float = round(rng.uniform(1, 99), 1)
        elif status == "pending":
            percent = 0.0
        else:
            percent = 100  # the app wrote an int here when a job finished
        process_type = rng.choice(("whisper", "ffmpeg"))
        details: dict[str, Any]
        if process_type == "whisper":
            total = rng.randint(200, 900)
            details = {
                "segments_done": int(total * float(percent) / 100),
                "segments_total": total,
                "model": "medium",
                "device": rng.choice(("cuda", "cpu")),
            }
            message = f"Transcribing… {float(percent):.0f}%"
        else:
            duration = rng.randint(1800, 7200)  # seconds of recording
            at = int(duration * float(percent) / 100)
            details = {
                "frame": at * 30,
                "fps": round(rng.uniform(60, 400), 1),
                "speed": f"{rng.uniform(1, 9):.1f}x",
                "out_time": f"{at // 3600:02d}:{at // 60 % 60:02d}:{at % 60:02d}.00",
            }
            message = "Encoding video with embedded captions"
        out[job_id] = {
            "process_type": process_type,
            "percent": percent,
            "message": message,
            "details": details,
        }
    return out


# -- planted malformed records ------------------------------------------------------------


def _plant_executions(rng: random.Random, records: dict[str, Any]) -> list[Malformed]:
    n = len(records)
    k = min(n, max(4, round(n * MALFORMED_EXECUTION_SHARE)))
    keys = list(records)
    chosen = sorted(rng.sample(range(n), k))
    out: list[Malformed] = []
    for j, index in enumerate(chosen):
        key = keys[index]
        record = records[key]
        kind = j % 4
        if kind == 0:
            del record["title"]
            problem = "missing field 'title'"
        elif kind == 1:
            record["started_at"] = "not a date"
            problem = "started_at is not a timestamp: 'not a date'"
        elif kind == 2:
            records[key] = str(record["status"])
            problem = "record is a string, not an object"
        else:
            record["elapsed_seconds"] = "fast"
            problem = "elapsed_seconds is not a number: 'fast'"
        out.append(Malformed(EXECUTIONS_FILE, key, problem))
    return out


def _plant_state(rng: random.Random, queue: Any, form: StateForm) -> list[Malformed]:
    if not queue:
        return []
    if form == "dict":
        key = rng.choice(list(queue))
        queue[key] = rng.randint(1, 9)
        return [Malformed(STATE_FILE, key, "options are a number, not an object")]
    index = rng.randrange(len(queue))
    queue[index] = rng.randint(10_000, 99_999)  # a recording id typed where a path belongs
    return [Malformed(STATE_FILE, f"[{index}]", "queued path is a number, not a string")]


def _plant_progress(rng: random.Random, progress: dict[str, Any]) -> list[Malformed]:
    if len(progress) < 2:
        return []
    half_key, list_key = rng.sample(list(progress), 2)
    progress[half_key]["percent"] = "half"
    entry = progress[list_key]
    progress[list_key] = [entry["process_type"], entry["percent"], entry["message"]]
    out = [
        Malformed(PROGRESS_FILE, half_key, "percent is not a number: 'half'"),
        Malformed(PROGRESS_FILE, list_key, "record is a list, not an object"),
    ]
    order = list(progress)
    return sorted(out, key=lambda m: order.index(m.key))
