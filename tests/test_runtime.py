import os
import random

import numpy as np
import pytest
import torch

import ctxlib
from ctxlib.runtime import Settings


def test_budget_from_environment(monkeypatch, capsys):
    monkeypatch.setenv("CTXLIB_BUDGET", "smoke")
    cfg = ctxlib.budget(smoke={"steps": 2}, cpu={"steps": 20}, gpu={"steps": 200})
    assert cfg.steps == 2 and cfg["steps"] == 2
    out = capsys.readouterr().out
    assert "Budget: smoke" in out and "CTXLIB_BUDGET" in out


def test_budget_defaults_to_cpu_without_cuda(monkeypatch, capsys):
    monkeypatch.delenv("CTXLIB_BUDGET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ctxlib.budget(smoke=1, cpu=2, gpu=3) == 2
    assert "Budget: cpu" in capsys.readouterr().out


def test_budget_defaults_to_gpu_with_cuda(monkeypatch):
    monkeypatch.delenv("CTXLIB_BUDGET", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ctxlib.current_budget()[0] == "gpu"


def test_misspelt_budget_lists_the_choices(monkeypatch):
    monkeypatch.setenv("CTXLIB_BUDGET", "smok")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        ctxlib.budget(smoke=1, cpu=2, gpu=3)


def test_settings_unknown_key_names_the_known_ones():
    cfg = Settings(steps=1, width=8)
    with pytest.raises(AttributeError, match="steps, width"):
        _ = cfg.depth


def test_seed_everything_makes_every_generator_repeat():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    ctxlib.seed_everything(123)
    first = draw()
    ctxlib.seed_everything(123)
    assert draw() == first
    ctxlib.seed_everything(124)
    assert draw() != first


def test_get_device_refuses_a_missing_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ctxlib.get_device().type in {"cpu", "mps"}
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        ctxlib.get_device("cuda")


def test_checkpoint_paths_are_separate_per_budget(monkeypatch, tmp_path):
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("CTXLIB_BUDGET", "smoke")
    smoke = ctxlib.checkpoint_path("gpt")
    monkeypatch.setenv("CTXLIB_BUDGET", "cpu")
    cpu = ctxlib.checkpoint_path("gpt")
    assert smoke != cpu and cpu == str(tmp_path / "checkpoints" / "cpu" / "gpt.pt")
    assert (tmp_path / "checkpoints" / "cpu").is_dir()


def test_take_keeps_the_first_items_and_shrinks_test_runs(monkeypatch):
    monkeypatch.delenv("CTXLIB_MAX_STEPS", raising=False)
    items = list(range(1000))
    assert ctxlib.take(items, 10) == items[:10]
    assert ctxlib.take(items, None) == items
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    assert ctxlib.take(items, None) == items[: ctxlib.runtime.TEST_RUN_ITEMS]
    assert ctxlib.take(items, 10) == items[: min(10, ctxlib.runtime.TEST_RUN_ITEMS)]


def test_budgets_with_different_keys_are_an_error_naming_them(monkeypatch):
    # Checked whatever the budget in effect: a key missing from gpu must fail in a smoke run.
    monkeypatch.setenv("CTXLIB_BUDGET", "smoke")
    with pytest.raises(ValueError) as error:
        ctxlib.budget(
            smoke={"steps": 2, "width": 8, "foo": 1},
            cpu={"steps": 20, "width": 64},
            gpu={"steps": 200},
            verbose=False,
        )
    message = str(error.value)
    assert "budget 'gpu' lacks 'width'" in message
    assert "budget 'smoke' has extra 'foo'" in message
    assert "'cpu'" not in message  # cpu has exactly the keys the others agree on
    # Non-dict budgets, and dicts with the same keys, are fine.
    assert ctxlib.budget(smoke=1, cpu={"a": 1}, gpu=None, verbose=False) == 1
    assert ctxlib.budget(smoke={"a": 1}, cpu={"a": 2}, gpu={"a": 3}, verbose=False).a == 1


def test_checkpoints_on_drive_mounts_drive_in_colab_and_points_checkpoints_there(
        monkeypatch, tmp_path, capsys):
    import sys
    import types

    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(ctxlib.runtime, "DRIVE", tmp_path / "drive")
    # setenv first: it records the variable's state, so monkeypatch undoes what
    # checkpoints_on_drive writes (a bare delenv of an unset variable records nothing,
    # and the Drive path then leaked into every later test and notebook kernel).
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", "unset-by-the-test")
    monkeypatch.delenv("CTXLIB_CHECKPOINTS")
    monkeypatch.setenv("CTXLIB_BUDGET", "cpu")

    root = ctxlib.checkpoints_on_drive()
    assert mounted == [str(tmp_path / "drive")]
    assert root == tmp_path / "drive" / "MyDrive" / "ctxlib" and root.is_dir()
    assert ctxlib.checkpoint_path("gpt").startswith(str(root / "checkpoints" / "cpu"))
    assert "Google Drive" in capsys.readouterr().out


def test_checkpoints_on_drive_changes_nothing_outside_colab(monkeypatch, capsys):
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", "unset-by-the-test")
    monkeypatch.delenv("CTXLIB_CHECKPOINTS")
    monkeypatch.setattr(ctxlib.runtime, "in_colab", lambda: False)
    ctxlib.checkpoints_on_drive()
    assert "CTXLIB_CHECKPOINTS" not in os.environ
    assert "Not in Colab: checkpoints stay in ./checkpoints" in capsys.readouterr().out


def test_a_code_path_test_takes_the_named_data_settings_from_smoke(monkeypatch, capsys):
    budgets = {
        "smoke": {"width": 8, "pool": 10, "sizes": {"context": 16, "valid_batches": 2}},
        "cpu": {"width": 64, "pool": 1000, "sizes": {"context": 64, "valid_batches": 10}},
        "gpu": {"width": 256, "pool": None, "sizes": {"context": 128, "valid_batches": 40}},
    }
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    monkeypatch.setenv("CTXLIB_SMALL_DATA", "pool, sizes.valid_batches")
    monkeypatch.delenv("CTXLIB_MAX_STEPS", raising=False)
    assert ctxlib.budget(**budgets, verbose=False) == budgets["gpu"]  # a real run: untouched
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    cfg = ctxlib.budget(**budgets)
    assert cfg == {"width": 256, "pool": 10, "sizes": {"context": 128, "valid_batches": 2}}
    assert budgets["gpu"]["sizes"]["valid_batches"] == 40  # the notebook's own dicts unchanged
    assert "Code-path test: pool, sizes.valid_batches from the smoke budget" in capsys.readouterr().out
    for unknown in ("poool", "sizes.depth", "width.x"):
        monkeypatch.setenv("CTXLIB_SMALL_DATA", unknown)
        with pytest.raises(ValueError, match=f"names '{unknown}', which this budget lacks"):
            ctxlib.budget(**budgets, verbose=False)


def test_the_drive_test_leaves_no_checkpoint_folder_behind():
    """Runs after the Drive tests in this file: the notebooks nbval runs later in the same
    process must not read or resume checkpoints from a test's temporary Drive."""
    assert "drive" not in os.environ.get("CTXLIB_CHECKPOINTS", "")
