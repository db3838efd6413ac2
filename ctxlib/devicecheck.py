"""Catch a tensor left on the host without owning a GPU: a simulated accelerator on the CPU.

On a GPU, ``model(x)`` fails when the model is on ``cuda`` and ``x`` is still on the CPU;
on a laptop the same line works, so the mistake waits for the first student in Colab. With
``CTXLIB_CHECK_DEVICES=1``, :func:`ctxlib.get_device` returns :data:`SIMULATED`, a device
that computes on the CPU but keeps the GPU's rules:

- a tensor is *on the device* once it was moved there (``x.to(device)``, ``model.to(device)``,
  ``torch.zeros(..., device=device)``) or computed from a tensor on the device, and its
  ``.device`` says so; every other tensor is on the host;
- an operation that mixes the two raises, as CUDA does (a 0-dimensional host tensor may join,
  as CUDA allows; so may host indices and values in ``device_tensor[index] = value``);
- a host random generator cannot draw device tensors, and ``.numpy()`` of a device tensor
  raises: ``.cpu()`` first, as on a GPU.

The bookkeeping is a ``TorchFunctionMode`` (every torch call passes through it) plus a wrapper
of ``nn.Module.to``. The tests run every notebook's gpu path under it.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

# The simulated accelerator: the CPU with an index, so that it differs from torch.device("cpu").
SIMULATED = torch.device("cpu", 0)
_TAG = "_ctxlib_on_device"
_DEVICE_GET = torch.Tensor.device.__get__
_MOVES = {torch.Tensor.to, torch.Tensor.cpu}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}
_active: HostTensorCheck | None = None


def on_device(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is on the simulated accelerator."""
    return getattr(tensor, _TAG, False)


def _mark(tree, value: bool = True):
    """Tag every tensor in ``tree`` (a tensor, or tuples, lists, dicts of them); return it."""
    if isinstance(tree, torch.Tensor):
        setattr(tree, _TAG, value)
        return tree
    for leaf in tree_flatten(tree)[0]:
        if isinstance(leaf, torch.Tensor):
            setattr(leaf, _TAG, value)
    return tree


def _fail(func, detail: str):
    name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
    raise RuntimeError(
        f"Expected all tensors to be on the same device, but {name} got {detail} "
        f"(found on the simulated accelerator {SIMULATED}, CTXLIB_CHECK_DEVICES=1: on a GPU "
        "this line fails). Move the inputs to the model's device: x.to(device)."
    )


def _tensors(args, kwargs) -> list[torch.Tensor]:
    """The tensors among a call's arguments, and inside lists and tuples of them (as torch.cat,
    torch.stack and the optimizers' foreach functions take them). Cheaper than a full pytree
    walk: this runs for every torch call."""
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


class HostTensorCheck(TorchFunctionMode):
    """Compute on the CPU under the rules of a GPU (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _MOVES:
            return self._move(func, args, kwargs)
        tensors = _tensors(args, kwargs)
        device = [t for t in tensors if getattr(t, _TAG, False)]
        wanted = kwargs.get("device")
        if not device and wanted is None:  # all on the host: nothing to check or to mark
            if func == _DEVICE_GET:
                return func(*args)
            return func(*args, **kwargs)
        if func == _DEVICE_GET:
            return SIMULATED
        name = getattr(func, "__name__", "")
        if func is torch.Tensor.copy_:  # copies across devices, as CUDA does
            return func(*args, **kwargs)
        if name == "__set__":  # tensor.data = other: the tensor is now where other is
            result = func(*args, **kwargs)
            if getattr(func.__self__, "__name__", "") == "data":
                setattr(args[0], _TAG, on_device(args[1]))
            return result
        if func in _INDEXING and on_device(args[0]):
            # Host indices (and values) into a device tensor are allowed: CUDA copies them over.
            tensors = [args[0]]
        host = [t for t in tensors if not getattr(t, _TAG, False) and t.dim() > 0]
        internal = name.startswith("_") and not name.startswith("__")  # torch's own helpers
        if device and host and not internal:
            _fail(func, f"a tensor of shape {tuple(host[0].shape)} on the host (cpu) and one "
                        f"of shape {tuple(device[0].shape)} on the device")
        if device and func is torch.Tensor.numpy:
            _fail(func, "a tensor on the device: call .cpu() before .numpy()")
        asked_device = wanted is not None and torch.device(wanted) == SIMULATED
        to_device = bool(device) or asked_device
        if to_device and kwargs.get("generator") is not None:
            _fail(func, "a host random generator for a tensor on the device "
                        "(draw on the host, then move the result)")
        if asked_device:
            kwargs = {**kwargs, "device": "cpu"}
        result = func(*args, **kwargs)
        if to_device:
            _mark(result)
        return result

    @staticmethod
    def _move(func, args, kwargs):
        tensor = args[0]
        if func is torch.Tensor.cpu:
            target = torch.device("cpu")
        elif len(args) > 1 and isinstance(args[1], torch.Tensor):  # x.to(other): other's place
            target = SIMULATED if on_device(args[1]) else torch.device("cpu")
        else:
            # _parse_to reads device, dtype, non_blocking and memory_format; copy is .to's own
            where = {k: v for k, v in kwargs.items() if k != "copy"}
            target, *_ = torch._C._nn._parse_to(*args[1:], **where)
            if target is None:  # only a dtype: stays where it is
                result = func(*args, **kwargs)
                return _mark(result, on_device(tensor))
            if target.type != "cpu":
                raise RuntimeError(f"CTXLIB_CHECK_DEVICES=1 simulates {SIMULATED}; "
                                   f"there is no {target} here.")
            args = (tensor, *(a if not _is_device(a) else "cpu" for a in args[1:]))
            kwargs = {k: ("cpu" if k == "device" else v) for k, v in kwargs.items()}
        moving = on_device(tensor) != (target == SIMULATED)
        result = func(*args, **kwargs)
        if moving and result is tensor:  # a move makes a new tensor, as on a GPU
            result = tensor.clone()
        return _mark(result, target == SIMULATED)


def _is_device(value) -> bool:
    if isinstance(value, torch.device):
        return True
    if isinstance(value, str):
        try:
            torch.device(value)
        except RuntimeError:
            return False
        return True
    return False


def _module_to(original):
    @functools.wraps(original)
    def to(module, *args, **kwargs):
        target, *_ = torch._C._nn._parse_to(*args, **kwargs)
        result = original(module, *args, **kwargs)
        if target is not None:
            for tensor in [*module.parameters(), *module.buffers()]:
                setattr(tensor, _TAG, target == SIMULATED)
        return result

    return to


def _module_cpu(original):
    @functools.wraps(original)
    def cpu(module):
        result = original(module)
        for tensor in [*module.parameters(), *module.buffers()]:
            setattr(tensor, _TAG, False)
        return result

    return cpu


def _start() -> HostTensorCheck:
    mode = HostTensorCheck()
    mode.originals = (torch.nn.Module.to, torch.nn.Module.cpu)
    torch.nn.Module.to = _module_to(torch.nn.Module.to)
    torch.nn.Module.cpu = _module_cpu(torch.nn.Module.cpu)
    mode.__enter__()
    return mode


def _stop(mode: HostTensorCheck) -> None:
    mode.__exit__(None, None, None)
    torch.nn.Module.to, torch.nn.Module.cpu = mode.originals


def enable() -> torch.device:
    """Start simulating the accelerator for the rest of this process; returns its device."""
    global _active
    if _active is None:
        _active = _start()
    return SIMULATED


@contextlib.contextmanager
def simulated_accelerator():
    """Simulate the accelerator within a ``with`` block (for tests); yields its device."""
    if _active is not None:
        yield SIMULATED
        return
    mode = _start()
    try:
        yield SIMULATED
    finally:
        _stop(mode)
