"""Shared by the tests of the GPU exercises graded from a checkpoint (``ctxlib.handin``)."""

import torch

from ctxlib import checks
from ctxlib.checkpoints import checksum


def forge(path, blob):
    """Save ``blob`` at ``path`` with a fresh checksum, as a determined forger would."""
    blob["sha256"] = checksum(blob["state"])
    torch.save(blob, path)


def grade(exercise, path, capsys):
    """(the check's message, and whether it raised) for ``exercise``'s checkpoint at ``path``."""
    try:
        checks.check_gpu_exercise(exercise, path)
    except checks.ExerciseFailed as failed:
        return str(failed), True
    captured = capsys.readouterr()
    return captured.out + captured.err, False


def notebook_gpu_budget(chapter):
    """The gpu budget of ``notebooks/<chapter>.ipynb``'s budget cell (where it is set)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from nbtools import notebook_budgets

    return notebook_budgets(chapter)["gpu"]


def assert_runs_of_the_chapter(exercise, expected):
    """The fields a change is looked for in, and those a run must keep, hold the values of
    ``expected`` (the chapter's gpu budget, flattened)."""
    from ctxlib.checkpoints import plain

    for name, value in {**exercise.chapter_run, **exercise.fixed}.items():
        assert name in expected and plain(expected[name]) == plain(value), name


def assert_a_forged_history_earns_nothing(exercise, path, untrained, metric, claimed, capsys):
    """``untrained`` (a checkpoint blob with untrained weights) saved at ``path`` with a history
    that claims ``claimed`` for ``metric``: the check scores the weights, and fails."""
    untrained["state"]["history"]["evals"] = {metric: [claimed]}
    forge(path, untrained)
    message, failed = grade(exercise, path, capsys)
    side = "below" if exercise.higher_is_better else "above"
    assert failed and f"is {side} the target {exercise.target}" in message, message
