"""One process of a data-parallel test run, launched by torchrun from tests/test_resume.py.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT CHECKPOINT KILL_AFTER_STEP

Trains the tiny model of tests/test_train.py with micro-batches of 4 on every process; process 0
writes the final weights to OUT. With KILL_AFTER_STEP > 0 every process dies without warning
(os._exit) when it starts the step after that one.
"""

import dataclasses
import os
import sys

import torch

from ctxlib.train import train
from tests.test_train import CONFIG, VOCAB, fresh_model, loss_fn

BATCH = 4
CONFIG_DDP = dataclasses.replace(CONFIG, checkpoint_every=4)


def small_batches(generator):
    x = torch.randint(0, VOCAB, (BATCH, 6), generator=generator)
    return x, (x + 3) % VOCAB


def model_without_dropout():
    model = fresh_model()
    model.drop.p = 0.0  # processes have their own dropout masks; without dropout, all agree
    return model


def run_single(out):
    """The same run in one process, with batches of 2 * BATCH (two draws, concatenated)."""

    def double(generator):
        (x1, y1), (x2, y2) = small_batches(generator), small_batches(generator)
        return torch.cat([x1, x2]), torch.cat([y1, y2])

    model = model_without_dropout()
    train(model, double, loss_fn, CONFIG_DDP, device="cpu")
    return model.state_dict()


def main(out, checkpoint, kill_after_step):
    world_size = int(os.environ["WORLD_SIZE"])
    drawn = 0

    def draw(generator):
        nonlocal drawn
        drawn += 1
        if kill_after_step and drawn > kill_after_step * world_size:
            os._exit(1)  # killed: nothing is saved
        return small_batches(generator)

    model = model_without_dropout()
    config = dataclasses.replace(CONFIG_DDP, checkpoint_path=checkpoint)
    train(model, draw, loss_fn, config, device="cpu")
    if int(os.environ["RANK"]) == 0:
        torch.save(model.state_dict(), out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
