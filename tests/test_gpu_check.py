"""The GPU check (scripts/gpu_check.py) works before a GPU is lent: its projection, and a dry
run on the CPU through the same code path."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from gpu_check import project, t4_slowdown


def test_the_projection_adds_the_skipped_steps_at_the_median_step_time():
    loops = [{"asked_steps": 100, "steps_run": 4, "seconds": [1.0, 1.0, 0.5, 0.5],
              "loss": [3.0, 2.9, 2.8, 2.5], "parameters": 10, "peak_memory_bytes": 2**30}]
    entry = project("04_gpt", {"ok": True, "seconds": 10.0, "error": None}, loops, 10.0)
    # 3 s measured + 96 skipped steps of 0.5 s (the 2 warm-up steps left out of the median)
    assert entry["training_seconds_projected"] == 51.0
    assert entry["other_seconds"] == 7.0 and entry["projected_seconds"] == 58.0
    assert entry["projected_t4_seconds"] == 51.0 * 10 + 7.0 * 2
    largest = entry["largest_loop"]
    assert largest["ms_per_step"] == 500.0 and largest["loss_fell"]
    assert largest["peak_memory_gb"] == 1.0 and largest["tokens_per_second"] > 0


def test_t4_slowdown_comes_from_memory_bandwidth():
    assert t4_slowdown("NVIDIA H100 80GB HBM3") == pytest.approx(3350 / 320)
    assert t4_slowdown("NVIDIA H200") == pytest.approx(4800 / 320)
    assert t4_slowdown("Some Future GPU") is None


TRAINS_A_LITTLE = """import torch

from ctxlib.train import TrainConfig, train

model = torch.nn.Linear(4, 1)


def batches(generator):
    x = torch.randn(8, 4, generator=generator)
    return x, x.sum(1, keepdim=True)


def loss_fn(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


train(model, batches, loss_fn, TrainConfig(steps=50, lr=0.1, progress=False))

# The timed run caps the loops but not the data: what it times is the real run's work.
from ctxlib.runtime import take

assert len(take(list(range(40)), None)) == 40
"""


def dry_run(*arguments) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run",
                           *map(str, arguments)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_a_dry_run_on_the_cpu_writes_the_report(tmp_path):
    """The script's whole path (both runs of a notebook, the loop log, the projection, the
    report) on a notebook of one small training loop, on the simulated accelerator."""
    import nbformat

    notebook = tmp_path / "00_tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRAINS_A_LITTLE)]),
                   notebook)
    out = tmp_path / "gpu_check.json"
    dry_run("--notebook", notebook, "--out", out)
    report = json.loads(out.read_text())
    assert report["device"] == "cpu (dry run)"
    chapter = report["chapters"]["00_tiny"]
    assert chapter["smoke"]["ok"], chapter["smoke"]["error"]
    projected = chapter["budget"]
    assert projected["ok"], projected["error"]
    assert projected["training_loops"] == 1 and projected["steps_asked"] == 50
    assert projected["steps_run"] == projected["max_steps"] == 2  # capped, as on a GPU
    assert projected["projected_seconds"] >= projected["other_seconds"]
    assert report["budget"] == "smoke"  # a dry run projects the smoke budget


def test_a_check_split_into_calls_gathers_in_one_report(tmp_path, monkeypatch):
    """Where a call's time is limited the check is split by part and chapter: the smoke runs
    of two notebooks at once, then one notebook's timing run; the second call adds to the
    first's report, and a report of another device is started anew, not mixed in. Each kernel
    gets its budget from the check, whatever the calling process has set."""
    import nbformat

    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")

    notebooks = []
    for name in ("00_one", "01_two"):
        notebooks.append(tmp_path / f"{name}.ipynb")
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
            TRAINS_A_LITTLE + "import os\n\nassert os.environ['CTXLIB_BUDGET'] == 'smoke'\n")]),
            notebooks[-1])
    out = tmp_path / "gpu_check.json"
    out.write_text(json.dumps({"device": "NVIDIA H200", "chapters": {"04_gpt": {}}}))
    done = dry_run("--parts", "smoke", "--jobs", "2", "--notebook", notebooks[0],
                   "--notebook", notebooks[1], "--out", out)
    assert "another device's" in done.stdout
    dry_run("--parts", "budget", "--notebook", notebooks[1], "--out", out)
    chapters = json.loads(out.read_text())["chapters"]
    assert sorted(chapters) == ["00_one", "01_two"]  # the other device's chapter is gone
    assert chapters["00_one"]["smoke"]["ok"] and chapters["01_two"]["smoke"]["ok"]
    assert "budget" not in chapters["00_one"]
    assert chapters["01_two"]["budget"]["ok"] and chapters["01_two"]["budget"]["steps_run"] == 2
