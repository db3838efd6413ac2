"""Fixtures shared by the library's tests."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # the root conftest.py points CTXLIB_DATA here

# Captured now: some tests point CTXLIB_DATA elsewhere to simulate a missing file.
DATA_DIR = Path(os.environ.get("CTXLIB_DATA", str(SHARED_DATA)).split(os.pathsep)[0])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The local data directory; tests that need the real corpora skip without it."""
    if not DATA_DIR.is_dir():
        pytest.skip("the course data directory (../shared/data) is not present")
    return DATA_DIR
