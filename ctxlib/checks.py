"""Exercise checkers: each prints a pass, or a hint that helps without giving the answer away.

A checker raises :class:`ExerciseFailed` (an ``AssertionError``) when the answer is wrong, so a
failing check cell shows up red in the notebook and in graders such as nbgrader, and prints
``Correct!`` plus a short remark when it is right. Checkers are grouped by chapter below.
"""

from __future__ import annotations

import torch


class ExerciseFailed(AssertionError):
    """The answer does not pass the check; the message is a hint."""


def _fail(hint: str) -> None:
    raise ExerciseFailed(f"Not yet. Hint: {hint}")


def _passed(remark: str = "") -> None:
    print("Correct!" + (f" {remark}" if remark else ""))


def _expect_tensor(value, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        _fail(f"{name} should be a torch.Tensor, got {type(value).__name__}.")
    if shape is not None and tuple(value.shape) != tuple(shape):
        _fail(f"{name} should have shape {tuple(shape)}, got {tuple(value.shape)}.")
    return value


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> bool:
    return torch.allclose(actual.detach().float(), expected.detach().float(), atol=atol, rtol=1e-4)


# --- Chapter 0: setup --------------------------------------------------------------------


def check_sha256(digest, name: str) -> None:
    """Exercise 0.1: ``digest`` is the hex SHA-256 of the data set ``name``'s stored file."""
    import hashlib

    from ctxlib import data

    path = data.fetch(name)
    if not isinstance(digest, str):
        _fail("hashlib's .hexdigest() gives the checksum as a string of hex digits.")
    if digest != hashlib.sha256(path.read_bytes()).hexdigest():
        _fail("read the whole file as bytes (read_bytes()), not as text, and hash all of it.")
    _passed(f"{path.name} is intact.")


def check_pick_steps(pick_steps) -> None:
    """Exercise 0.2: ``pick_steps()`` follows CTXLIB_BUDGET."""
    import os

    expected = {"smoke": 10, "cpu": 100, "gpu": 1000}
    saved = os.environ.get("CTXLIB_BUDGET")
    try:
        for name, steps in expected.items():
            os.environ["CTXLIB_BUDGET"] = name
            got = pick_steps()
            if got != steps:
                _fail(f"under the {name!r} budget pick_steps() returned {got!r}, not {steps}.")
    finally:
        if saved is None:
            os.environ.pop("CTXLIB_BUDGET", None)
        else:
            os.environ["CTXLIB_BUDGET"] = saved
    _passed()


def check_resumed_history(history, expected_steps: int) -> None:
    """Exercise 0.3: the history of a run extended to ``expected_steps`` steps."""
    steps = history.to_dict()["steps"] if hasattr(history, "to_dict") else None
    if not steps:
        _fail("keep what train(...) returns: its History records every step.")
    if steps[-1] != expected_steps:
        _fail(f"the run ended at step {steps[-1]}, not {expected_steps}: pass a config with "
              "steps=2 * steps and the same checkpoint_path.")
    if steps[0] != 1:
        _fail("the history should start at step 1: resume from the checkpoint, not from scratch.")
    _passed("the history runs on without a gap.")


def check_gpu_speedup(speedup, target: float = 10) -> None:
    """Exercise 0.4: measured GPU/CPU matmul speed-up (None when there is no GPU)."""
    if speedup is None:
        if torch.cuda.is_available():
            _fail("a GPU is available here: measure the speed-up instead of returning None.")
        print("No GPU here: run this exercise in Colab with a GPU runtime to check it.")
        return
    if not speedup >= target:
        _fail(f"a speed-up of {speedup:.1f} is below {target}: use half precision on the GPU "
              "and a large matrix (4096), and synchronize before stopping the clock.")
    _passed(f"the GPU is {speedup:.0f} times faster here.")


# --- Chapter 1: from static to contextual -------------------------------------------------
# (chapter 1 checkers go here)


# --- Chapter 2: attention and the Transformer block ---------------------------------------
# (chapter 2 checkers go here)
