"""Pretrain a chapter's model outside the notebook: longer, or on several GPUs.

    python scripts/pretrain.py gpt --budget cpu                       # one process
    torchrun --nproc_per_node=4 scripts/pretrain.py gpt --budget gpu  # four GPUs, data-parallel

It runs the chapter's own code (``ctxlib``'s model and training loop, the chapter's sizes) and
writes the checkpoint where the notebook looks for it (``checkpoints/<budget>/<name>.pt`` under
``CTXLIB_CHECKPOINTS``): the notebook, run afterwards with the same budget, finds the finished
one-process run and resumes it instead of training again. Interrupted, the same command resumes.

Under torchrun each process trains on its own batches and the gradients are averaged: N
processes see N times the batch of one, so that is another run than the notebook's (the number
of processes is part of a run's identity), and the notebook keeps it aside rather than resume it.
Load its weights with ``ctxlib.train.load_weights(path, model)``.

With ``--course`` it makes the course checkpoint that chapter 4 loads: the cpu budget's sizes,
pretrained for ``COURSE_STEPS`` steps (about an hour on 2 CPU cores), written in half precision
to ``pretrained/`` with its tokenizer, data, steps, wall time and validation curve
(``ctxlib.pretrained``).

    python scripts/pretrain.py gpt --course

Models: ``gpt`` (chapter 4, the WikiText-2 GPT).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

import ctxlib
from ctxlib import pretrained
from ctxlib.batches import lm_windows
from ctxlib.gpt import GPT, GPTConfig
from ctxlib.tokenizers import BPETokenizer
from ctxlib.train import TrainConfig, train

# Chapter 4's WikiText-2 GPT, as in the notebook's budget cell (keep the two in step: a test
# compares them).
GPT_BUDGETS = {
    "smoke": {"bpe_vocab": 500, "wiki_chars": 500_000, "batch": 8,
               "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 64, "dropout": 0.0},
               "train": {"steps": 20, "lr": 2e-3, "warmup_steps": 2, "eval_every": 10}},
    "cpu": {"bpe_vocab": 4000, "wiki_chars": None, "batch": 16,
             "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0},
             "train": {"steps": 1500, "lr": 2e-3, "warmup_steps": 100, "eval_every": 300}},
    "gpu": {"bpe_vocab": 8000, "wiki_chars": None, "batch": 32,
             "model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "dropout": 0.1},
             "train": {"steps": 5000, "lr": 6e-4, "warmup_steps": 200, "eval_every": 500, "compile": True}},
}

# The course checkpoint: the cpu budget's model, pretrained about an hour on 2 CPU cores.
COURSE_STEPS = {"gpt": 12_000}
COURSE_FILES = {"gpt": "gpt_wikitext2.pt"}


def pretrain_gpt(budget: str, steps: int | None = None):
    """Chapter 4's WikiText-2 GPT under ``budget``: returns the model, its tokenizer, the
    training history and the validation function."""
    cfg = GPT_BUDGETS[budget]
    text = ctxlib.data.load_wikitext2("train")
    if cfg["wiki_chars"]:
        text = text[: cfg["wiki_chars"]]
    bpe = BPETokenizer.train(text, vocab_size=cfg["bpe_vocab"], progress_bar=False)
    train_ids = torch.tensor(bpe.encode(text))
    valid_ids = torch.tensor(bpe.encode(ctxlib.data.load_wikitext2("valid")))
    config = GPTConfig(vocab_size=bpe.vocab_size, **cfg["model"])
    ctxlib.seed_everything(0)
    model = GPT(config)

    def loss_fn(model, batch):
        x, y = (t.to(next(model.parameters()).device) for t in batch)
        return model(x, targets=y)[1]

    def evaluate(model):
        generator = torch.Generator().manual_seed(1234)  # the same windows every time
        batches = [lm_windows(valid_ids, 16, config.block_size, generator) for _ in range(10)]
        return {"valid_loss": sum(loss_fn(model, b).item() for b in batches) / len(batches)}

    settings = dict(cfg["train"], steps=steps or cfg["train"]["steps"])
    history = train(
        model,
        lambda g: lm_windows(train_ids, cfg["batch"], config.block_size, g),
        loss_fn,
        TrainConfig(weight_decay=0.1, checkpoint_path=ctxlib.checkpoint_path("wiki_gpt"),
                    checkpoint_every=500, **settings),
        eval_fn=evaluate,
        settings={"batch": cfg["batch"], "wiki_chars": cfg["wiki_chars"]},
    )
    return model, bpe, history, evaluate


def export_course_checkpoint(model, bpe, history, evaluate, budget: str,
                             folder: Path = ROOT / "pretrained") -> Path:
    """Write the finished run as the course checkpoint ``pretrained/gpt_wikitext2.pt``,
    with how it was made, and say how much half precision changed its validation loss."""
    cfg = GPT_BUDGETS[budget]
    steps = history.steps[-1]
    info = {
        "data": "WikiText-2 train",
        "command": f"python scripts/pretrain.py gpt --course  (the {budget} budget's sizes)",
        "steps": steps,
        "batch": cfg["batch"],
        "block_size": model.config.block_size,
        "tokens_seen": steps * cfg["batch"] * model.config.block_size,
        "lr": cfg["train"]["lr"],
        "warmup_steps": cfg["train"]["warmup_steps"],
        "wall_seconds": round(sum(history.seconds), 1),
        "machine": f"{torch.get_num_threads()} CPU threads" if history.run.get("device") == "cpu"
        else str(history.run.get("device")),
        "torch": str(torch.__version__),
        "valid_steps": list(history.eval_steps),
        "valid_loss": [round(v, 4) for v in history.evals["valid_loss"]],
    }
    path = folder / COURSE_FILES["gpt"]
    pretrained.save(path, "gpt", "gpt", model, bpe, info)
    half = pretrained.read(path)
    info["valid_loss_half_precision"] = round(evaluate(half.model)["valid_loss"], 4)
    pretrained.save(path, "gpt", "gpt", model, bpe, info)
    print(f"{half.describe()}; in half precision {info['valid_loss_half_precision']:.3f}")
    print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB, "
          f"sha256 {ctxlib.data.sha256_of(path)}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=["gpt"])
    parser.add_argument("--budget", choices=ctxlib.BUDGETS, default=None,
                        help="default: CTXLIB_BUDGET, else gpu with CUDA, else cpu")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's steps")
    parser.add_argument("--course", action="store_true",
                        help="the course checkpoint: the cpu budget's sizes, pretrained "
                             f"{COURSE_STEPS['gpt']:,} steps, written to pretrained/")
    args = parser.parse_args()
    if args.course:
        args.budget, args.steps = "cpu", args.steps or COURSE_STEPS[args.model]
    if args.budget:
        os.environ["CTXLIB_BUDGET"] = args.budget
    budget = ctxlib.current_budget()[0]
    model, bpe, history, evaluate = pretrain_gpt(budget, args.steps)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{args.model} ({budget} budget): validation loss "
              f"{history.last_eval()['valid_loss']:.3f}, checkpoint "
              f"{ctxlib.checkpoint_path('wiki_gpt')}")
        if args.course:
            export_course_checkpoint(model, bpe, history, evaluate, budget)


if __name__ == "__main__":
    main()
