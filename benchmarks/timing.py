"""The one timed training step of the benchmarks (forward, backward, optimizer step)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch


def time_steps(batches: Iterable[Any], loss_of: Callable[[Any], torch.Tensor],
               optimizer: torch.optim.Optimizer) -> list[float]:
    """Seconds of each training step over ``batches``: ``loss_of(batch)``, its backward pass,
    and ``optimizer``'s step."""
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        loss_of(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    return seconds
