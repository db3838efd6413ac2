"""The training loop: schedule, accumulation, exact resume after a crash or an interrupt."""

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from ctxlib.train import TrainConfig, lr_at, train

VOCAB = 16


@dataclass
class TinyConfig:
    vocab: int = VOCAB
    width: int = 12


class TinyLM(torch.nn.Module):
    """Embedding -> dropout -> linear: dropout makes the global random state matter."""

    def __init__(self, config=None):
        super().__init__()
        self.config = config = config or TinyConfig()
        self.embed = torch.nn.Embedding(config.vocab, config.width)
        self.drop = torch.nn.Dropout(0.2)
        self.out = torch.nn.Linear(config.width, config.vocab)

    def forward(self, x):
        return self.out(self.drop(self.embed(x)))


def batches(generator):
    """A learnable rule: the next token is (token + 3) mod VOCAB."""
    x = torch.randint(0, VOCAB, (8, 6), generator=generator)
    return x, (x + 3) % VOCAB


def loss_fn(model, batch):
    x, y = batch
    # Also draw from Python's and NumPy's generators, so their states must be restored too.
    noise = 1e-3 * (random.random() + float(np.random.rand()))
    return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()) + noise


def fresh_model(seed=0):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return TinyLM()


CONFIG = TrainConfig(steps=12, lr=0.05, warmup_steps=3, progress=False, checkpoint_every=4)


class Crash(Exception):
    pass


def crashing(after_calls):
    calls = {"n": 0}

    def draw(generator):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Crash  # the process dies: no chance to save anything
        return batches(generator)

    return draw


def test_loss_goes_down():
    history = train(fresh_model(), batches, loss_fn, dataclasses.replace(CONFIG, steps=60,
                    checkpoint_every=0), device="cpu")
    assert np.mean(history.loss[-5:]) < 0.5 * np.mean(history.loss[:5])


def test_learning_rate_schedule_follows_the_formula():
    config = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(10, config) == pytest.approx(1.0)
    halfway = 10 + 45
    assert lr_at(halfway, config) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_at(100, config) == pytest.approx(0.1)
    history = train(fresh_model(), batches, loss_fn, dataclasses.replace(config, progress=False),
                    device="cpu")
    assert history.lr == pytest.approx([lr_at(s, config) for s in range(100)])


@pytest.mark.parametrize("crash_after", [5, 9])
def test_resume_after_a_crash_gives_exactly_the_uninterrupted_weights(tmp_path, crash_after):
    reference = fresh_model()
    expected = train(reference, batches, loss_fn, CONFIG, device="cpu")

    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    with pytest.raises(Crash):
        train(fresh_model(), crashing(crash_after), loss_fn, config, device="cpu")
    assert path.exists()

    resumed = fresh_model(seed=123)  # a different start: the checkpoint must override it
    random.seed(7)  # and scrambled global generators
    history = train(resumed, batches, loss_fn, config, device="cpu")
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert history.loss == expected.loss and history.steps == list(range(1, 13))


def test_gradient_accumulation_equals_one_big_batch():
    def big(generator):
        x = torch.randint(0, VOCAB, (8, 6), generator=generator)
        return x, (x + 3) % VOCAB

    halves = {}

    def half(generator):
        # Two micro-batches of 4 that together are the same 8 rows as `big` draws.
        if not halves.get("rest"):
            x, y = big(generator)
            halves["rest"] = (x[4:], y[4:])
            return x[:4], y[:4]
        rest, halves["rest"] = halves["rest"], None
        return rest

    def plain_loss(model, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    config = TrainConfig(steps=5, lr=0.05, progress=False, grad_clip=None)
    one = fresh_model().eval()
    one.drop.p = 0.0
    two = fresh_model()
    two.drop.p = 0.0
    train(one, big, plain_loss, config, device="cpu")
    train(two, half, plain_loss, dataclasses.replace(config, grad_accum=2), device="cpu")
    for a, b in zip(one.parameters(), two.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_evaluation_does_not_change_training():
    def noisy_eval(model):
        torch.rand(100)
        random.random()
        return {"valid_loss": loss_fn(model, batches(torch.Generator().manual_seed(1))).item()}

    config = dataclasses.replace(CONFIG, checkpoint_every=0)
    plain = fresh_model()
    train(plain, batches, loss_fn, config, device="cpu")
    evaluated = fresh_model()
    history = train(evaluated, batches, loss_fn, dataclasses.replace(config, eval_every=3),
                    eval_fn=noisy_eval, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), evaluated.parameters()))
    assert history.eval_steps == [3, 6, 9, 12] and len(history.evals["valid_loss"]) == 4
    assert evaluated.training


def test_a_diverging_loss_stops_with_advice():
    def nan_loss(model, batch):
        return model(batch[0]).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="lower learning rate"):
        train(fresh_model(), batches, nan_loss, CONFIG, device="cpu")


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="at least 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=5, warmup_steps=6)


def test_an_enclosing_autocast_is_refused_with_how_precision_is_chosen():
    """Under a user's autocast the loop's evaluations read stale low-precision weight copies;
    train() chooses precision itself, so it says so instead."""
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(
            RuntimeError, match="chooses precision itself"):
        train(fresh_model(), batches, loss_fn, TrainConfig(steps=2, lr=0.1, progress=False))
    train(fresh_model(), batches, loss_fn, TrainConfig(steps=2, lr=0.1, progress=False))
