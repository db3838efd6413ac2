"""Exercise 1.4 graded from the vectors handed in: a changed skip-gram run that reaches the
target earns the points; the chapter's run unchanged, another budget's run, an unfinished run,
forged vectors, vectors of another text or no file earn nothing.

The test-sized exercise trains on a synthetic text in which each analogy relation is learnable
(every pair of a relation shares a context word of its own, and each side of the relation a
marker word), so a run of seconds answers most questions when it trains long enough."""

import dataclasses
import random
from functools import partial

import pytest
import torch
from handin_helpers import forge, notebook_gpu_budget
from handin_helpers import grade as grade_checkpoint

from ctxlib import handin
from ctxlib.checkpoints import CheckpointStore
from ctxlib.static import ANALOGIES, SkipGram, SkipGramConfig, train_skipgram


def synthetic_analogy_text(repeats: int = 20, seed: int = 0) -> str:
    """Lines "a fromR pairRxI" and "b toR pairRxI" for every pair (a, b) of relation R."""
    lines = []
    for r, pairs in enumerate(ANALOGIES.values()):
        for i, (a, b) in enumerate(pairs):
            lines += [f"{a} from{r} pair{r}x{i}", f"{b} to{r} pair{r}x{i}"] * repeats
    random.Random(seed).shuffle(lines)
    return "\n".join(lines)


TEXT = synthetic_analogy_text()
# The "chapter's gpu run": one epoch of 16-wide vectors (it answers about 4% of the questions;
# five epochs answer about 90%). The target is 0.5.
CHAPTER_RUN = {"dim": 16, "window": 5, "negatives": 5, "epochs": 1, "batch_size": 256,
               "lr": 0.01, "min_count": 1, "subsample_threshold": 1.0}
EXERCISE = dataclasses.replace(
    handin.EXERCISES["1.4"], file="tiny_skipgram", target=0.5, chapter_run=CHAPTER_RUN,
    rescore=partial(handin.skipgram_analogy_accuracy, text=TEXT))


def run(root, monkeypatch, budget="gpu", text=TEXT, **changes):
    """Train the test-sized run with ``changes`` under ``budget``; return its checkpoint."""
    monkeypatch.setenv("CTXLIB_BUDGET", budget)
    path = root / "checkpoints" / budget / f"{EXERCISE.file}.pt"
    train_skipgram(text, SkipGramConfig(**{**CHAPTER_RUN, **changes}), progress_bar=False,
                   checkpoint_path=str(path), device="cpu")
    return path


def grade(path, capsys):
    return grade_checkpoint(EXERCISE, path, capsys)


@pytest.fixture(scope="module")
def changed_run(tmp_path_factory):
    """A genuine changed run (five epochs instead of one), trained once for the module."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run(tmp_path_factory.mktemp("changed"), monkeypatch, epochs=5)


def test_a_changed_run_that_reaches_the_target_earns_the_points(changed_run, monkeypatch,
                                                                capsys):
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    message, failed = grade(changed_run, capsys)
    assert not failed and message.startswith("Correct!"), message
    assert "changed epochs" in message
    assert EXERCISE.rescore(CheckpointStore.read(changed_run)) > 0.5


def test_the_chapters_own_run_unchanged_earns_nothing(tmp_path, monkeypatch, capsys):
    message, failed = grade(run(tmp_path, monkeypatch), capsys)
    assert failed and "the chapter's own gpu run" in message


def test_another_budgets_run_renamed_earns_nothing(tmp_path, monkeypatch, capsys):
    cpu_run = run(tmp_path, monkeypatch, budget="cpu", epochs=5)
    handed_in = EXERCISE.handed_in(tmp_path)
    handed_in.parent.mkdir(parents=True, exist_ok=True)
    cpu_run.rename(handed_in)
    message, failed = grade(handed_in, capsys)
    assert failed and "trained under the cpu budget" in message


def test_an_unfinished_run_earns_nothing(changed_run, tmp_path, capsys):
    blob = CheckpointStore.read(changed_run)
    blob["state"]["epoch"] = 2
    path = tmp_path / "unfinished.pt"
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "stopped at epoch 2 of 5" in message


def test_forged_vectors_earn_nothing(changed_run, tmp_path, capsys):
    blob = CheckpointStore.read(changed_run)
    words, dim = blob["state"]["model"]["inputs.weight"].shape
    torch.manual_seed(1)
    blob["state"]["model"] = SkipGram(words, dim).state_dict()  # untrained, checksum redone
    forge(tmp_path / "forged.pt", blob)
    message, failed = grade(tmp_path / "forged.pt", capsys)
    assert failed and "is below the target 0.5" in message


def test_vectors_of_another_text_or_model_earn_nothing(tmp_path, monkeypatch, capsys):
    other = run(tmp_path, monkeypatch, text=synthetic_analogy_text(seed=1), epochs=5)
    message, failed = grade(other, capsys)
    assert failed and "not trained on WikiText-2's whole training split" in message

    blob = CheckpointStore.read(other)
    blob["identity"] = {"model": {"config": {"n_embd": 16}}}  # a GPT's checkpoint
    forge(other, blob)
    message, failed = grade(other, capsys)
    assert failed and "not a run of exercise 1.4's model" in message

    blob["identity"] = {"config": {"epochs": 5, "n_embd": 16}}  # epochs, but not skip-gram's
    forge(other, blob)
    message, failed = grade(other, capsys)
    assert failed and "not a skip-gram run" in message


def test_the_exercises_chapter_run_is_the_notebooks_gpu_budget():
    """The fields a change is looked for in hold what chapter 1's gpu budget trains."""
    gpu = notebook_gpu_budget("01_static_to_contextual")
    chapter = dataclasses.asdict(SkipGramConfig(dim=gpu["dim"], epochs=gpu["epochs"],
                                                min_count=gpu["min_count"]))
    chapter.pop("seed")  # another seed is not a change
    assert handin.EXERCISES["1.4"].chapter_run == chapter


def test_a_run_capped_for_a_code_path_test_is_not_graded(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "2")
    message, failed = grade(run(tmp_path, monkeypatch, epochs=5), capsys)
    assert not failed and "Not graded: this run was capped at 2 steps" in message
    assert "Correct!" not in message


def test_the_target_lies_above_every_seed_of_the_chapters_run_and_below_the_solution():
    """The stored calibration: three seeds of the chapter's gpu run all miss the target, the
    exercise's solution at the notebook's seed (0) reaches it, and the notebook gives the
    chapter's numbers and the target."""
    import json
    import statistics
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parent.parent
    record = json.loads((root / "results" / "01_skipgram_exercise.json").read_text())
    exercise = handin.EXERCISES["1.4"]
    scores = {}
    for arm, changes in [("chapter", {}), ("solution", record["solution_changes"])]:
        runs = record["runs"][arm]
        assert sorted(run["seed"] for run in runs) == [0, 1, 2], arm
        for run in runs:  # each run is the arm it is stored under
            config = {k: v for k, v in run["config"].items() if k != "seed"}
            assert config == {**exercise.chapter_run, **changes}, arm
        scores[arm] = [run["analogy_accuracy"]["all"]
                       for run in sorted(runs, key=lambda run: run["seed"])]
    assert max(scores["chapter"]) < exercise.target <= scores["solution"][0], scores

    notebook = nbformat.read(root / "notebooks" / "01_static_to_contextual.ipynb", as_version=4)
    task = next(c.source for c in notebook.cells if c.source.startswith("### Exercise 1.4"))
    mean, spread = statistics.mean(scores["chapter"]), statistics.stdev(scores["chapter"])
    assert f"{mean:.3f} ± {spread:.3f}" in task and f"**{exercise.target}**" in task
    solution = next(c.source for c in notebook.cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == "ex-1-4-answer")
    namespace = {}
    exec(solution, namespace)  # noqa: S102 (the course's own solution cell)
    assert namespace["changes"] == record["solution_changes"]
