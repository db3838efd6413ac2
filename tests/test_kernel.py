"""Running notebooks: the client finds a reply whose wake-up was lost, and runs a real kernel."""

import asyncio
import datetime
import time
from queue import Empty

import nbformat
import pytest

from ctxlib import kernel


class LostWakeupChannel:
    """A channel whose message arrives at ``arrives`` but whose wait is never woken for it:
    like a ZeroMQ socket that missed its edge, it notices only when its own timeout ends."""

    def __init__(self, arrives: float):
        self.arrives = time.monotonic() + arrives

    async def get_msg(self, timeout=None):
        assert timeout is not None, "an unbounded wait here would never end"
        await asyncio.sleep(timeout)
        if time.monotonic() >= self.arrives:
            sent = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
                seconds=time.monotonic() - self.arrives)
            return {"msg_type": "execute_reply", "header": {"date": sent}}
        raise Empty


def test_a_reply_whose_wakeup_was_lost_is_found_within_a_slice():
    missed = []
    channel = LostWakeupChannel(arrives=0.2)
    get_msg = kernel._in_slices(channel.get_msg, lambda: missed.append(1))
    start = time.monotonic()
    message = asyncio.run(asyncio.wait_for(get_msg(timeout=600), timeout=10))
    assert message["msg_type"] == "execute_reply"
    assert time.monotonic() - start < 3 * kernel.POLL_SLICE_SECONDS  # not after 600 s
    assert missed, "the late find was not counted as a lost wake-up"


def test_a_reply_that_woke_its_wait_is_not_counted_as_lost():
    async def fresh(timeout=None):
        await asyncio.sleep(0.05)
        return {"msg_type": "execute_reply",
                "header": {"date": datetime.datetime.now(datetime.timezone.utc)}}

    missed = []
    asyncio.run(kernel._in_slices(fresh, lambda: missed.append(1))(timeout=600))
    assert not missed


def test_a_sliced_wait_still_times_out_when_nothing_comes():
    get_msg = kernel._in_slices(LostWakeupChannel(arrives=1e9).get_msg, lambda: None)
    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(get_msg(timeout=0.3))
    assert 0.25 < time.monotonic() - start < 2


def test_the_client_runs_a_notebook_and_waits_in_slices(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(1.5)\nprint(6 * 7)")]
    client = kernel.notebook_client(nb, timeout=60, kernel_name="python3",
                                    resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for channel in (client.kc.shell_channel, client.kc.iopub_channel):
            assert channel.get_msg.__name__ == "get_msg_in_slices"
        client.execute_cell(nb.cells[0], 0)
    assert nb.cells[0].outputs[0]["text"] == "42\n"  # a cell longer than a slice
