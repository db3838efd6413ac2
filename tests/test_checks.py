"""Target checks of the GPU exercises read the run's own record, never a typed number."""

import dataclasses

import pytest

from ctxlib import checks
from ctxlib.checks import ExerciseFailed
from ctxlib.train import History, TrainConfig, train
from tests.test_train import batches, fresh_model, loss_fn

CONFIG = TrainConfig(steps=6, lr=0.05, progress=False)


def a_run(monkeypatch, budget="gpu", score=0.9, config=CONFIG):
    monkeypatch.setenv("CTXLIB_BUDGET", budget)
    return train(fresh_model(), batches, loss_fn, config, device="cpu",
                 eval_fn=lambda model: {"dev_accuracy": score, "valid_loss": 1.4})


def test_a_finished_gpu_run_that_reaches_the_target_passes(monkeypatch, capsys):
    run = a_run(monkeypatch)
    checks.check_run_target(run, "dev_accuracy", 0.78, higher_is_better=True)
    checks.check_run_target(run, "valid_loss", 1.5)
    assert capsys.readouterr().out.count("Correct!") == 2


@pytest.mark.parametrize("answer", [0.95, 1.0, None, "0.9", {"dev_accuracy": [0.9]}])
def test_a_typed_number_is_not_accepted(answer):
    with pytest.raises(ExerciseFailed, match="History that train"):
        checks.check_run_target(answer, "dev_accuracy", 0.78, higher_is_better=True)


def test_a_hand_made_history_is_not_accepted():
    made = History(steps=[1, 2], loss=[1.0, 0.5], evals={"dev_accuracy": [0.99]})
    with pytest.raises(ExerciseFailed, match="no record of its run"):
        checks.check_run_target(made, "dev_accuracy", 0.78, higher_is_better=True)


def test_a_run_below_the_target_fails_with_the_hint(monkeypatch):
    run = a_run(monkeypatch, score=0.7)
    with pytest.raises(ExerciseFailed, match="dev accuracy 0.700 is below the target 0.78: "
                                             "train longer"):
        checks.check_run_target(run, "dev_accuracy", 0.78, higher_is_better=True,
                                hint="train longer")
    with pytest.raises(ExerciseFailed, match="above the target 1.2"):
        checks.check_run_target(run, "valid_loss", 1.2)


def test_an_unfinished_run_or_a_missing_metric_fails(monkeypatch):
    run = a_run(monkeypatch)
    with pytest.raises(ExerciseFailed, match="recorded no 'mlm_loss'"):
        checks.check_run_target(run, "mlm_loss", 5.0)
    cut = dataclasses.replace(run, steps=run.steps[:3])
    with pytest.raises(ExerciseFailed, match="stopped at step 3 of 6"):
        checks.check_run_target(cut, "dev_accuracy", 0.78, higher_is_better=True)


def test_another_budget_is_not_graded_and_never_correct(monkeypatch, capsys):
    run = a_run(monkeypatch, budget="cpu", score=0.99)
    checks.check_run_target(run, "dev_accuracy", 0.78, higher_is_better=True)
    captured = capsys.readouterr()
    assert "Correct" not in captured.out + captured.err
    # On stderr: graders (nbgrader among them) give such a cell no points.
    assert "Not graded: the target 0.78 is for the gpu budget" in captured.err
    assert "cpu budget" in captured.err and "dev accuracy 0.990" in captured.err


def test_a_capped_code_path_run_is_not_graded(monkeypatch, capsys):
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "2")
    run = a_run(monkeypatch, budget="gpu", score=0.99)
    checks.check_run_target(run, "dev_accuracy", 0.78, higher_is_better=True)
    captured = capsys.readouterr()
    assert "Correct" not in captured.out and "capped at 2 steps by CTXLIB_MAX_STEPS" in captured.err
