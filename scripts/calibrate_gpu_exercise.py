"""A GPU exercise's target, measured: the chapter's gpu run and the exercise's solution (its one
change to that run), each trained on several seeds and scored again from its checkpoint by the
exercise's own check (``ctxlib.handin``).

    python scripts/calibrate_gpu_exercise.py 6.3                       # both arms, seeds 0 1 2
    python scripts/calibrate_gpu_exercise.py 6.3 --arms chapter --seeds 0
    python scripts/calibrate_gpu_exercise.py 6.3 --jobs 6              # the six runs at once

Meant for a GPU: each run is a whole gpu-budget run (minutes on an H100; hours on two CPU
cores). A run is ``scripts/pretrain.py``'s recipe for the chapter (the notebook's code and gpu
sizes) with the solution's changes for the solution arm and the seed for both (the initial
weights and the data order), checkpointed under ``checkpoints/gpu/calibration/``: interrupted,
the same command resumes it, and a finished one is read back instead of trained again.

The runs gather in ``results/<chapter>_exercise.json``, each recorded as soon as it is scored
(a later call, or a run in another process, adds its runs to those there), with the verdict on
the exercise's target: it must lie beyond every seed of the chapter's run (the chapter's own
run must not meet it) and be met by the solution at seed 0, the seed the notebook trains
with. Exercise 2.4's run is chapter 2's classifier, trained as
its notebook trains it (``train_sst2_classifier``, below: chapter 2 has no pretraining and no
recipe in ``scripts/pretrain.py``); exercise 1.4 has its own script
(``scripts/calibrate_skipgram_exercise.py``). Chapter 7's runs train at the rate its cpu sweep
chose (``H2H_LRS``), which the notebook's gpu sweep may not choose.

``--jobs N`` trains up to N runs at once, each in a process of its own on the same GPU. The
gpu-budget models are small: one run leaves most of a large GPU idle, waiting on kernel
launches and on building batches on the CPU, so several side by side finish sooner than one
after another. The processes share the CPU cores between them (``OMP_NUM_THREADS``). Each
run's seconds are then those of a shared GPU: they say nothing of a run's speed alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch
import torch.nn.functional as F
from pretrain import RECIPES, Variant, budgets_of

import ctxlib
from ctxlib import handin
from ctxlib.batches import pad_batch
from ctxlib.checkpoints import CheckpointStore
from ctxlib.layers import TransformerClassifier, classifier_accuracy
from ctxlib.train import History, TrainConfig, train


def train_sst2_classifier(variant: Variant) -> History:
    """Chapter 2's SST-2 classifier under the gpu budget with ``variant``'s changes, as the
    notebook's exercise 2.4 cell trains it: the chapter's tokenizer (``handin.sst2_bpe``, the
    grader's, trained on SST-2's training items), its budget with dropout 0.1 and the changes,
    batches of random training items, dev accuracy by ``classifier_accuracy``."""
    cfg = {**budgets_of("02_attention")["gpu"], "dropout": 0.1, **(variant.changes or {})}
    tokenizer = handin.sst2_bpe(cfg["bpe_vocab"])
    train_set = ctxlib.data.load_sst2("train")[: cfg["train_sentences"]]
    dev_set = ctxlib.data.load_sst2("dev")

    def encode(sentence):
        return tokenizer.encode(" " + sentence)[: cfg["max_len"]]

    train_ids = [encode(s) for s, _ in train_set]
    train_labels = torch.tensor([y for _, y in train_set])

    def batches(generator):
        rows = torch.randint(0, len(train_ids), (cfg["batch"],), generator=generator)
        ids, mask = pad_batch([train_ids[r] for r in rows])
        return ids, mask, train_labels[rows]

    def loss_fn(model, batch):
        ids, mask, labels = batch  # ctxlib.train has put them on the model's device
        return F.cross_entropy(model(ids, mask), labels)

    ctxlib.seed_everything(variant.seed)
    model = TransformerClassifier(tokenizer.vocab_size, cfg["width"], cfg["heads"],
                                  cfg["layers"], cfg["max_len"], dropout=cfg["dropout"])
    config = TrainConfig(steps=cfg["steps"], lr=cfg["lr"], warmup_steps=cfg["steps"] // 10,
                         eval_every=max(1, cfg["steps"] // 5), seed=variant.seed,
                         checkpoint_path=ctxlib.checkpoint_path(variant.checkpoint_name),
                         checkpoint_every=200)
    return train(model, batches, loss_fn, config, settings=cfg,
                 eval_fn=lambda m: {"dev_accuracy": classifier_accuracy(m, dev_set, encode)})


def pretraining(recipe: str) -> Callable[[Variant], History]:
    """The gpu run of ``scripts/pretrain.py``'s ``recipe`` with a variant."""
    return lambda variant: RECIPES[recipe].pretrain("gpu", None, variant).history


class Calibrated(NamedTuple):
    chapter: str  # the notebook whose gpu budget the runs use
    train: Callable[[Variant], History]  # trains the gpu run with a variant, writing its checkpoint
    solution: dict  # the solution's changes (the notebook's solution cell; a test compares)


EXERCISES = {
    "2.4": Calibrated("02_attention", train_sst2_classifier, {"dropout": 0.3}),
    "3.3": Calibrated("03_elmo", pretraining("elmo"), {"steps": 16_000}),
    "5.3": Calibrated("05_bert", pretraining("bert"), {"steps": 20_000}),
    "6.3": Calibrated("06_xlnet", pretraining("xlnet"), {"steps": 16_000}),
    "7.2": Calibrated("07_head_to_head", pretraining("h2h_causal"), {"steps": 16_000}),
}
ARMS = ("chapter", "solution")


def results_path(exercise: str) -> Path:
    return ROOT / "results" / f"{EXERCISES[exercise].chapter}_exercise.json"


def calibration_run(exercise: str, arm: str, seed: int, runs_at_once: int = 1) -> dict:
    """Train (or read back) one run of ``exercise``'s ``arm`` at ``seed``, one of
    ``runs_at_once`` sharing the GPU; its record."""
    calibrated = EXERCISES[exercise]
    changes = calibrated.solution if arm == "solution" else {}
    name = f"calibration/{exercise.replace('.', '_')}_{arm}_seed{seed}"
    history = calibrated.train(Variant(changes, seed, name))
    blob = CheckpointStore.read(Path(ctxlib.checkpoint_path(name, budget="gpu")))
    spec = handin.EXERCISES[exercise]
    score = spec.rescore(blob)
    record = handin.run_record(blob)
    print(f"{exercise} {arm} seed {seed}: {spec.score_name} {score:.4f}", flush=True)
    return {"arm": arm, "seed": seed, "changes": changes, "score": score,
            "device": record.get("device"), "precision": record.get("precision"),
            "capped_by": record.get("capped_by"),
            "seconds": round(sum(history.seconds), 1), "runs_at_once": runs_at_once}


def verdict(exercise: str, runs: list[dict]) -> dict:
    """Whether ``exercise``'s target is where it must be, from finished, uncapped ``runs``: beyond
    every seed of the chapter's run, and met by the solution at seed 0 (None: not yet known)."""
    spec = handin.EXERCISES[exercise]
    sign = 1 if spec.higher_is_better else -1  # "better" is a larger sign * score
    counted = [r for r in runs if r["capped_by"] is None and math.isfinite(r["score"])]
    chapter = [r["score"] for r in counted if r["arm"] == "chapter"]
    solution = [r["score"] for r in counted if r["arm"] == "solution" and r["seed"] == 0]
    return {"target": spec.target,
            "chapter_misses_it": (all(sign * s < sign * spec.target for s in chapter)
                                  if chapter else None),
            "solution_meets_it_at_seed_0": (sign * solution[0] >= sign * spec.target
                                            if solution else None)}


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """The runs of ``old`` and ``new``, a new run replacing an old one of the same arm and
    seed."""
    fresh = {(r["arm"], r["seed"]) for r in new}
    return [r for r in old if (r["arm"], r["seed"]) not in fresh] + new


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s results (a ``.lock`` file beside it) while the block
    runs, so that runs finishing at the same time in other processes wait their turn."""
    import fcntl  # POSIX only: imported here so that the script's other parts load anywhere

    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_runs(exercise: str, path: Path, new: list[dict]) -> dict:
    """Add the runs ``new`` to those recorded at ``path``, with the verdict on all of them; the
    record. The file is read and written under a lock and replaced whole, so that an
    interrupted or concurrent write never loses a run already there."""
    with locked(path):
        old = json.loads(path.read_text())["runs"] if path.exists() else []
        runs = sorted(merge(old, new), key=lambda r: (ARMS.index(r["arm"]), r["seed"]))
        record = {"exercise": exercise, "score": handin.EXERCISES[exercise].score_name,
                  "solution_changes": EXERCISES[exercise].solution,
                  "torch": torch.__version__, "date": datetime.date.today().isoformat(),
                  "verdict": verdict(exercise, runs), "runs": runs}
        partial_file = path.with_name(path.name + ".partial")
        partial_file.write_text(json.dumps(record, indent=1) + "\n")
        partial_file.replace(path)
    return record


def run_in_processes(exercise: str, pairs: list[tuple[str, int]], path: Path,
                     jobs: int) -> list[tuple[str, int]]:
    """Each (arm, seed) of ``pairs`` trained by this script in a process of its own, at most
    ``jobs`` at once, each recording its run at ``path``; the pairs whose process failed."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "CTXLIB_PROGRESS": "off"}

    def one(pair: tuple[str, int]) -> int:
        arm, seed = pair
        command = [sys.executable, __file__, exercise, "--arms", arm, "--seeds", str(seed),
                   "--results", str(path), "--runs-at-once", str(min(jobs, len(pairs)))]
        return subprocess.run(command, env=env, check=False).returncode

    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(one, pairs))
    return [pair for pair, code in zip(pairs, codes) if code != 0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exercise", choices=sorted(EXERCISES))
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--results", type=Path, default=None,
                        help="where the runs gather (default: results/<chapter>_exercise.json)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at once, each in its own process (default 1)")
    # set by --jobs for each of its processes: how many runs share the GPU
    parser.add_argument("--runs-at-once", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    os.environ["CTXLIB_BUDGET"] = "gpu"  # the run's record says so; on a CPU too
    path = (args.results or results_path(args.exercise)).resolve()
    pairs = [(arm, seed) for arm in args.arms for seed in args.seeds]
    if args.jobs > 1 and len(pairs) > 1:
        failed = run_in_processes(args.exercise, pairs, path, args.jobs)
        if failed:
            sys.exit(f"these runs failed (their output is above): {failed}; the others are "
                     f"recorded in {path}, and the same command resumes the failed ones")
        record = json.loads(path.read_text())
    else:
        for arm, seed in pairs:
            record = record_runs(args.exercise, path, [calibration_run(
                args.exercise, arm, seed, args.runs_at_once)])
    print(f"wrote {path}: {record['verdict']}")


if __name__ == "__main__":
    main()
