"""scripts/calibrate_gpu_exercise.py measures a GPU exercise's target: its solutions are the
notebooks', its verdict reads the runs right, and it trains, scores and records a run."""

import json
import sys
import threading
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from calibrate_gpu_exercise import EXERCISES, locked, main, merge, record_runs, verdict
from nbtools import notebook_budgets

from ctxlib import handin
from ctxlib.checkpoints import CheckpointStore
from ctxlib.runtime import Settings


def solution_changes(exercise: str) -> dict:
    """The changes the notebook's solution cell makes, under the gpu budget."""
    chapter = EXERCISES[exercise].chapter
    nb = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    grade_id = f"ex-{exercise.replace('.', '-')}-answer"
    (cell,) = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    names = {"cfg": Settings(notebook_budgets(chapter)["gpu"])}
    exec(cell.source, names)  # noqa: S102 (the course's own solution cell)
    return {k: v for part in ("changes", "model_changes", "train_changes", "size_changes")
            for k, v in names.get(part, {}).items()}


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_the_solutions_are_the_notebooks(exercise):
    assert solution_changes(exercise) == EXERCISES[exercise].solution
    # and each changes a field the exercise's check looks for a change in
    assert set(EXERCISES[exercise].solution) <= set(handin.EXERCISES[exercise].chapter_run)


def run(arm, seed, score, capped_by=None):
    return {"arm": arm, "seed": seed, "score": score, "capped_by": capped_by}


def test_the_verdict_reads_the_runs():
    """6.3's target is a loss of 4.5: the chapter's runs must all stay above it, the
    solution's seed 0 reach it; capped runs do not count."""
    assert handin.EXERCISES["6.3"].target == 4.5
    good = [run("chapter", s, 4.6 + s / 10) for s in range(3)] + [run("solution", 0, 4.4)]
    assert verdict("6.3", good) == {"target": 4.5, "chapter_misses_it": True,
                                    "solution_meets_it_at_seed_0": True}
    bad = [run("chapter", 0, 4.6), run("chapter", 1, 4.45), run("solution", 0, 4.55)]
    assert verdict("6.3", bad) == {"target": 4.5, "chapter_misses_it": False,
                                   "solution_meets_it_at_seed_0": False}
    capped = [run("chapter", 0, 1.0, capped_by=1), run("solution", 1, 4.0)]
    assert verdict("6.3", capped) == {"target": 4.5, "chapter_misses_it": None,
                                      "solution_meets_it_at_seed_0": None}
    assert merge(bad, [run("chapter", 1, 4.7)]) == [bad[0], bad[2], run("chapter", 1, 4.7)]


def test_runs_finishing_together_wait_for_each_other(tmp_path):
    """A run recorded while another process holds the results waits for it, and then adds
    itself to what is there: no run is lost, and the file lists them in order."""
    results = tmp_path / "06_xlnet_exercise.json"
    record_runs("6.3", results, [run("solution", 0, 4.4)])
    late = threading.Thread(target=record_runs, args=("6.3", results, [run("chapter", 1, 4.7)]))
    with locked(results):  # another process writing its run
        late.start()
        late.join(timeout=0.5)
        assert late.is_alive()  # it waits
        assert len(json.loads(results.read_text())["runs"]) == 1
    late.join(timeout=5)
    record = json.loads(results.read_text())
    assert [(r["arm"], r["seed"]) for r in record["runs"]] == [("chapter", 1), ("solution", 0)]
    assert record["verdict"]["solution_meets_it_at_seed_0"] is True
    assert not (tmp_path / "06_xlnet_exercise.json.partial").exists()


@pytest.mark.slow
def test_a_calibration_trains_scores_and_records_its_runs(tmp_path, monkeypatch):
    """Chapter 7's causal LM at its gpu size, one step a run (CTXLIB_MAX_STEPS), both arms at
    once in processes of their own (--jobs): each is trained, scored again from its checkpoint
    and recorded, marked capped and as one of two runs sharing the device."""
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", str(tmp_path))
    results = tmp_path / "07_head_to_head_exercise.json"
    main(["7.2", "--seeds", "0", "--jobs", "2", "--results", str(results)])
    record = json.loads(results.read_text())
    assert [(r["arm"], r["seed"], r["changes"]) for r in record["runs"]] == [
        ("chapter", 0, {}), ("solution", 0, {"steps": 16_000})]
    assert all(r["capped_by"] == 1 and 0 < r["score"] < 20 for r in record["runs"])
    assert all(r["runs_at_once"] == 2 for r in record["runs"])
    assert record["verdict"]["chapter_misses_it"] is None  # capped runs measure nothing
    assert (tmp_path / "checkpoints" / "gpu" / "calibration" / "7_2_solution_seed0.pt").exists()


@pytest.mark.slow
def test_exercise_2_4s_calibration_trains_the_chapters_classifier(tmp_path, monkeypatch):
    """Chapter 2 has no pretraining recipe: its calibration trains the classifier as the
    notebook's exercise cell does (gpu sizes, one step here), and the grader's rescore reads
    the checkpoint as chapter 2's classifier with the solution's change."""
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", str(tmp_path))
    results = tmp_path / "02_attention_exercise.json"
    main(["2.4", "--seeds", "0", "--arms", "solution", "--results", str(results)])
    (solution,) = json.loads(results.read_text())["runs"]
    assert solution["changes"] == {"dropout": 0.3} and solution["capped_by"] == 1
    assert solution["runs_at_once"] == 1  # trained alone
    assert 0.3 < solution["score"] < 0.7  # one step from random weights: about chance
    blob = CheckpointStore.read(
        tmp_path / "checkpoints" / "gpu" / "calibration" / "2_4_solution_seed0.pt")
    settings = handin.run_settings(blob)
    assert settings["dropout"] == 0.3 and settings["width"] == 256
