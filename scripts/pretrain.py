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
and recipe, pretrained for the recipe's ``course_steps`` (about an hour on 2 CPU cores; XLNet's
4,000 steps take about half an hour; minutes on a GPU, which the script uses where there is
one), written in half precision to ``pretrained/`` with its tokenizer, data, steps, wall time,
machine and validation curve (``ctxlib.pretrained``).

    python scripts/pretrain.py gpt --course
    python scripts/pretrain.py elmo --course

Models: ``elmo`` (chapter 3, the WikiText-2 biLM), ``gpt`` (chapter 4, the WikiText-2 GPT),
``bert`` (chapter 5, the WikiText-2 BERT with masked-LM and next-sentence prediction),
``xlnet`` (chapter 6, the WikiText-2 XLNet with the permutation LM), and chapter 7's five
contenders on equal terms, ``h2h_bilm``, ``h2h_causal``, ``h2h_mlm_nsp``, ``h2h_mlm`` and
``h2h_plm`` (their course checkpoints: 4,000 steps, ten times the notebook's cpu run, about
15 minutes each on 2 CPU cores). Each is one ``Recipe`` below: the chapter's budgets, its
pretraining, and its course checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch
from nbtools import notebook_budgets

import ctxlib
from ctxlib import bert as bert_lib
from ctxlib import elmo as elmo_lib
from ctxlib import gpt as gpt_lib
from ctxlib import head_to_head as h2h
from ctxlib import pretrained
from ctxlib import xlnet as xlnet_lib
from ctxlib.batches import lm_windows, wikitext2_bpe_streams
from ctxlib.static import Vocab
from ctxlib.train import History, TrainConfig, train
from ctxlib.train import mean_tokens_per_step as mean_tokens

# Each chapter's budgets are read from its notebook's budget cell, the one place they are set
# (``nbtools.notebook_budgets``), under the notebook's own names. Chapter 7's notebook chooses
# each objective's learning rate by a sweep; the script uses the rates its cpu sweep chose (a
# test compares them with the stored sweep).
H2H_LRS = {"bilm": 1e-2, "causal": 3e-3, "mlm_nsp": 1e-3, "mlm": 1e-3, "plm": 1e-3}


class Run(NamedTuple):
    """A finished pretraining: the model, its tokenizer, the training history, the validation
    function and the batch sampler."""

    model: torch.nn.Module
    tokenizer: Any
    history: History
    evaluate: Callable
    batches: Callable
    tokens_in: Callable[[Any], int] | None = None  # where the recipe has none of its own
    info: dict[str, Any] | None = None  # what the course checkpoint must also record


class Variant(NamedTuple):
    """A run other than the chapter's own (a GPU exercise's, a calibration's): its changes to
    the budget's settings, each put where the budget keeps that field (else among the model's
    sizes, whose class refuses a field it does not have), its seed (the initial weights and
    the data order) and its checkpoint's name. The default is the chapter's run."""

    changes: dict[str, Any] | None = None
    seed: int = 0
    checkpoint_name: str | None = None


CHAPTERS_RUN = Variant()


@cache
def budgets_of(chapter: str) -> dict[str, dict]:
    """The smoke, cpu and gpu budgets of ``notebooks/<chapter>.ipynb``'s budget cell."""
    return notebook_budgets(chapter)


def settings_of(name: str, budget: str, variant: Variant = CHAPTERS_RUN) -> dict:
    """Recipe ``name``'s settings under ``budget`` (its notebook's), with ``variant``'s
    changes."""
    recipe = RECIPES[name]
    cfg = copy.deepcopy(recipe.budgets[budget])
    for field, value in (variant.changes or {}).items():
        if recipe.train_key and field in cfg[recipe.train_key]:
            cfg[recipe.train_key][field] = value
        elif field in cfg and not isinstance(cfg[field], dict):
            cfg[field] = value
        else:
            cfg[recipe.model_key][field] = value
    return cfg


def train_recipe(name: str, cfg: dict, steps: int | None, model, batches, loss_fn, evaluate,
                 settings: dict, checkpoint_every: int, weight_decay: float = 0.01,
                 variant: Variant = CHAPTERS_RUN) -> History:
    """Train ``model`` with the TrainConfig fields of recipe ``name`` in ``cfg`` (``steps``
    overriding its steps), checkpointed under the name the chapter's notebook uses (or the
    variant's)."""
    recipe = RECIPES[name]
    fields = cfg[recipe.train_key]
    config = TrainConfig(
        weight_decay=weight_decay, checkpoint_every=checkpoint_every, seed=variant.seed,
        checkpoint_path=ctxlib.checkpoint_path(variant.checkpoint_name or recipe.checkpoint_name),
        **dict(fields, steps=steps or fields["steps"]))
    return train(model, batches, loss_fn, config, eval_fn=evaluate, settings=settings)


def pretrain_gpt(budget: str, steps: int | None = None, variant: Variant = CHAPTERS_RUN):
    """Chapter 4's WikiText-2 GPT under ``budget``."""
    cfg = settings_of("gpt", budget, variant)
    bpe, train_ids, valid_ids = wikitext2_bpe_streams(cfg["bpe_vocab"], cfg["wiki_chars"])
    config = gpt_lib.GPTConfig(vocab_size=bpe.vocab_size, **cfg["wiki_model"])
    ctxlib.seed_everything(variant.seed)
    model = gpt_lib.GPT(config)

    valid_batches = gpt_lib.validation_windows(valid_ids, 160, config.block_size)

    def evaluate(model):
        return gpt_lib.evaluate_lm(model, valid_batches)

    def batches(generator):
        return lm_windows(train_ids, cfg["wiki_batch"], config.block_size, generator)

    history = train_recipe("gpt", cfg, steps, model, batches, gpt_lib.lm_loss, evaluate,
                           {"batch": cfg["wiki_batch"], "wiki_chars": cfg["wiki_chars"]},
                           checkpoint_every=500, weight_decay=0.1, variant=variant)
    return Run(model, bpe, history, evaluate, batches)


def pretrain_bert(budget: str, steps: int | None = None, variant: Variant = CHAPTERS_RUN):
    """Chapter 5's WikiText-2 BERT under ``budget`` (masked LM + next-sentence prediction, the
    notebook's pairs and masks; validation: MLM loss and NSP accuracy on a fixed sample)."""
    cfg = settings_of("bert", budget, variant)
    bpe, train_docs, valid_docs = bert_lib.wikitext2_documents(
        cfg["bpe_vocab"],
        ctxlib.take(ctxlib.data.wikitext2_sentences("train"), cfg["wiki_articles"]))
    max_tokens = cfg["model"]["max_position"] - 3  # room for [CLS] and two [SEP]s
    config = bert_lib.BertConfig(vocab_size=bpe.vocab_size, **cfg["model"])
    valid_batch = bert_lib.validation_batch(valid_docs, cfg["val_pairs"], bpe, max_tokens)

    def batches(generator):
        return bert_lib.training_batch(train_docs, cfg["batch"], bpe, max_tokens, generator)

    def evaluate(model):
        return bert_lib.evaluate_pretraining(model, valid_batch)

    ctxlib.seed_everything(variant.seed)
    model = bert_lib.BertForPreTraining(config)
    history = train_recipe("bert", cfg, steps, model, batches, bert_lib.pretraining_loss,
                           evaluate, {"batch": cfg["batch"]}, checkpoint_every=400,
                           variant=variant)
    return Run(model, bpe, history, evaluate, batches)


def pretrain_xlnet(budget: str, steps: int | None = None, variant: Variant = CHAPTERS_RUN):
    """Chapter 6's WikiText-2 XLNet under ``budget`` (the permutation LM on two segments, the
    second reading the first as memory; validation: the same loss on fixed windows and
    orders)."""
    cfg = settings_of("xlnet", budget, variant)
    bpe, train_ids, valid_ids = wikitext2_bpe_streams(cfg["bpe_vocab"], cfg["wiki_chars"])
    seg_len = cfg["seg_len"]
    num_predict = seg_len // cfg["predict_every"]
    config = xlnet_lib.XLNetConfig(vocab_size=bpe.vocab_size, mem_len=seg_len, **cfg["model"])
    valid_batches = xlnet_lib.validation_batches(
        valid_ids, len(ctxlib.take(range(cfg["eval_windows"]), cfg["eval_windows"])), seg_len,
        num_predict)

    def batches(generator):
        return xlnet_lib.pretraining_batch(train_ids, cfg["batch"], seg_len, num_predict,
                                           generator)

    def evaluate(model):
        return xlnet_lib.evaluate_pretraining(model, valid_batches)

    ctxlib.seed_everything(variant.seed)
    model = xlnet_lib.XLNetLM(config)
    history = train_recipe("xlnet", cfg, steps, model, batches, xlnet_lib.pretraining_loss,
                           evaluate,
                           {k: cfg[k] for k in ("batch", "seg_len", "predict_every", "wiki_chars")},
                           checkpoint_every=200, variant=variant)
    return Run(model, bpe, history, evaluate, batches)


def pretrain_elmo(budget: str, steps: int | None = None, variant: Variant = CHAPTERS_RUN):
    """Chapter 3's WikiText-2 biLM under ``budget`` (characters in, WikiText-2's closed word
    vocabulary out, both directions; validation: perplexity of each direction on consecutive
    windows)."""
    cfg = settings_of("elmo", budget, variant)
    wiki = ctxlib.data.load_wikitext2("train")
    words = wiki.split()
    if cfg["wiki_words"]:
        words = words[: cfg["wiki_words"]]
    vocab = Vocab.from_text(wiki, min_count=1)  # most frequent first
    unk = vocab.index("<unk>")
    train_ids = torch.tensor([vocab.stoi[w] for w in words])
    valid_ids = torch.tensor([vocab.stoi.get(w, unk)
                              for w in ctxlib.data.load_wikitext2("valid").split()])
    config = elmo_lib.ELMoConfig(vocab_size=len(vocab), **cfg["model"])
    spelled = elmo_lib.spell_vocabulary(vocab.itos, config.max_chars)
    valid_windows = ctxlib.take(elmo_lib.validation_windows(valid_ids, cfg["window"]),
                                cfg["val_batches"] * cfg["batch"])

    def batches(generator):
        return elmo_lib.lm_batch(train_ids, spelled, cfg["batch"], cfg["window"], generator)

    def evaluate(model):
        return elmo_lib.evaluate_lm(model, valid_windows, spelled, cfg["batch"])

    ctxlib.seed_everything(variant.seed)
    model = elmo_lib.BiLM(config)
    history = train_recipe("elmo", cfg, steps, model, batches, elmo_lib.lm_loss, evaluate,
                           {"batch": cfg["batch"], "window": cfg["window"]},
                           checkpoint_every=200, variant=variant)
    return Run(model, vocab, history, evaluate, batches)


def pretrain_h2h(key: str, budget: str, steps: int | None = None,
                 variant: Variant = CHAPTERS_RUN) -> Run:
    """Chapter 7's contender ``key`` (one of ``h2h.OBJECTIVES``) under ``budget``, at the rate
    its cpu sweep chose. With more ``steps`` than the budget's, warmup and evaluations keep
    their share of the run."""
    cfg = settings_of(f"h2h_{key}", budget, variant)
    text = h2h.shared_text(cfg["bpe_vocab"], cfg["articles"])
    contender = h2h.build(key, text, h2h.Sizes(**cfg["sizes"]), seed=variant.seed)
    steps = steps or cfg["steps"]
    history = h2h.pretrain(contender, steps, H2H_LRS[key],
                           warmup_steps=max(1, cfg["warmup_steps"] * steps // cfg["steps"]),
                           eval_every=max(1, cfg["eval_every"] * steps // cfg["steps"]),
                           name=variant.checkpoint_name or f"h2h_{key}", seed=variant.seed)
    # the biLM numbers the tokens by frequency in the training text: a loader needs that order
    order = contender.token_order()
    return Run(contender.model, text.tokenizer, history, contender.evaluate, contender.batches,
               contender.tokens_in, None if order is None else {"token_order": order})


@dataclass(frozen=True)
class Recipe:
    """One chapter's model: its budgets (as in its notebook), how it pretrains, and its course
    checkpoint."""

    chapter: str  # the notebook whose budget cell sets the budgets
    pretrain: Callable[..., Run]  # (budget, steps=None, variant=Variant()) -> Run
    checkpoint_name: str  # the training checkpoint, the name the notebook gives it
    train_key: str | None  # where the budget keeps the TrainConfig fields (chapter 7: none)
    valid_key: str  # the validation loss that evaluate() reports
    valid_key_is: str  # what that loss is, in words
    kind: str  # the model class, for ctxlib.pretrained
    course_steps: int  # the course checkpoint's steps (the cpu budget's sizes)
    course_file: str  # under pretrained/
    context: Callable[[dict], int]  # tokens a training example reads, from the cpu budget
    tokens_in: Callable[[Any], int] | None  # tokens (padding not counted) in one training
    # batch; chapter 7's contenders bring their own (Run.tokens_in)
    batch_key: str = "batch"  # where the budget keeps the pretraining batch's size
    model_key: str = "model"  # and the model's sizes (chapter 7: in "sizes")

    @property
    def budgets(self) -> dict[str, dict]:
        return budgets_of(self.chapter)


RECIPES = {
    "elmo": Recipe("03_elmo", pretrain_elmo, "elmo_bilm", "train", "valid_loss",
                   "biLM loss (mean of both directions)", "bilm", 12_000, "elmo_wikitext2.pt",
                   lambda cfg: cfg["window"], lambda batch: batch[1].numel()),
    "gpt": Recipe("04_gpt", pretrain_gpt, "wiki_gpt", "wiki_train", "valid_loss", "loss",
                  "gpt", 12_000, "gpt_wikitext2.pt", lambda cfg: cfg["wiki_model"]["block_size"],
                  lambda batch: batch[0].numel(), batch_key="wiki_batch",
                  model_key="wiki_model"),
    # BERT's pairs vary in length: the attention mask marks the real tokens
    "bert": Recipe("05_bert", pretrain_bert, "bert", "pretrain", "mlm_loss",
                   "masked-LM loss", "bert_pretraining", 14_000, "bert_wikitext2.pt",
                   lambda cfg: cfg["model"]["max_position"], lambda batch: int(batch[2].sum())),
    # XLNet reads two segments per example, the second with the first as memory
    "xlnet": Recipe("06_xlnet", pretrain_xlnet, "xlnet", "pretrain",
                    "valid_loss", "permutation-LM loss", "xlnet_lm", 4_000,
                    "xlnet_wikitext2.pt", lambda cfg: 2 * cfg["seg_len"],
                    lambda batch: sum(segment[0].numel() for segment in batch)),
}
# Chapter 7: each objective on the shared text, vocabulary and sizes, 10 times the cpu run;
# what a recipe needs to know of an objective is its contender class's
for _key, _contender in h2h.CONTENDERS.items():
    RECIPES[f"h2h_{_key}"] = Recipe(
        "07_head_to_head", partial(pretrain_h2h, _key), f"h2h_{_key}", None,
        _contender.valid_key, _contender.valid_key_is, _contender.kind, 4_000,
        f"h2h_{_key}_wikitext2.pt", lambda cfg: cfg["sizes"]["context"], None)


def mean_tokens_per_step(recipe: Recipe, run: Run, samples: int = 50) -> float:
    """Tokens (padding not counted) in one training batch, the mean over ``samples`` batches."""
    return mean_tokens(run.batches, run.tokens_in or recipe.tokens_in, samples)


def export_course_checkpoint(run: Run, budget: str, model_name: str,
                             folder: Path = ROOT / "pretrained",
                             tokens_per_step: float | None = None) -> Path:
    """Write the finished run as the course checkpoint ``pretrained/<recipe.course_file>``,
    with how it was made, and say how much half precision changed its validation loss."""
    recipe = RECIPES[model_name]
    cfg = recipe.budgets[budget]
    history, key = run.history, recipe.valid_key
    # what the run recorded of itself (its TrainConfig, its settings), else its budget's
    train_cfg = history.run.get("config") or cfg[recipe.train_key]
    settings = history.run.get("settings") or {"batch": cfg[recipe.batch_key]}
    steps = history.steps[-1]
    context = recipe.context(cfg)
    info = {
        "data": "WikiText-2 train",
        "command": f"python scripts/pretrain.py {model_name} --course  "
                   f"(the {budget} budget's sizes)",
        "steps": steps,
        "batch": settings["batch"],
        "block_size": context,
        "tokens_seen": round(steps * (tokens_per_step or settings["batch"] * context)),
        "lr": train_cfg["lr"],
        "warmup_steps": train_cfg["warmup_steps"],
        "wall_seconds": round(sum(history.seconds), 1),
        "machine": f"{torch.get_num_threads()} CPU threads" if history.run.get("device") == "cpu"
        else str(history.run.get("device")),
        "torch": str(torch.__version__),
        "valid_steps": list(history.eval_steps),
        "valid_loss": [round(v, 4) for v in history.evals[key]],
        "valid_loss_is": recipe.valid_key_is,
    }
    if "sizes" in settings:  # chapter 7's contenders: the shared sizes they were built with
        info["sizes"] = settings["sizes"]
    info.update(run.info or {})
    for name, values in history.evals.items():  # the other validation curves (NSP, perplexity)
        if name != key:
            info[f"valid_{name.removeprefix('valid_')}"] = [round(v, 4) for v in values]
    path = folder / recipe.course_file
    half_loss = run.evaluate(pretrained.read(
        pretrained.save(path, model_name, recipe.kind, run.model, run.tokenizer, info)).model)[key]
    info["valid_loss_half_precision"] = round(half_loss, 4)
    pretrained.save(path, model_name, recipe.kind, run.model, run.tokenizer, info)
    print(f"{pretrained.read(path).describe()}; in half precision {half_loss:.3f}")
    print(f"wrote {path}: {path.stat().st_size / 1e6:.1f} MB, "
          f"sha256 {ctxlib.data.sha256_of(path)}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--budget", choices=ctxlib.BUDGETS, default=None,
                        help="default: CTXLIB_BUDGET, else gpu with CUDA, else cpu")
    parser.add_argument("--steps", type=int, default=None, help="override the budget's steps")
    parser.add_argument("--course", action="store_true",
                        help="the course checkpoint: the cpu budget's sizes, pretrained "
                             "longer (see RECIPES), written to pretrained/")
    args = parser.parse_args()
    if args.course:
        args.budget, args.steps = "cpu", args.steps or RECIPES[args.model].course_steps
    if args.budget:
        os.environ["CTXLIB_BUDGET"] = args.budget
    budget = ctxlib.current_budget()[0]
    recipe = RECIPES[args.model]
    run = recipe.pretrain(budget, args.steps)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{args.model} ({budget} budget): validation loss "
              f"{run.history.last_eval()[recipe.valid_key]:.3f}, checkpoint "
              f"{ctxlib.checkpoint_path(recipe.checkpoint_name)}")
        if args.course:
            export_course_checkpoint(run, budget, args.model,
                                     tokens_per_step=mean_tokens_per_step(recipe, run))


if __name__ == "__main__":
    main()
