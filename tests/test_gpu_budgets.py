"""The gpu budget is real code: run every notebook with its gpu settings on the CPU, with every
training loop capped at one step (CTXLIB_MAX_STEPS=1), so that path never rots unseen."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_gpu_configuration_runs_one_step_on_cpu(path, monkeypatch, tmp_path):
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    monkeypatch.setenv("CTXLIB_PROGRESS", "off")
    nb = nbformat.read(path, as_version=4)
    # Run in a scratch directory so checkpoints do not land in the repository.
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if anything fails
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "Budget: gpu" in printed
    assert os.environ["CTXLIB_MAX_STEPS"] == "1"
