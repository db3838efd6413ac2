"""Shared test setup: point ctxlib at the local copy of the course data (no downloads in tests)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

if "CTXLIB_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["CTXLIB_DATA"] = str(SHARED_DATA)


@pytest.fixture
def shared_data() -> Path:
    """The local data directory; tests that need the real corpora skip without it."""
    path = Path(os.environ.get("CTXLIB_DATA", SHARED_DATA).split(os.pathsep)[0])
    if not path.is_dir():
        pytest.skip("the course data directory (../shared/data) is not present")
    return path
