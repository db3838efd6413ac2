"""Resuming never loses a student's work and never silently reuses it.

The same call resumes exactly (after a crash, the stop button mid-step, a damaged file); a
changed call never resumes the old state; non-finite weights are never written.
"""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxlib.checkpoints import CheckpointError, CheckpointStore, checksum, differences
from ctxlib.train import InterruptsDeferred, load_weights, precision_plan, train
from tests.test_train import CONFIG, Crash, batches, crashing, fresh_model, loss_fn


def weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def reference_run(config=CONFIG, **kwargs):
    model = fresh_model()
    history = train(model, batches, loss_fn, dataclasses.replace(config, checkpoint_path=None),
                    device="cpu", **kwargs)
    return model, history


# --- A changed call starts a new run; the same call resumes -------------------------------------


def test_a_changed_learning_rate_starts_a_new_run_and_keeps_the_old(tmp_path, capsys):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    first = fresh_model()
    train(first, batches, loss_fn, config, device="cpu")

    changed = dataclasses.replace(config, lr=0.01)
    expected, expected_history = reference_run(changed)
    model = fresh_model()
    history = train(model, batches, loss_fn, changed, device="cpu")
    out = capsys.readouterr().out
    assert "Resuming" not in out and "train.lr: 0.05 -> 0.01" in out
    assert history.steps == list(range(1, 13)) and history.lr == expected_history.lr
    assert weights_equal(model, expected)
    kept = [p.name for p in tmp_path.glob("run.run-*.pt") if ".prev" not in p.name]
    assert len(kept) == 1, "the old run must be kept, not overwritten"

    # Putting the setting back finds the old, finished run.
    again = fresh_model(seed=9)
    history = train(again, crashing(0), loss_fn, config, device="cpu")
    assert "resuming it" in capsys.readouterr().out
    assert history.steps[-1] == 12 and weights_equal(again, first)


def test_more_steps_is_a_new_run_not_two_schedules_spliced(tmp_path):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    train(fresh_model(), batches, loss_fn, config, device="cpu")
    longer = dataclasses.replace(config, steps=24)
    expected, expected_history = reference_run(longer)
    model = fresh_model()
    history = train(model, batches, loss_fn, longer, device="cpu")
    assert history.lr == expected_history.lr and weights_equal(model, expected)


def test_changed_settings_or_model_start_a_new_run(tmp_path, capsys):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    train(fresh_model(), batches, loss_fn, config, device="cpu", settings={"batch_size": 8})
    history = train(fresh_model(), batches, loss_fn, config, device="cpu",
                    settings={"batch_size": 16})
    assert history.steps[0] == 1 and "settings.batch_size: 8 -> 16" in capsys.readouterr().out

    from tests.test_train import TinyConfig, TinyLM
    other = TinyLM(TinyConfig(width=10))
    history = train(other, batches, loss_fn, config, device="cpu", settings={"batch_size": 16})
    assert history.steps[0] == 1 and "model.config.width: 12 -> 10" in capsys.readouterr().out


def test_a_setting_only_one_run_has_reads_not_set_never_none(tmp_path, capsys):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    train(fresh_model(), batches, loss_fn, config, device="cpu",
          settings={"batch_size": 8, "warmup": None})
    train(fresh_model(), batches, loss_fn, config, device="cpu", settings={"steps": 3})
    said = capsys.readouterr().out
    assert "settings.batch_size: 8 -> (not set)" in said
    assert "settings.steps: (not set) -> 3" in said
    assert "settings.warmup: None -> (not set)" in said  # a None that was set stays None
    assert differences({"a": {"b": 1}}, {}) == ["a: {'b': 1} -> (not set)"]


def test_bookkeeping_fields_do_not_make_a_new_run(tmp_path, capsys):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    with pytest.raises(Crash):
        train(fresh_model(), crashing(6), loss_fn, config, device="cpu")
    watched = dataclasses.replace(config, progress=True, eval_every=5)
    model = fresh_model(seed=3)
    train(model, batches, loss_fn, watched, device="cpu", eval_fn=lambda m: {"x": 1.0})
    assert "Resuming from step 4" in capsys.readouterr().out
    assert weights_equal(model, reference_run()[0])


def test_resume_false_starts_over(tmp_path):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    train(fresh_model(), batches, loss_fn, config, device="cpu")
    model = fresh_model()
    history = train(model, batches, loss_fn, config, device="cpu", resume=False)
    assert history.steps == list(range(1, 13)) and weights_equal(model, reference_run()[0])


def test_history_records_the_run(tmp_path):
    _, history = reference_run(settings={"batch_size": 8})
    assert history.run["budget"] in ("smoke", "cpu", "gpu") and history.run["device"].startswith("cpu")
    assert history.run["config"]["lr"] == 0.05 and history.run["settings"] == {"batch_size": 8}
    assert len(history.run["id"]) == 10


# --- The stop button resumes exactly, wherever it is pressed -------------------------------------


def press_stop_in_batches(after):
    calls = {"n": 0}

    def draw(generator):
        batch = batches(generator)  # the generator has moved on when stop is pressed
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt
        return batch

    return draw


def press_stop_in_loss(after):
    calls = {"n": 0}

    def loss(model, batch):
        value = loss_fn(model, batch)  # dropout and Python's/NumPy's generators have moved on
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt
        return value

    return loss


def press_stop_in_eval(after):
    calls = {"n": 0}

    def evaluate(model):
        random.random()  # evaluation draws from the global generators too
        np.random.rand()
        torch.rand(3)
        calls["n"] += 1
        if calls["n"] == after:
            raise KeyboardInterrupt
        return {"score": 1.0}

    return evaluate


@pytest.mark.parametrize("where", ["batches", "loss", "eval"])
def test_the_stop_button_mid_step_resumes_exactly(tmp_path, capsys, where):
    config = dataclasses.replace(CONFIG, grad_accum=2, eval_every=3, checkpoint_every=0)
    evaluate = press_stop_in_eval(10**9)
    expected, expected_history = reference_run(config, eval_fn=evaluate)

    path = tmp_path / "run.pt"
    config = dataclasses.replace(config, checkpoint_path=str(path))
    draw, loss, evaluate = batches, loss_fn, press_stop_in_eval(10**9)
    if where == "batches":
        draw = press_stop_in_batches(12)  # the second micro-batch of step 6
    elif where == "loss":
        loss = press_stop_in_loss(12)
    else:
        evaluate = press_stop_in_eval(2)  # the evaluation after step 6
    model = fresh_model()
    with pytest.raises(KeyboardInterrupt):
        train(model, draw, loss, config, device="cpu", eval_fn=evaluate)
    assert model.training, "the model is left in training mode"
    saved = "saved step 6" if where == "eval" else "saved step 5"
    assert saved in capsys.readouterr().out

    resumed = fresh_model(seed=77)
    random.seed(5)
    history = train(resumed, batches, loss_fn, config, device="cpu",
                    eval_fn=press_stop_in_eval(10**9))
    assert weights_equal(resumed, expected)
    assert history.loss == expected_history.loss


def test_an_interrupt_during_the_update_waits_for_the_step_boundary():
    done = []
    with pytest.raises(KeyboardInterrupt), InterruptsDeferred():
        os.kill(os.getpid(), signal.SIGINT)  # the stop button, in the middle of the update
        done.append("the rest of the update")
    assert done == ["the rest of the update"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- Non-finite gradients are never applied, non-finite weights never written -------------------


class BadGradient(torch.autograd.Function):
    """Identity forward; backward returns infinity at the steps listed in ``bad``."""

    bad: frozenset[int] = frozenset()
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        BadGradient.calls += 1
        return grad * float("inf") if BadGradient.calls in BadGradient.bad else grad


def loss_with_bad_gradients(bad):
    BadGradient.bad, BadGradient.calls = frozenset(bad), 0

    def loss(model, batch):
        x, y = batch
        logits = BadGradient.apply(model(x))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

    return loss


def test_a_step_with_non_finite_gradients_is_skipped_not_applied(tmp_path):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    model = fresh_model()
    with pytest.warns(RuntimeWarning, match="gradient norm is (inf|nan).*skipped"):
        history = train(model, batches, loss_with_bad_gradients({3, 7}), config, device="cpu")
    assert history.skipped_steps == [3, 7] and history.steps[-1] == 12
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = torch.load(path, weights_only=True)["state"]
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_non_finite_gradients_in_a_row_stop_and_the_last_checkpoint_stays_good(tmp_path):
    path = tmp_path / "run.pt"
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    with warnings.catch_warnings(), pytest.raises(FloatingPointError, match="in a row"):
        warnings.simplefilter("ignore")
        train(fresh_model(), batches, loss_with_bad_gradients(range(6, 20)), config, device="cpu")
    state = torch.load(path, weights_only=True)["state"]
    assert state["step"] == 8
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_non_finite_weights_are_never_written(tmp_path):
    model = fresh_model()
    with torch.no_grad():
        model.out.weight[0, 0] = float("nan")
    store = CheckpointStore(tmp_path / "run.pt")
    with pytest.raises(FloatingPointError, match="'out.weight'"):
        store.save({}, {"model": model.state_dict()})
    assert not (tmp_path / "run.pt").exists()


# --- A damaged checkpoint is not a dead end --------------------------------------------------------


def crash_mid_run(path):
    config = dataclasses.replace(CONFIG, checkpoint_path=str(path))
    with pytest.raises(Crash):
        train(fresh_model(), crashing(9), loss_fn, config, device="cpu")  # checkpoints 4 and 8
    return config


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped byte"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    path = tmp_path / "run.pt"
    config = crash_mid_run(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        # Flip a byte inside the stored weights: the file still loads, the checksum tells.
        weights = torch.load(path, weights_only=True)["state"]["model"]["out.weight"]
        needle = weights.numpy().tobytes()[:16]
        at = data.index(needle) + 3
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    model = fresh_model(seed=1)
    with pytest.warns(UserWarning, match=r"run\.pt .*resuming from the previous checkpoint"):
        history = train(model, batches, loss_fn, config, device="cpu")
    assert history.steps == list(range(1, 13))
    assert weights_equal(model, reference_run()[0])


def test_no_usable_checkpoint_is_an_error_that_says_how_to_start_over(tmp_path):
    path = tmp_path / "run.pt"
    config = crash_mid_run(path)
    path.write_bytes(b"garbage")
    (tmp_path / "run.prev.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"run\.pt cannot be read.*run\.prev\.pt is empty"
                                              r".*resume=False"):
        train(fresh_model(), batches, loss_fn, config, device="cpu")
    assert train(fresh_model(), batches, loss_fn, config, device="cpu",
                 resume=False).steps[-1] == 12


def test_temporary_files_are_unique_and_stale_ones_are_cleaned(tmp_path, capsys):
    path = tmp_path / "run.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f"run.pt.{dead}-deadbeef.tmp"
    live = tmp_path / f"run.pt.{os.getppid()}-0badf00d.tmp"  # another kernel, still saving
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"half a checkpoint")
    # Where a single shared temporary name would sit: another kernel's file must not be used.
    (tmp_path / "run.pt.tmp").mkdir()
    train(fresh_model(), batches, loss_fn, dataclasses.replace(CONFIG, checkpoint_path=str(path)),
          device="cpu")
    assert not stale.exists() and live.exists() and "Removed" in capsys.readouterr().out
    assert CheckpointStore.read(path)["state"]["step"] == 12


def test_checkpoints_load_with_weights_only_and_carry_a_checksum(tmp_path):
    path = tmp_path / "run.pt"
    train(fresh_model(), batches, loss_fn, dataclasses.replace(CONFIG, checkpoint_path=str(path)),
          device="cpu")
    blob = torch.load(path, weights_only=True)
    assert blob["state"]["step"] == 12 and blob["sha256"] == checksum(blob["state"])
    model = fresh_model(seed=4)
    history = load_weights(path, model)
    assert history["steps"][-1] == 12 and weights_equal(model, reference_run()[0])
    # A finished run returns its history at once.
    again = train(fresh_model(), crashing(0), loss_fn,
                  dataclasses.replace(CONFIG, checkpoint_path=str(path)), device="cpu")
    assert again.steps[-1] == 12


# --- Precision on every GPU -------------------------------------------------------------------------


@pytest.mark.parametrize("capability, dtype, scaling", [
    ((7, 5), torch.float16, True),  # T4: bfloat16 only emulated, Triton unsupported
    ((8, 0), torch.bfloat16, False),  # A100
    ((9, 0), torch.bfloat16, False),  # H100
])
def test_precision_is_chosen_from_the_compute_capability(monkeypatch, capability, dtype, scaling):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # as on a T4
    plan = precision_plan(torch.device("cuda"), mixed_precision=True, compile=True)
    assert plan.dtype == dtype and plan.loss_scaling == scaling
    assert plan.compile == (capability[0] >= 8)
    assert precision_plan(torch.device("cpu"), compile=True).dtype is None


# --- Several processes under torchrun --------------------------------------------------------------

WORKER = Path(__file__).with_name("ddp_worker.py")


def torchrun(tmp_path, *args, processes=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={processes}", str(WORKER), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)


@pytest.mark.slow
def test_two_processes_train_like_one_with_twice_the_batch_and_resume_after_a_kill(tmp_path):
    from tests.ddp_worker import run_single

    single = run_single(tmp_path / "single.pt")

    done = torchrun(tmp_path, tmp_path / "ddp.pt", tmp_path / "ddp_ckpt.pt", 0)
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name, tensor in single.items():
        torch.testing.assert_close(parallel[name], tensor, rtol=1e-5, atol=1e-6)

    # Killed (no chance to save) after step 5, then restarted with the same command.
    killed = torchrun(tmp_path, tmp_path / "k.pt", tmp_path / "k_ckpt.pt", 5)
    assert killed.returncode != 0 and not (tmp_path / "k.pt").exists()
    restarted = torchrun(tmp_path, tmp_path / "k.pt", tmp_path / "k_ckpt.pt", 0)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "Resuming from step 4" in restarted.stdout
    resumed = torch.load(tmp_path / "k.pt", weights_only=True)
    for name, tensor in parallel.items():
        assert torch.equal(resumed[name], tensor), name


def test_a_checkpoint_of_the_earlier_format_is_kept_aside_not_resumed(tmp_path, capsys):
    path = tmp_path / "run.pt"
    torch.save({"step": 4, "model": fresh_model().state_dict()}, path)  # no identity, no checksum
    model = fresh_model()
    history = train(model, batches, loss_fn, dataclasses.replace(CONFIG, checkpoint_path=str(path)),
                    device="cpu")
    assert history.steps[0] == 1 and "Starting a new run" in capsys.readouterr().out
    assert weights_equal(model, reference_run()[0])
    assert len([p for p in tmp_path.glob("run.run-*.pt") if ".prev" not in p.name]) == 1
