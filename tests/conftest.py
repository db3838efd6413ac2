"""Fixtures shared by the library's tests."""

import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The HTML book, built once per test session offline with warnings as errors."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.exists():
        pytest.skip("jupyter-book is not installed")
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [str(jupyter_book), "build", str(ROOT), "--path-output", str(out), "--warningiserror",
         "--quiet"], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "_build" / "html"


@pytest.fixture(autouse=True)
def environment_restored():
    """Every test leaves ``os.environ`` as it found it, whatever the code it calls writes
    there (``checkpoints_on_drive`` sets ``CTXLIB_CHECKPOINTS`` for good, by design): the
    notebooks nbval runs later in the same process inherit the environment."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
