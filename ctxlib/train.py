"""The one training loop of the course.

    history = train(model, batches, loss_fn, TrainConfig(steps=2000, lr=3e-4), eval_fn=evaluate)

- ``batches(generator) -> batch`` draws one micro-batch using only ``generator``;
- ``loss_fn(model, batch) -> loss`` returns a scalar tensor; the loop has moved every tensor
  of the batch (tuples, lists, dicts of them) to the model's device, as Lightning does;
- ``eval_fn(model) -> {"name": value}`` is called every ``eval_every`` steps and at the end.

What the loop does, in order, at each optimizer step: for each of ``grad_accum`` micro-batches,
forward and backward (in bf16 or fp16 autocast on CUDA, see :func:`precision_plan`); check the
gradient norm (a step whose gradients are NaN or infinite is skipped, never applied); clip it;
AdamW step; set the learning rate of the next step (linear warmup, then cosine decay); log;
evaluate; checkpoint.

Resuming. A checkpoint holds everything the next step depends on (weights, optimizer,
schedule, step, the data generator and every random number generator), taken at a step
boundary, so a run interrupted at any point (a crash, a disconnect, the stop button) and
restarted with **the same call** ends with exactly the weights of an uninterrupted one. A call
with **different settings** (any field of the config but the bookkeeping ones, the model's
config, or the ``settings`` passed to ``train``) never resumes the old state: it starts a new
run and keeps the old one's checkpoint (see :mod:`ctxlib.checkpoints`).

Several GPUs. Under ``torchrun --nproc_per_node=N``, the same call trains data-parallel: each
process draws its own micro-batches, gradients are averaged across processes after each
backward pass, process 0 writes the checkpoints, and every process resumes from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctxlib.checkpoints import CheckpointStore, find_run, model_fingerprint, plain, run_id
from ctxlib.runtime import (
    current_budget,
    describe_device,
    get_device,
    max_steps_override,
    progress,
    to_device,
)

MAX_SKIPPED_IN_A_ROW = 5  # this many non-finite gradient steps in a row stop the run


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
    grad_accum: int = 1  # micro-batches per optimizer step (per process under torchrun)
    eval_every: int = 0  # evaluate every N steps (0: only at the end)
    checkpoint_every: int = 0  # write a checkpoint every N steps (0: only at the end)
    checkpoint_path: str | None = None  # where (None: no checkpoints)
    mixed_precision: bool = True  # bf16 (or fp16 + loss scaling) autocast on CUDA
    compile: bool = False  # torch.compile the model (pays off on GPUs for long runs)
    seed: int = 0  # seed of the data generator
    progress: bool = True  # progress bar with the live loss

    # Fields that change how a run is watched or stored, not what it computes: a checkpoint
    # written with other values of these is still the same run.
    BOOKKEEPING = ("eval_every", "checkpoint_every", "checkpoint_path", "compile", "progress")

    def __post_init__(self):
        if self.steps < 1 or self.grad_accum < 1:
            raise ValueError("steps and grad_accum must be at least 1.")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be between 0 and steps ({self.steps}).")


@dataclass
class History:
    """What happened during training: per-step loss and learning rate, and evaluations.

    ``run`` records what produced it (budget, device, processes, configuration, run id), so
    that a result can be traced to the run it came from.
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each step
    eval_steps: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    skipped_steps: list[int] = field(default_factory=list)  # steps with non-finite gradients
    run: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> History:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (dict(v) if isinstance(v, dict) else list(v))
                      for k, v in state.items() if k in known})

    def last_eval(self) -> dict[str, float]:
        return {name: values[-1] for name, values in self.evals.items()}


def mean_tokens_per_step(batches: Callable[[torch.Generator], Any],
                         tokens_in: Callable[[Any], int], samples: int = 20) -> float:
    """Tokens (padding not counted) in one batch of ``batches``, the mean over ``samples``
    batches drawn from a generator seeded 0: what "tokens per step" means when batches vary."""
    generator = torch.Generator().manual_seed(0)
    return sum(tokens_in(batches(generator)) for _ in range(samples)) / samples


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


@dataclass(frozen=True)
class PrecisionPlan:
    """How a device trains: autocast dtype (None: float32), loss scaling, torch.compile."""

    dtype: torch.dtype | None
    loss_scaling: bool
    compile: bool
    reason: str


def precision_plan(device: torch.device, mixed_precision: bool = True,
                   compile: bool = False) -> PrecisionPlan:
    """Choose mixed precision and compilation for ``device``.

    bfloat16 needs no loss scaling and is fast on GPUs of compute capability 8.0 and above
    (A100, L4, H100, RTX 30xx and later). Older GPUs such as Colab's T4 (7.5) train in float16
    with loss scaling, and without ``torch.compile``, whose Triton kernels need 8.0 or above
    here. ``torch.cuda.is_bf16_supported()`` is no guide: it says True on a T4, where bfloat16
    is emulated and slow, so the decision is made from the compute capability.
    """
    if device.type != "cuda":
        return PrecisionPlan(None, False, False, "float32 (mixed precision is for CUDA GPUs)")
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8:
        dtype = torch.bfloat16 if mixed_precision else None
        return PrecisionPlan(dtype, False, compile, f"compute capability {major}.{minor}: "
                             + ("bfloat16 autocast" if mixed_precision else "float32"))
    dtype = torch.float16 if mixed_precision else None
    return PrecisionPlan(dtype, mixed_precision, False, f"compute capability {major}.{minor}: "
                         + ("float16 autocast with loss scaling" if mixed_precision else "float32")
                         + ("; torch.compile off (needs 8.0+)" if compile else ""))


def train(
    model: torch.nn.Module,
    batches: Callable[[torch.Generator], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    config: TrainConfig,
    *,
    eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    device: torch.device | str | None = None,
    resume: bool = True,
    settings: dict[str, Any] | None = None,
) -> History:
    """Train ``model`` for ``config.steps`` optimizer steps; see the module docstring.

    ``settings``: anything else the run depends on that the loop cannot see, such as the batch
    size or the data (a notebook passes its budget's settings). It is part of the run's
    identity: changing it starts a new run instead of resuming the old one.
    ``resume=False`` deletes this path's checkpoints and starts over.
    """
    _refuse_enclosing_autocast()
    run = _Run(model, config, device, settings)
    if run.resume(resume):
        return run.history  # that run had already finished
    config = run.config
    bar = progress(total=config.steps, initial=run.step, desc="training",
                   disable=not (config.progress and run.is_main))
    smoothed, skipped_in_a_row = None, 0
    try:
        while run.step < config.steps:
            start = time.perf_counter()
            loss, grad_norm = run.forward_backward(batches, loss_fn)  # the learning
            finite = run.update(loss, grad_norm, start)
            skipped_in_a_row = 0 if finite else skipped_in_a_row + 1
            if not finite and not run.scaler.is_enabled():
                _warn_skipped(run.step, grad_norm, skipped_in_a_row,
                              len(run.history.skipped_steps))
            smoothed = loss if smoothed is None else 0.9 * smoothed + 0.1 * loss
            bar.update()
            bar.set_postfix(loss=f"{smoothed:.3f}", refresh=False)
            if _due(config.eval_every, run.step, config.steps):
                run.evaluate(eval_fn)
                bar.set_postfix(loss=f"{smoothed:.3f}", **_short(run.history.last_eval()),
                                refresh=False)
            if _due(config.checkpoint_every, run.step, config.steps):
                run.save()  # (the last step's checkpoint follows its evaluation, below)
    except KeyboardInterrupt:
        bar.close()
        run.save_interrupted()
        raise
    bar.close()
    run.evaluate(eval_fn)
    run.save()
    run.log()
    return run.history


def _due(every: int, step: int, steps: int) -> bool:
    """Whether a periodic evaluation or checkpoint falls on ``step`` (before the last one)."""
    return bool(every) and step % every == 0 and step < steps


def _refuse_enclosing_autocast() -> None:
    for kind in ("cpu", "cuda"):
        if torch.is_autocast_enabled(kind):
            raise RuntimeError(
                f"train() was called inside torch.autocast('{kind}'): it chooses precision "
                "itself (TrainConfig.mixed_precision; precision_plan picks bfloat16 or float16 "
                "for the GPU), and an enclosing autocast would keep stale low-precision copies "
                "of the weights. Call train() outside the autocast block.")


class _Run:
    """One call of :func:`train`: the model and its optimizer, the run's identity and record,
    where it stands (``step``), and the bookkeeping around the loop, one method each."""

    def __init__(self, model: torch.nn.Module, config: TrainConfig, device, settings):
        """Where the run trains (each process its own device under torchrun), its optimizer
        and precision, its identity (what a checkpoint must match to be resumed) and record."""
        self.asked_steps = config.steps
        self.config = config = _capped(config)
        self.rank, self.world_size = _distributed()
        self.is_main = self.rank == 0
        self.say = print if self.is_main else _quiet
        self.device = _training_device(device, self.rank, self.world_size)
        self.model = model.to(self.device).train()
        self.optimizer = make_optimizer(model, config)
        self.plan = precision_plan(self.device, config.mixed_precision, config.compile)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.plan.loss_scaling)
        self.forward_model = torch.compile(model) if self.plan.compile else model
        self.data_generator = torch.Generator().manual_seed(config.seed)
        self.identity = {"train": {k: plain(v) for k, v in dataclasses.asdict(config).items()
                                   if k not in TrainConfig.BOOKKEEPING},
                         "model": model_fingerprint(model), "settings": plain(settings or {}),
                         "processes": self.world_size}
        self.history = History(run={
            "id": run_id(self.identity), "budget": current_budget()[0],
            "device": describe_device(self.device),
            "capped_by": config.steps if config.steps < self.asked_steps else None,
            "processes": self.world_size, "precision": self.plan.reason,
            "config": plain(dataclasses.asdict(config)), "settings": plain(settings or {})})
        self.step = self.first_step = 0
        self.store = CheckpointStore(config.checkpoint_path) if config.checkpoint_path else None
        # The state of every random generator at the last step boundary: what a checkpoint
        # saves, whenever it is written (an interrupt mid-step must not save a half-drawn state).
        self.boundary: dict[str, Any] = {}

    def resume(self, resume: bool) -> bool:
        """Pick up this run's checkpoint if there is one (process 0 finds it, every process
        loads it); True when that run had already finished."""
        if self.store is not None:
            blob = find_run(self.store, self.identity, resume, self.say) if self.is_main else None
            blob = _share(blob, self.rank, self.world_size)
            if blob is not None:
                self.step, self.history = _restore(blob["state"], self.model, self.optimizer,
                                                   self.scaler, self.data_generator, self.rank)
                self.say(f"Resuming from step {self.step} of {self.config.steps} "
                         f"({self.store.latest}).")
                if self.step >= self.config.steps:
                    return True
        if self.world_size > 1:
            _broadcast_parameters(self.model)
        self.boundary = _random_state(self.data_generator)
        self.first_step = self.step
        return False

    def forward_backward(self, batches, loss_fn) -> tuple[float, torch.Tensor]:
        """The learning: this step's learning rate, forward and backward over ``grad_accum``
        micro-batches (averaged across processes), gradients unscaled and clipped. Returns
        (the loss, the gradient norm before clipping)."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, config)
        loss_sum = 0.0
        for _ in range(config.grad_accum):
            batch = to_device(_draw(batches, self.data_generator, self.rank, self.world_size),
                              self.device)
            with torch.autocast(self.device.type, dtype=self.plan.dtype or torch.float32,
                                enabled=self.plan.dtype is not None):
                loss = loss_fn(self.forward_model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss is {loss.item()} at step {self.step + 1}: training diverged. "
                    "Try a lower learning rate (or more warmup steps)."
                )
            # Each micro-batch contributes 1/grad_accum: the sum is the mean over all of them.
            self.scaler.scale(loss / config.grad_accum).backward()
            loss_sum += loss.item() / config.grad_accum
        if self.world_size > 1:
            loss_sum = _average_gradients(self.model, loss_sum, self.world_size)
        self.scaler.unscale_(self.optimizer)
        return loss_sum, _gradient_norm(self.model, config.grad_clip)

    def update(self, loss: float, grad_norm: torch.Tensor, started: float) -> bool:
        """The AdamW step (skipped when the gradients are not finite) and its record, together
        or not at all: an interrupt waits until both are done. True when it was applied."""
        finite = bool(torch.isfinite(grad_norm))
        with InterruptsDeferred():
            if finite or self.scaler.is_enabled():  # fp16 loss scaling skips inf steps itself
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.history.steps.append(self.step)
            self.history.loss.append(loss)
            self.history.lr.append(self.optimizer.param_groups[0]["lr"])
            self.history.seconds.append(time.perf_counter() - started)
            if not finite:
                self.history.skipped_steps.append(self.step)
            self.boundary = _random_state(self.data_generator)
        return finite

    def evaluate(self, eval_fn) -> None:
        """Record ``eval_fn(model)`` at this step, in eval mode and without gradients."""
        if eval_fn is None:
            return
        self.model.eval()
        # Evaluation may draw random numbers (e.g. random validation windows): fork the random
        # state so that training continues exactly as if it had not run.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                results = eval_fn(self.model)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            self.model.train()
        self.history.eval_steps.append(self.step)
        for name, value in results.items():
            self.history.evals.setdefault(name, []).append(float(value))

    def save(self) -> None:
        """Checkpoint the last completed step: process 0 writes it, with every process's
        random state (each resumes its own)."""
        if self.store is None:
            return
        states = _gather(_storable(self.boundary), self.world_size)
        if self.is_main:
            self.store.save(self.identity, {
                "step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "random": states, "history": self.history.to_dict()})

    def save_interrupted(self) -> None:
        """After the stop button: save the last completed step (one process), and say how to
        go on."""
        self.model.train()
        if self.store is not None and self.world_size == 1:
            self.save()  # the weights and `boundary` both belong to the last completed step
            self.say(f"Interrupted: saved step {self.step} to {self.store.latest}; run the same "
                     "call to resume.")
        elif self.store is not None:
            self.say("Interrupted: under torchrun the last periodic checkpoint is what resumes.")

    def log(self) -> None:
        """One line about this call in ``CTXLIB_RUN_LOG``, when it is set (the GPU check)."""
        if self.is_main and os.environ.get(RUN_LOG_ENV):
            _log_run(os.environ[RUN_LOG_ENV], self.model, self.history, self.asked_steps,
                     self.first_step, self.device)


RUN_LOG_ENV = "CTXLIB_RUN_LOG"


def _log_run(path: str, model, history: History, asked_steps: int, first_step: int,
             device: torch.device) -> None:
    """Append one line of JSON about this call to ``path`` (``CTXLIB_RUN_LOG``): the steps it
    was asked for and ran, each step's seconds, its losses and the peak GPU memory.
    ``scripts/gpu_check.py`` projects a notebook's whole time from these lines."""
    record = {"asked_steps": asked_steps, "steps_run": len(history.seconds) - first_step,
              "seconds": history.seconds[first_step:], "loss": history.loss[first_step:],
              "parameters": sum(p.numel() for p in model.parameters()),
              "device": describe_device(device),
              "peak_memory_bytes": torch.cuda.max_memory_allocated(device)
              if device.type == "cuda" else None}
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


# --- Resuming ------------------------------------------------------------------------------------


def _restore(state: dict, model, optimizer, scaler, data_generator, rank: int):
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    _set_random_state(state["random"][rank], data_generator)
    return state["step"], History.from_dict(state["history"])


def _random_state(data_generator: torch.Generator) -> dict[str, Any]:
    """Every generator's state, taken at each step boundary (cheap: converted only when saved)."""
    return {
        "data_generator": data_generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }


def _storable(state: dict[str, Any]) -> dict[str, Any]:
    """A random state as types that ``weights_only`` loading accepts."""
    version, internal, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    return {**state, "python": [version, list(internal), gauss],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}


def _set_random_state(state: dict[str, Any], data_generator: torch.Generator) -> None:
    data_generator.set_state(state["data_generator"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached"]))


class InterruptsDeferred:
    """Hold back the stop button (SIGINT) until the block is done, then raise it.

    The optimizer step, the step counter, the history and the saved random state must move
    together; an interrupt between them would leave a checkpoint that is not at a step boundary.
    """

    def __enter__(self):
        self.pending, self.previous = False, None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame):
        self.pending = True

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.pending and exc_info[0] is None:
            raise KeyboardInterrupt


# --- Gradients -----------------------------------------------------------------------------------


def _gradient_norm(model: torch.nn.Module, clip: float | None) -> torch.Tensor:
    """The global gradient norm (before clipping), clipping to ``clip`` when it is set."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))


def _warn_skipped(step: int, grad_norm: torch.Tensor, in_a_row: int, total: int) -> None:
    message = (f"step {step}: the loss is finite but the gradient norm is {grad_norm.item()}; "
               f"the step was skipped (weights unchanged; {total} skipped so far).")
    if in_a_row >= MAX_SKIPPED_IN_A_ROW:
        raise FloatingPointError(
            f"{message} {in_a_row} steps in a row had non-finite gradients: training stopped. "
            "Try a lower learning rate, more warmup, or float32 (mixed_precision=False)."
        )
    warnings.warn(message, RuntimeWarning, stacklevel=3)


# --- Several processes (torchrun) ----------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    """(rank, world size); starts the process group when launched by torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 or not torch.distributed.is_available():
        return 0, 1
    dist = torch.distributed
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _draw(batches, generator: torch.Generator, rank: int, world_size: int):
    """This process's micro-batch. Every process draws all ``world_size`` micro-batches from
    the same generator and keeps its own, so the processes never see the same batch, the
    generator stays identical everywhere (one saved state resumes them all), and N processes
    see exactly the batches that one process with ``grad_accum * N`` would."""
    drawn = None
    for r in range(world_size):
        batch = batches(generator)
        if r == rank:
            drawn = batch
    return drawn


def _average_gradients(model: torch.nn.Module, loss: float, world_size: int) -> float:
    """Average gradients (and the logged loss) across processes, in one flat all-reduce.

    This is what DistributedDataParallel does, without wrapping the model, so that any
    ``loss_fn`` works: one that calls a model method other than forward, or forward twice.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([loss], device=grads[0].device,
                                                                  dtype=grads[0].dtype)])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(p).clone()
        offset += g.numel()
    return flat[-1].item()


def _broadcast_parameters(model: torch.nn.Module) -> None:
    for tensor in model.state_dict().values():
        torch.distributed.broadcast(tensor, src=0)


def _share(blob, rank: int, world_size: int):
    """Process 0's choice of checkpoint, given to every process."""
    if world_size == 1:
        return blob
    box = [blob]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _gather(state: dict, world_size: int) -> list[dict]:
    """Every process's random state, in rank order (each process resumes its own)."""
    if world_size == 1:
        return [state]
    states = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


def _quiet(*args, **kwargs) -> None:
    """print() for processes other than 0: they stay silent."""


# --- Small helpers -------------------------------------------------------------------------------


def _capped(config: TrainConfig) -> TrainConfig:
    cap = max_steps_override()
    if cap is None or config.steps <= cap:
        return config
    print(f"CTXLIB_MAX_STEPS={cap}: training stops after {cap} of {config.steps} steps "
          "(a test of the code path, not a real run).")
    return dataclasses.replace(config, steps=cap, warmup_steps=min(config.warmup_steps, cap))


def _training_device(device, rank: int, world_size: int) -> torch.device:
    """The device asked for, else ``get_device()``; under torchrun, each process's own GPU."""
    if device is None:
        device = get_device()
        if device.type == "cuda" and world_size > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    return torch.device(device)


def _short(results: dict[str, float]) -> dict[str, str]:
    return {name: f"{value:.3f}" for name, value in results.items()}


def load_weights(path: str | os.PathLike, model: torch.nn.Module) -> dict[str, Any]:
    """Load the weights of a training checkpoint into ``model``; returns its history's dict.

    For using a trained model elsewhere (no optimizer, no resuming). The file is verified
    against its checksum, and falls back to the previous checkpoint like ``train`` does.
    """
    blob = CheckpointStore(Path(path)).read_usable()
    if blob is None:
        raise FileNotFoundError(f"no checkpoint at {path}.")
    model.load_state_dict(blob["state"]["model"])
    return blob["state"]["history"]
