"""Where the code runs: the budget in effect, the device, and seeding.

Every notebook starts with one visible cell such as::

    cfg = ctxlib.budget(
        smoke=dict(steps=20, width=32),    # CI: about a minute on 2 CPU cores
        cpu=dict(steps=2000, width=128),   # a laptop: a few minutes, results worth reading
        gpu=dict(steps=5000, width=384),   # a Colab GPU: the full exercise
    )

The budget is ``CTXLIB_BUDGET`` when that environment variable is set, else ``gpu``
when CUDA is available, else ``cpu``.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

BUDGETS = ("smoke", "cpu", "gpu")
BUDGET_ENV = "CTXLIB_BUDGET"


class Settings(dict):
    """A dict whose keys can also be read as attributes: ``cfg.steps`` or ``cfg["steps"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"this budget has no setting {name!r}; it has: {', '.join(sorted(self))}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def current_budget() -> tuple[str, str]:
    """Return ``(name, reason)`` for the budget in effect, without printing anything."""
    chosen = os.environ.get(BUDGET_ENV, "").strip().lower()
    if chosen:
        if chosen not in BUDGETS:
            raise ValueError(
                f"{BUDGET_ENV}={os.environ[BUDGET_ENV]!r} is not a budget; "
                f"choose one of {', '.join(BUDGETS)} (or unset it to choose automatically)."
            )
        return chosen, f"set by {BUDGET_ENV}"
    if torch.cuda.is_available():
        return "gpu", "a CUDA GPU was found"
    return "cpu", f"no CUDA GPU found; set {BUDGET_ENV}=smoke|cpu|gpu to override"


def budget(*, smoke: Any, cpu: Any, gpu: Any, verbose: bool = True) -> Any:
    """Return the settings of the budget in effect (see the module docstring).

    Dicts come back as :class:`Settings`, so both ``cfg.steps`` and ``cfg["steps"]`` work.
    Prints one line saying which budget and why (the stored outputs of each notebook
    record it), and the device.

    When all three budgets are dicts they must have the same keys, whichever budget is in
    effect: a setting present only under ``cpu`` would otherwise make the ``gpu`` run crash
    hours in, while the quick smoke and cpu runs pass.
    """
    budgets = {"smoke": smoke, "cpu": cpu, "gpu": gpu}
    if all(isinstance(settings, dict) for settings in budgets.values()):
        # With three budgets, a key held by two of them is missing from the third ("lacks"),
        # and a key held by only one is more likely a leftover or a typo there ("has extra").
        problems = []
        for budget_name, settings in budgets.items():
            others = [set(s) for other, s in budgets.items() if other != budget_name]
            lacks = sorted(set.intersection(*others) - set(settings), key=str)
            extra = sorted(set(settings) - set.union(*others), key=str)
            if lacks:
                problems.append(f"budget {budget_name!r} lacks {', '.join(map(repr, lacks))}")
            if extra:
                problems.append(f"budget {budget_name!r} has extra {', '.join(map(repr, extra))}")
        if problems:
            raise ValueError(
                "the budgets must have the same settings: " + "; ".join(problems) + "."
            )
    name, reason = current_budget()
    chosen = budgets[name]
    if verbose:
        print(f"Budget: {name} ({reason}). Device: {describe_device()}.")
    small = small_data_settings()
    if small and isinstance(chosen, dict) and isinstance(smoke, dict):
        chosen = _with_smoke_data(chosen, smoke, small, verbose)
    if isinstance(chosen, dict):
        return Settings(chosen)
    return chosen


SMALL_DATA_ENV = "CTXLIB_SMALL_DATA"


def small_data_settings() -> list[str]:
    """``CTXLIB_SMALL_DATA`` in a code-path test (see ``code_path_test``), else nothing.

    A comma-separated list of settings that size data, evaluation or the protocol (batch
    sizes, pools, dev sets, validation batches, learning-curve sizes): a code-path test takes
    them from the smoke budget and everything else (every model's width, depth, context and
    vocabulary) from the budget in effect. The gpu budget's data sets are meant for a GPU;
    its models are what the test must build and step. ``sizes.valid_batches`` names a
    setting inside the dict ``sizes``. Ignored outside a code-path test, so that a real run
    never mixes budgets.
    """
    value = os.environ.get(SMALL_DATA_ENV, "")
    if not code_path_test():
        return []
    return [name.strip() for name in value.split(",") if name.strip()]


def _with_smoke_data(chosen: dict, smoke: dict, names: list[str], verbose: bool) -> dict:
    """``chosen`` with each named setting (``a`` or ``a.b``) replaced by the smoke budget's."""
    chosen = {key: dict(value) if isinstance(value, dict) else value
              for key, value in chosen.items()}
    for name in names:
        outer, _, key = name.rpartition(".")  # "sizes.valid_batches" or "ud_pool"
        target, source = (chosen.get(outer), smoke.get(outer)) if outer else (chosen, smoke)
        if not (isinstance(target, dict) and isinstance(source, dict)
                and key in target and key in source):
            raise ValueError(f"{SMALL_DATA_ENV} names {name!r}, which this budget lacks.")
        target[key] = source[key]
    if verbose:
        print(f"Code-path test: {', '.join(names)} from the smoke budget.")
    return chosen


def get_device(prefer: str | None = None) -> torch.device:
    """The device to train on: CUDA when available, else Apple's MPS, else the CPU.

    ``prefer`` ('cpu', 'cuda', 'mps') forces a choice; asking for a device that is not
    there is an error rather than a silent fall-back. With ``CTXLIB_CHECK_DEVICES=1`` (and no
    GPU) it is a simulated accelerator that raises, as a GPU would, when a tensor is left on
    the host (:mod:`ctxlib.devicecheck`): how the tests check code meant for a GPU on a CPU.
    """
    if prefer is None and os.environ.get("CTXLIB_CHECK_DEVICES") == "1" and not (
            torch.cuda.is_available()):
        from ctxlib import devicecheck

        return devicecheck.enable()
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError("device 'mps' was asked for but MPS is not available.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device | None = None) -> str:
    """A short human description of ``device`` (default: ``get_device()``), e.g.
    'cuda (Tesla T4)' or 'cpu (2 threads)': what a run's record and a results file show."""
    device = get_device() if device is None else torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        simulated = ", simulating an accelerator" if device.index is not None else ""
        return f"cpu ({torch.get_num_threads()} threads{simulated})"
    return device.type


@contextlib.contextmanager
def environment(**values: str):
    """Set environment variables for a ``with`` block (a kernel started inside inherits them),
    then put back what was there before, unset ones included."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def device_of(model: torch.nn.Module) -> torch.device:
    """The device a model's weights are on (that of its first parameter or buffer)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor in it moved to ``device``: a tensor, or tuples, lists and
    dicts of them (nested), as a data loader yields; anything else is returned as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return type(batch)({key: to_device(value, device) for key, value in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, NumPy, and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def progress(iterable=None, **kwargs):
    """A tqdm progress bar: a widget in Jupyter and Colab, plain text elsewhere.

    With ``CTXLIB_PROGRESS=text`` the bar is plain text everywhere: the notebooks' stored
    outputs (what the book shows) are made that way, since a widget cannot be shown in a
    static page. ``CTXLIB_PROGRESS=off`` turns bars off.
    """
    mode = os.environ.get("CTXLIB_PROGRESS", "auto").lower()
    if mode == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    if mode == "off":
        kwargs["disable"] = True
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", mode != "text")
    return tqdm(iterable, **kwargs)


def checkpoint_path(name: str, budget: str | None = None,
                    root: str | os.PathLike | None = None) -> str:
    """Where a notebook's run called ``name`` keeps its checkpoint, one folder per budget.

    ``checkpoints/<budget>/<name>.pt`` under ``root`` (default: ``CTXLIB_CHECKPOINTS``, else
    the current directory), for the budget the notebook runs under unless ``budget`` names
    one. A budget of its own means that a quick smoke run never resumes into a cpu run.
    In Colab, :func:`checkpoints_on_drive` points it at Google Drive, so checkpoints outlive a
    runtime reset.
    """
    root = Path(root or os.environ.get("CTXLIB_CHECKPOINTS") or ".")
    path = root / "checkpoints" / (budget or current_budget()[0]) / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


DRIVE = Path("/content/drive")  # where Colab mounts Google Drive


def checkpoints_on_drive(folder: str = "ctxlib") -> Path:
    """In Colab, keep checkpoints on Google Drive, so that they survive a runtime reset.

    Mounts Drive (Colab asks for permission once) and points ``CTXLIB_CHECKPOINTS`` at
    ``MyDrive/<folder>``: every ``checkpoint_path`` from then on lies there, and a rerun after
    a reset resumes from it. Elsewhere it changes nothing and says where checkpoints go.
    Returns the directory that holds the ``checkpoints/`` folder.
    """
    if not in_colab():
        root = Path(os.environ.get("CTXLIB_CHECKPOINTS") or ".")
        where = root / "checkpoints"
        shown = where if where.is_absolute() else f"./{where}"
        print(f"Not in Colab: checkpoints stay in {shown}, on this machine.")
        return root
    from google.colab import drive

    drive.mount(str(DRIVE))
    root = DRIVE / "MyDrive" / folder
    root.mkdir(parents=True, exist_ok=True)
    os.environ["CTXLIB_CHECKPOINTS"] = str(root)
    print(f"Checkpoints now go to Google Drive: {root / 'checkpoints'}.")
    return root


def max_steps_override() -> int | None:
    """``CTXLIB_MAX_STEPS``, if set: a cap on every training run.

    Tests set it to run a notebook's full-size (gpu) configuration for one step on a CPU, so
    that the gpu code path is exercised without the hours of training it is meant for; the GPU
    check (``scripts/gpu_check.py``) sets it to time a few steps of every loop.
    """
    value = os.environ.get("CTXLIB_MAX_STEPS")
    return int(value) if value else None


TIMING_RUN_ENV = "CTXLIB_TIMING_RUN"


def code_path_test() -> bool:
    """True in a code-path test: ``CTXLIB_MAX_STEPS`` caps every training loop, and the data
    sets, the protocol's seeds and sizes and the settings in ``CTXLIB_SMALL_DATA`` shrink too,
    so that a gpu budget's models run on a CPU in seconds.

    False in the GPU check's timing run (``CTXLIB_TIMING_RUN=1`` beside ``CTXLIB_MAX_STEPS``):
    it caps the loops but keeps every data set, seed and size, so that the work it times, and
    the steps each loop is asked for, are those of the real run.
    """
    return max_steps_override() is not None and not os.environ.get(TIMING_RUN_ENV)


TEST_RUN_ITEMS = 16  # how many items take() keeps in a code-path test run


def take(items, n: int | None):
    """The first ``n`` items of a list (all of them when ``n`` is None).

    In a code-path test (see ``code_path_test``) at most ``TEST_RUN_ITEMS``: the gpu
    configuration's full data sets are meant for a GPU, not for a one-step test on a CPU.
    """
    if code_path_test():
        n = TEST_RUN_ITEMS if n is None else min(n, TEST_RUN_ITEMS)
    return items if n is None else items[:n]


def in_colab() -> bool:
    """True inside Google Colab."""
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True
