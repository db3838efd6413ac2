"""Running a notebook in a Jupyter kernel: nbclient's ``NotebookClient``, made not to miss a reply.

The grader, the test suite and the scripts that store a book run all execute notebooks with
``notebook_client(nb, ...)``, which takes the same arguments as ``nbclient.NotebookClient``.

Why not ``NotebookClient`` itself: now and then it waits for a reply that has already arrived.
Its asyncio sockets learn of new messages from ZeroMQ's edge-triggered file descriptor, and a
wake-up can be lost (reported for nbclient and nbconvert, most often after a cell that opens a
widget, as chapter 2's explorer does). nbclient waits on the shell channel for the cell's whole
timeout, and when that timeout fires, its last check finds the reply that was there all along:
the cell "succeeds" ten minutes late. Asking in slices of a second bounds that loss: every slice
ends with a real poll of the socket, which sees a waiting message whether or not it was woken.
"""

from __future__ import annotations

import datetime
import time
import warnings
from queue import Empty

from nbclient import NotebookClient
from nbclient.util import run_sync

POLL_SLICE_SECONDS = 1.0


def _age_seconds(message: dict) -> float:
    """How long ago the kernel sent ``message`` (0 when its header has no date)."""
    sent = message.get("header", {}).get("date")
    if not isinstance(sent, datetime.datetime):
        return 0.0
    if sent.tzinfo is None:
        sent = sent.replace(tzinfo=datetime.timezone.utc)
    return (datetime.datetime.now(datetime.timezone.utc) - sent).total_seconds()


def _in_slices(get_msg, on_missed_wakeup):
    """Wrap a channel's ``get_msg(timeout)`` so that no single wait lasts over a slice."""

    async def get_msg_in_slices(timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE_SECONDS if deadline is None else deadline - time.monotonic()
            wait = max(0.0, min(POLL_SLICE_SECONDS, left))
            started = time.monotonic()
            try:
                message = await get_msg(timeout=wait)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            if time.monotonic() - started >= wait and _age_seconds(message) > wait / 2:
                on_missed_wakeup()  # it waited while we did: found by the slice's last poll
            return message

    return get_msg_in_slices


def _warn_missed_wakeup() -> None:
    """Say that a slice's last poll found a message no wake-up had announced: how often the
    lost wake-up happens shows in a run's warnings."""
    warnings.warn("a kernel message was waiting unnoticed (a lost wake-up); polling again "
                  "found it within a second", RuntimeWarning, stacklevel=2)


class _SlicedPollClient(NotebookClient):
    """A ``NotebookClient`` whose shell and IOPub channels wait in slices of a second."""

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = _in_slices(channel.get_msg, _warn_missed_wakeup)
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)  # setup_kernel's path


def notebook_client(nb, **options) -> NotebookClient:
    """An nbclient ``NotebookClient`` for ``nb`` (same options) that never misses a reply."""
    return _SlicedPollClient(nb, **options)
