"""The one training loop of the course.

    history = train(model, batches, loss_fn, TrainConfig(steps=2000, lr=3e-4), eval_fn=evaluate)

- ``batches(generator) -> batch`` draws one micro-batch using only ``generator``;
- ``loss_fn(model, batch) -> loss`` returns a scalar tensor (it moves the batch to the device);
- ``eval_fn(model) -> {"name": value}`` is called every ``eval_every`` steps and at the end.

What the loop does, in order, at each optimizer step: for each of ``grad_accum`` micro-batches,
forward and backward (in bf16/fp16 autocast on CUDA); clip the gradient norm; AdamW step; set
the learning rate of the next step (linear warmup, then cosine decay); log; evaluate; and
checkpoint. A checkpoint holds everything the next step depends on (weights, optimizer,
schedule, step, the data generator and every random number generator), so a run interrupted at
any point and restarted with the same call ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctxlib.runtime import get_device, max_steps_override, progress


@dataclass
class TrainConfig:
    """Every knob of training, in one place."""

    steps: int  # optimizer steps in total
    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 0.01  # AdamW decay, on matrices only (not biases, norms)
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0  # linear warmup from 0 to lr ...
    min_lr_ratio: float = 0.1  # ... then cosine decay down to min_lr_ratio * lr
    grad_clip: float | None = 1.0  # clip the global gradient norm (None: no clipping)
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_every: int = 0  # evaluate every N steps (0: only at the end)
    checkpoint_every: int = 0  # write a checkpoint every N steps (0: only at the end)
    checkpoint_path: str | None = None  # where (None: no checkpoints)
    mixed_precision: bool = True  # bf16 (or fp16 + loss scaling) autocast on CUDA
    compile: bool = False  # torch.compile the model (pays off on GPUs for long runs)
    seed: int = 0  # seed of the data generator
    progress: bool = True  # progress bar with the live loss

    def __post_init__(self):
        if self.steps < 1 or self.grad_accum < 1:
            raise ValueError("steps and grad_accum must be at least 1.")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be between 0 and steps ({self.steps}).")


@dataclass
class History:
    """What happened during training: per-step loss and learning rate, and evaluations."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each step
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> History:
        return cls(**{k: (dict(v) if k == "evals" else list(v)) for k, v in state.items()})

    def last_eval(self) -> dict[str, float]:
        return {name: values[-1] for name, values in self.evals.items()}


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps)
    progress_ratio = min(1.0, (step - config.warmup_steps) / decay_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress_ratio))  # 1 -> 0
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices and embeddings, none on biases and norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = all(p.is_cuda for p in params)  # one kernel for the whole update on a GPU
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused or None)


def train(
    model: torch.nn.Module,
    batches: Callable[[torch.Generator], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    config: TrainConfig,
    *,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    device: torch.device | str | None = None,
    resume: bool = True,
) -> History:
    """Train ``model`` for ``config.steps`` optimizer steps; see the module docstring."""
    config = _capped(config)
    device = torch.device(device) if device is not None else get_device()
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    use_amp = config.mixed_precision and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    # fp16 needs loss scaling so small gradients do not underflow; bf16 does not.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    forward_model = torch.compile(model) if config.compile and device.type == "cuda" else model
    data_generator = torch.Generator().manual_seed(config.seed)
    history = History()
    step = 0

    checkpoint = Path(config.checkpoint_path) if config.checkpoint_path else None
    if resume and checkpoint is not None and checkpoint.exists():
        step, history = load_checkpoint(checkpoint, model, optimizer, scaler, data_generator)
        print(f"Resuming from step {step} of {config.steps} ({checkpoint}).")
        if step >= config.steps:
            return history

    def save() -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, scaler, data_generator, step, history,
                            config)

    def evaluate() -> None:
        if eval_fn is None:
            return
        model.eval()
        # Evaluation may draw random numbers (e.g. random validation windows): fork the random
        # state so that training continues exactly as if it had not run.
        devices = [torch.cuda.current_device()] if device.type == "cuda" else []
        python_state, numpy_state = random.getstate(), np.random.get_state()
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            results = eval_fn(model)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        model.train()
        history.eval_steps.append(step)
        for name, value in results.items():
            history.evals.setdefault(name, []).append(float(value))

    bar = progress(total=config.steps, initial=step, desc="training", disable=not config.progress)
    smoothed = None
    try:
        while step < config.steps:
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config)
            loss_sum = 0.0
            for _ in range(config.grad_accum):
                batch = batches(data_generator)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss = loss_fn(forward_model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss is {loss.item()} at step {step + 1}: training diverged. "
                        "Try a lower learning rate (or more warmup steps)."
                    )
                # Each micro-batch contributes 1/grad_accum: the sum is the mean over all of them.
                scaler.scale(loss / config.grad_accum).backward()
                loss_sum += loss.item() / config.grad_accum
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            history.steps.append(step)
            history.loss.append(loss_sum)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.seconds.append(time.perf_counter() - start)
            smoothed = loss_sum if smoothed is None else 0.9 * smoothed + 0.1 * loss_sum
            bar.update()
            bar.set_postfix(loss=f"{smoothed:.3f}", refresh=False)
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                evaluate()
                bar.set_postfix(loss=f"{smoothed:.3f}", **_short(history.last_eval()), refresh=False)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save()
    except KeyboardInterrupt:
        # `step` and the saved state only advance together after a completed optimizer step,
        # so what is saved here is a consistent state at a step boundary.
        bar.close()
        if checkpoint is not None and history.steps and history.steps[-1] == step:
            save()
            print(f"Interrupted: saved step {step} to {checkpoint}; run the same call to resume.")
        raise
    bar.close()
    evaluate()
    save()
    return history


def _capped(config: TrainConfig) -> TrainConfig:
    cap = max_steps_override()
    if cap is None or config.steps <= cap:
        return config
    print(f"CTXLIB_MAX_STEPS={cap}: training stops after {cap} of {config.steps} steps "
          "(a test of the code path, not a real run).")
    return dataclasses.replace(config, steps=cap, warmup_steps=min(config.warmup_steps, cap))


def _short(results: dict[str, float]) -> dict[str, str]:
    return {name: f"{value:.3f}" for name, value in results.items()}


# --- Checkpoints ---------------------------------------------------------------------------------
# Saved with torch.save and read with torch.load(weights_only=True): only tensors, numbers,
# strings, lists and dicts, so loading a checkpoint can never run code.


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """What must match to resume: parameter names and shapes, and the model's config."""
    fingerprint = {"shapes": {n: list(p.shape) for n, p in model.state_dict().items()}}
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config):
        fingerprint["config"] = {k: _plain(v) for k, v in dataclasses.asdict(config).items()}
    return fingerprint


def _plain(value):
    """Config values as types that weights_only loading accepts."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def save_checkpoint(path, model, optimizer, scaler, data_generator, step, history, config):
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "data_generator": data_generator.get_state(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": _python_rng_state(),
            "numpy": _numpy_rng_state(),
        },
        "history": history.to_dict(),
        "fingerprint": model_fingerprint(model),
        "train_config": {k: _plain(v) for k, v in dataclasses.asdict(config).items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)  # atomic: a crash mid-write never leaves a broken checkpoint


def load_checkpoint(path, model, optimizer, scaler, data_generator) -> tuple[int, History]:
    """Restore everything from ``path``; returns the step reached and the history so far."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    _check_fingerprint(model_fingerprint(model), state["fingerprint"], path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    data_generator.set_state(state["data_generator"])
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    random.setstate(_to_python_rng_state(state["rng"]["python"]))
    np.random.set_state(_to_numpy_rng_state(state["rng"]["numpy"]))
    return state["step"], History.from_dict(state["history"])


def _check_fingerprint(ours: dict, saved: dict, path) -> None:
    advice = (f"Use another checkpoint_path, delete {path}, or pass resume=False to start "
              "from scratch.")
    for key in sorted(set(ours.get("config", {})) | set(saved.get("config", {}))):
        mine, theirs = ours.get("config", {}).get(key), saved.get("config", {}).get(key)
        if mine != theirs:
            raise ValueError(
                f"checkpoint {path} is of a different model: config field {key!r} is {theirs!r} "
                f"there and {mine!r} here. {advice}"
            )
    for name in sorted(set(ours["shapes"]) | set(saved["shapes"])):
        mine, theirs = ours["shapes"].get(name), saved["shapes"].get(name)
        if mine != theirs:
            raise ValueError(
                f"checkpoint {path} is of a different model: parameter {name!r} has shape "
                f"{theirs} there and {mine} here. {advice}"
            )


def _python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _to_python_rng_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _numpy_rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _to_numpy_rng_state(state: dict) -> tuple:
    keys = state["keys"].numpy().astype(np.uint32)
    return (state["kind"], keys, state["pos"], state["has_gauss"], state["cached"])
