"""Checkpoint files that survive a crash, a full disk, a second kernel, and a changed setting.

The training loop keeps one run's checkpoints at the path it is given, say ``gpt.pt``:

- ``gpt.pt`` is the latest checkpoint and ``gpt.prev.pt`` the one before it. A checkpoint is
  written to a temporary file with a unique name, then renamed into place, so a crash while
  writing never leaves a half-written ``gpt.pt``, and two kernels writing the same path do not
  trip over each other's temporary files.
- Each file stores a SHA-256 checksum of its contents. A latest checkpoint that is empty, cut
  short or corrupted is reported by name, and the run resumes from ``gpt.prev.pt`` instead.
- Each file records the run's **identity**: the training configuration, the model's
  configuration and parameter shapes, and any other settings the caller names (batch size,
  data). A call whose identity differs (a changed learning rate, more steps, a wider model)
  never resumes the old state: the old run is moved aside to ``gpt.run-<id>.pt``, kept, and a
  new run starts. Putting the settings back finds the old run and resumes it.

Files are written with ``torch.save`` and read with ``torch.load(weights_only=True)``: only
tensors, numbers, strings, lists and dicts, so reading a checkpoint can never run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FORMAT = 2  # version of the file layout: {"format", "sha256", "identity", "state"}
STALE_SECONDS = 24 * 3600  # a temporary file this old is left over from a crash


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read; the message names the file and the way out."""


class DamagedCheckpoint(Exception):
    """One file could not be used (empty, cut short, corrupted); the message says which."""


# --- What a run is -------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A value as types that ``json`` and ``weights_only`` loading both accept."""
    if isinstance(value, (bool, int, float, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    return str(value)


def model_fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """What identifies a model: its config (a dataclass ``model.config``) and parameter shapes."""
    fingerprint: dict[str, Any] = {
        "shapes": {name: list(p.shape) for name, p in model.state_dict().items()}
    }
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config):
        fingerprint["config"] = plain(config)
    return fingerprint


def run_id(identity: dict[str, Any]) -> str:
    """A short, stable name for an identity: the first 10 hex digits of its SHA-256."""
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


_NOT_SET = object()  # a field one of the two identities does not have (not the value None)


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable list of the fields that differ, e.g. ``["train.lr: 0.1 -> 0.05"]``;
    a field only one side has reads ``(not set)`` on the other."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _NOT_SET), new.get(key, _NOT_SET)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, prefix=name + ".")
        elif a != b:
            found.append(f"{name}: {_short(a)} -> {_short(b)}")
    return found


def _short(value: Any) -> str:
    if value is _NOT_SET:
        return "(not set)"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- Checksums -----------------------------------------------------------------------------------


def checksum(state: Any) -> str:
    """SHA-256 over everything in ``state``: every tensor's bytes, dtype and shape, every value.

    Computed before saving and again after loading; a flipped byte anywhere changes it.
    """
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {tensor.dtype} {tuple(value.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)};".encode())
        for key, item in value.items():
            digest.update(repr(key).encode())
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"list {len(value)};".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__} {value!r};".encode())


# --- Files ---------------------------------------------------------------------------------------


class CheckpointStore:
    """The files of the run kept at ``path`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.latest = Path(path)
        self.previous = self.latest.with_name(f"{self.latest.stem}.prev{self.latest.suffix}")

    def archived(self, identity_id: str, previous: bool = False) -> Path:
        """Where the run with ``identity_id`` is kept once another run takes over the path."""
        tail = ".prev" if previous else ""
        return self.latest.with_name(f"{self.latest.stem}.run-{identity_id}{tail}"
                                     f"{self.latest.suffix}")

    # Writing

    def save(self, identity: dict[str, Any], state: dict[str, Any]) -> None:
        """Write ``state`` as the latest checkpoint; the one it replaces becomes the previous."""
        _check_finite(state["model"], self.latest)
        blob = {"format": FORMAT, "sha256": checksum(state), "identity": identity, "state": state}
        self.latest.parent.mkdir(parents=True, exist_ok=True)
        # A unique temporary name: two kernels saving to one path never share a temporary file.
        temporary = self.latest.with_name(
            f"{self.latest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            torch.save(blob, temporary)
            if self.latest.exists():
                os.replace(self.latest, self.previous)
            os.replace(temporary, self.latest)  # atomic: readers see the old file or the new one
        finally:
            temporary.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the latest and previous checkpoints (an explicit fresh start)."""
        self.latest.unlink(missing_ok=True)
        self.previous.unlink(missing_ok=True)

    def clean_temporaries(self) -> list[Path]:
        """Delete temporary files left by a crash: their process is gone, or they are a day old."""
        removed = []
        for temporary in self.latest.parent.glob(f"{self.latest.name}.*.tmp"):
            pid_text = temporary.name[len(self.latest.name) + 1:].split("-")[0]
            try:
                stale = time.time() - temporary.stat().st_mtime > STALE_SECONDS
                stale = stale or (pid_text.isdigit() and not _process_alive(int(pid_text)))
                if stale:
                    temporary.unlink()
                    removed.append(temporary)
            except FileNotFoundError:  # another kernel cleaned it first
                continue
        return removed

    def archive(self, identity_id: str) -> Path:
        """Move this path's run aside to ``<stem>.run-<identity_id>.pt`` (kept, not deleted)."""
        os.replace(self.latest, self.archived(identity_id))
        if self.previous.exists():
            os.replace(self.previous, self.archived(identity_id, previous=True))
        return self.archived(identity_id)

    def restore(self, identity_id: str) -> bool:
        """Bring an archived run back to this path; False when there is none."""
        archived = self.archived(identity_id)
        if not archived.exists():
            return False
        os.replace(archived, self.latest)
        if self.archived(identity_id, previous=True).exists():
            os.replace(self.archived(identity_id, previous=True), self.previous)
        return True

    # Reading

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """The verified contents of one file; raises :class:`DamagedCheckpoint` if unusable."""
        if path.stat().st_size == 0:
            raise DamagedCheckpoint(f"{path} is empty")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a cut or corrupted file fails in many different ways
            raise DamagedCheckpoint(f"{path} cannot be read ({type(error).__name__}: "
                                    f"{str(error)[:120]})") from error
        if isinstance(blob, dict) and "format" not in blob and "step" in blob:
            # Written by ctxlib 0.1, without identity or checksum: another run, kept aside.
            return {"format": 1, "identity": {"written by": "ctxlib 0.1"}, "state": blob}
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise DamagedCheckpoint(f"{path} is not a checkpoint of this version of ctxlib")
        if checksum(blob["state"]) != blob["sha256"]:
            raise DamagedCheckpoint(f"{path} does not match its checksum (corrupted)")
        return blob

    def read_usable(self) -> dict[str, Any] | None:
        """The latest usable checkpoint (the previous one if the latest is damaged), or None.

        Raises :class:`CheckpointError` when files exist but none can be used.
        """
        problems = []
        for path in (self.latest, self.previous):
            if not path.exists():
                continue
            try:
                blob = self.read(path)
            except DamagedCheckpoint as damage:
                problems.append(str(damage))
                continue
            if problems:
                warnings.warn(f"checkpoint {problems[0]}; resuming from the previous checkpoint, "
                              f"{path}, instead.", stacklevel=3)
            return blob
        if problems:
            raise CheckpointError(
                f"no usable checkpoint: {'; '.join(problems)}. To start over, delete "
                f"{self.latest} (and {self.previous}); train() also starts over with "
                "resume=False."
            )
        return None


def _check_finite(model_state: dict[str, torch.Tensor], path: Path) -> None:
    for name, tensor in model_state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise FloatingPointError(
                f"parameter {name!r} holds NaN or infinite values: not writing them to {path}, "
                "so the last good checkpoint stays. Try a lower learning rate or more warmup."
            )


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is someone else's
        return True
    return True


# --- Resuming ------------------------------------------------------------------------------------


def find_run(store: CheckpointStore, identity: dict[str, Any], resume: bool = True,
             say: Callable[[str], None] = print) -> dict[str, Any] | None:
    """The verified checkpoint to resume from, or None for a new run. Keeps other runs.

    A checkpoint of another identity is moved aside (kept, with a line saying which settings
    differ); an archived run of exactly ``identity`` is brought back and resumed.
    ``resume=False`` deletes this path's checkpoints instead (an explicit fresh start).
    """
    for temporary in store.clean_temporaries():
        say(f"Removed {temporary}, left over from an interrupted save.")
    if not resume:
        store.remove()
        return None
    blob = store.read_usable()
    ours = run_id(identity)
    if blob is not None and blob["identity"] != identity:
        kept = store.archive(run_id(blob["identity"]))
        changed = differences(blob["identity"], identity)
        say(f"The settings differ from those of the run in {store.latest} "
            f"({'; '.join(changed[:6])}{'; ...' if len(changed) > 6 else ''}). Starting a new "
            f"run; the old one is kept as {kept.name} (put the settings back to resume it).")
        blob = None
    if blob is None and store.restore(ours):
        say("Found an earlier run with exactly these settings: resuming it.")
        blob = store.read_usable()
    return blob
