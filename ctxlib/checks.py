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


# --- Chapter 1: from static to contextual -------------------------------------------------
# (chapter 1 checkers go here)


# --- Chapter 2: attention and the Transformer block ---------------------------------------
# (chapter 2 checkers go here)
