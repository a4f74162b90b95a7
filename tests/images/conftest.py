"""One small generated library per session: every copy kind and broken file, a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from handrail.images.hasher import HashRun, hash_files
from handrail.images.sample import SampleManifest, make_sample_library

# 30 originals and 12 copies (two of each kind); sizes kept small so the whole session's
# sample takes about two seconds to draw.
SAMPLE_SIZES = ((320, 240), (640, 480), (480, 640), (400, 400), (800, 600))


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    root: Path = tmp_path_factory.mktemp("image-sample")
    return make_sample_library(root, count=30, copies=12, seed=7, sizes=SAMPLE_SIZES)


@pytest.fixture(scope="session")
def sample_run(sample: SampleManifest) -> HashRun:
    return hash_files(sample.images, workers=2)
