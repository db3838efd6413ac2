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

With ``--course`` it makes the course checkpoint that the chapter loads: the cpu budget's sizes
and recipe, pretrained for ``COURSE_STEPS`` steps (about an hour on 2 CPU cores), written in half
precision to ``pretrained/`` with its tokenizer, data, steps, wall time and validation curve
(``ctxlib.pretrained``).

    python scripts/pretrain.py gpt --course
    python scripts/pretrain.py bert --course

Models: ``gpt`` (chapter 4, the WikiText-2 GPT), ``bert`` (chapter 5, the WikiText-2 BERT with
masked-LM and next-sentence prediction).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

import ctxlib
from ctxlib import bert as bert_lib
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

# Chapter 5's WikiText-2 BERT, as in the notebook's budget cell (a test compares them).
BERT_BUDGETS = {
    "smoke": {"bpe_vocab": 500, "wiki_articles": 40, "batch": 8, "val_pairs": 32,
              "model": {"n_layer": 1, "n_head": 2, "d_model": 32, "max_position": 64, "dropout": 0.1},
              "train": {"steps": 20, "lr": 1e-3, "warmup_steps": 2, "eval_every": 10}},
    "cpu": {"bpe_vocab": 4000, "wiki_articles": None, "batch": 16, "val_pairs": 512,
            "model": {"n_layer": 4, "n_head": 4, "d_model": 128, "max_position": 128, "dropout": 0.1},
            "train": {"steps": 2000, "lr": 1e-3, "warmup_steps": 200, "eval_every": 400}},
    "gpu": {"bpe_vocab": 8000, "wiki_articles": None, "batch": 64, "val_pairs": 2048,
            "model": {"n_layer": 6, "n_head": 8, "d_model": 256, "max_position": 256, "dropout": 0.1},
            "train": {"steps": 10_000, "lr": 5e-4, "warmup_steps": 500, "eval_every": 1000,
                      "compile": True}},
}

# The course checkpoints: the cpu budget's model and recipe, only more steps, about an hour each
# on 2 CPU cores.
COURSE_STEPS = {"gpt": 12_000, "bert": 14_000}
COURSE_FILES = {"gpt": "gpt_wikitext2.pt", "bert": "bert_wikitext2.pt"}
# The training checkpoint of each model, the name its notebook gives it.
CHECKPOINT_NAMES = {"gpt": "wiki_gpt", "bert": "bert"}


def pretrain_gpt(budget: str, steps: int | None = None):
    """Chapter 4's WikiText-2 GPT under ``budget``: returns the model, its tokenizer, the
    training history, the validation function and the batch sampler."""
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

    def batches(generator):
        return lm_windows(train_ids, cfg["batch"], config.block_size, generator)

    settings = dict(cfg["train"], steps=steps or cfg["train"]["steps"])
    history = train(
        model,
        batches,
        loss_fn,
        TrainConfig(weight_decay=0.1, checkpoint_path=ctxlib.checkpoint_path(CHECKPOINT_NAMES["gpt"]),
                    checkpoint_every=500, **settings),
        eval_fn=evaluate,
        settings={"batch": cfg["batch"], "wiki_chars": cfg["wiki_chars"]},
    )
    return model, bpe, history, evaluate, batches


def pretrain_bert(budget: str, steps: int | None = None):
    """Chapter 5's WikiText-2 BERT under ``budget`` (masked LM + next-sentence prediction, the
    notebook's pairs and masks): returns the model, its tokenizer, the training history, the
    validation function (MLM loss and NSP accuracy on a fixed masked sample) and the batch
    sampler."""
    cfg = BERT_BUDGETS[budget]
    train_articles = ctxlib.take(ctxlib.data.wikitext2_sentences("train"), cfg["wiki_articles"])
    valid_articles = ctxlib.data.wikitext2_sentences("valid")
    bpe = BPETokenizer.train("\n".join(s for a in train_articles for s in a),
                             vocab_size=cfg["bpe_vocab"], progress_bar=False)
    train_docs = [bpe.encode_batch(sentences) for sentences in train_articles]
    valid_docs = [bpe.encode_batch(sentences) for sentences in valid_articles]
    max_tokens = cfg["model"]["max_position"] - 3  # room for [CLS] and two [SEP]s
    config = bert_lib.BertConfig(vocab_size=bpe.vocab_size, **cfg["model"])
    valid_batch = bert_lib.pretraining_batch(valid_docs, cfg["val_pairs"], bpe, max_tokens,
                                             random.Random(0), torch.Generator().manual_seed(0))

    def batches(generator):
        rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=generator)))
        return bert_lib.pretraining_batch(train_docs, cfg["batch"], bpe, max_tokens, rng,
                                          generator)

    def evaluate(model):
        return bert_lib.evaluate_pretraining(model, valid_batch)

    ctxlib.seed_everything(0)
    model = bert_lib.BertForPreTraining(config)
    settings = dict(cfg["train"], steps=steps or cfg["train"]["steps"])
    history = train(
        model, batches, bert_lib.pretraining_loss,
        TrainConfig(weight_decay=0.01, checkpoint_path=ctxlib.checkpoint_path(CHECKPOINT_NAMES["bert"]),
                    checkpoint_every=400, **settings),
        eval_fn=evaluate,
        settings={"batch": cfg["batch"]},
    )
    return model, bpe, history, evaluate, batches


PRETRAIN = {"gpt": pretrain_gpt, "bert": pretrain_bert}
BUDGETS = {"gpt": GPT_BUDGETS, "bert": BERT_BUDGETS}
VALID_LOSS = {"gpt": "valid_loss", "bert": "mlm_loss"}  # the loss each evaluation reports


def mean_tokens_per_example(model_name: str, batches, samples: int = 50) -> float:
    """Tokens (padding not counted) per training example, over ``samples`` batches."""
    generator = torch.Generator().manual_seed(0)
    counts = []
    for _ in range(samples):
        batch = batches(generator)
        if model_name == "bert":  # pairs vary in length; the attention mask marks real tokens
            counts.append(batch[2].sum().item() / len(batch[2]))
        else:  # GPT's windows are always full
            counts.append(batch[0].shape[1])
    return sum(counts) / len(counts)


def export_course_checkpoint(model, bpe, history, evaluate, budget: str,
                             folder: Path = ROOT / "pretrained", model_name: str = "gpt",
                             tokens_per_example: float | None = None) -> Path:
    """Write the finished run as the course checkpoint ``pretrained/<COURSE_FILES[name]>``,
    with how it was made, and say how much half precision changed its validation loss."""
    cfg = BUDGETS[model_name][budget]
    key = VALID_LOSS[model_name]
    steps = history.steps[-1]
    context = getattr(model.config, "block_size", None) or model.config.max_position
    info = {
        "data": "WikiText-2 train",
        "command": f"python scripts/pretrain.py {model_name} --course  "
                   f"(the {budget} budget's sizes)",
        "steps": steps,
        "batch": cfg["batch"],
        "block_size": context,
        "tokens_seen": round(steps * cfg["batch"] * (tokens_per_example or context)),
        "lr": cfg["train"]["lr"],
        "warmup_steps": cfg["train"]["warmup_steps"],
        "wall_seconds": round(sum(history.seconds), 1),
        "machine": f"{torch.get_num_threads()} CPU threads" if history.run.get("device") == "cpu"
        else str(history.run.get("device")),
        "torch": str(torch.__version__),
        "valid_steps": list(history.eval_steps),
        "valid_loss": [round(v, 4) for v in history.evals[key]],
    }
    if model_name == "bert":
        info["valid_loss_is"] = "masked-LM loss"
        info["valid_nsp_accuracy"] = [round(v, 4) for v in history.evals["nsp_accuracy"]]
    kind = {"gpt": "gpt", "bert": "bert_pretraining"}[model_name]
    path = folder / COURSE_FILES[model_name]
    pretrained.save(path, model_name, kind, model, bpe, info)
    half = pretrained.read(path)
    info["valid_loss_half_precision"] = round(evaluate(half.model)[key], 4)
    pretrained.save(path, model_name, kind, model, bpe, info)
    print(f"{half.describe()}; in half precision {info['valid_loss_half_precision']:.3f}")
    print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB, "
          f"sha256 {ctxlib.data.sha256_of(path)}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(PRETRAIN))
    parser.add_argument("--budget", choices=ctxlib.BUDGETS, default=None,
                        help="default: CTXLIB_BUDGET, else gpu with CUDA, else cpu")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's steps")
    parser.add_argument("--course", action="store_true",
                        help="the course checkpoint: the cpu budget's sizes, pretrained "
                             f"longer ({COURSE_STEPS}), written to pretrained/")
    args = parser.parse_args()
    if args.course:
        args.budget, args.steps = "cpu", args.steps or COURSE_STEPS[args.model]
    if args.budget:
        os.environ["CTXLIB_BUDGET"] = args.budget
    budget = ctxlib.current_budget()[0]
    model, bpe, history, evaluate, batches = PRETRAIN[args.model](budget, args.steps)
    if int(os.environ.get("RANK", "0")) == 0:
        name = CHECKPOINT_NAMES[args.model]
        print(f"{args.model} ({budget} budget): validation loss "
              f"{history.last_eval()[VALID_LOSS[args.model]]:.3f}, checkpoint "
              f"{ctxlib.checkpoint_path(name)}")
        if args.course:
            export_course_checkpoint(model, bpe, history, evaluate, budget,
                                     model_name=args.model,
                                     tokens_per_example=mean_tokens_per_example(args.model,
                                                                                batches))


if __name__ == "__main__":
    main()
