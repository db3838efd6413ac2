"""Exercise 5.3 graded from the BERT handed in: its weights are scored again on the chapter's
fixed validation pairs, so a changed run that reaches the target earns the points, and the
chapter's run unchanged, pairs of another length, a forged history or another model's
checkpoint earn nothing."""

import dataclasses
import random
from functools import partial

import pytest
import torch
from handin_helpers import (
    assert_a_forged_history_earns_nothing,
    assert_runs_of_the_chapter,
    forge,
    notebook_gpu_budget,
)
from handin_helpers import grade as grade_checkpoint

from ctxlib import bert as bert_lib
from ctxlib import handin
from ctxlib.checkpoints import CheckpointStore
from ctxlib.train import TrainConfig, train

# A test-sized exercise: the "chapter's gpu run" is a one-layer BERT of width 16 reading pairs
# of up to 32 tokens (WikiText-2 in the chapter's 8,000-entry BPE), trained for 30 steps and
# scored on 64 validation pairs.
CHAPTER_RUN = {"n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.0, "steps": 30,
               "lr": 3e-3, "warmup_steps": 2, "batch": 8}
FIXED = {"max_position": 32}
TARGET = 8.0
EXERCISE = dataclasses.replace(
    handin.EXERCISES["5.3"], file="tiny_bert_exercise", target=TARGET, chapter_run=CHAPTER_RUN,
    fixed=FIXED, rescore=partial(handin.bert_mlm_loss, pairs=64))
MODEL_FIELDS = ("n_layer", "n_head", "d_model", "dropout", "max_position")


@pytest.fixture(scope="module")
def documents():
    """The chapter's tokenizer and WikiText-2's training articles in its ids."""
    bpe, train_docs, _ = bert_lib.wikitext2_documents(handin.BERT_BPE_VOCAB)
    return bpe, train_docs


def run(root, monkeypatch, documents, **changes):
    """Train the test-sized run with ``changes`` under the gpu budget; return its checkpoint."""
    bpe, train_docs = documents
    settings = {**CHAPTER_RUN, **FIXED, **changes}
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    path = root / "checkpoints" / "gpu" / f"{EXERCISE.file}.pt"
    config = bert_lib.BertConfig(vocab_size=bpe.vocab_size,
                                 **{k: settings[k] for k in MODEL_FIELDS})

    def batches(generator):
        rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=generator)))
        return bert_lib.pretraining_batch(train_docs, settings["batch"], bpe,
                                          config.max_position - 3, rng, generator)

    torch.manual_seed(0)
    train(bert_lib.BertForPreTraining(config), batches, bert_lib.pretraining_loss,
          TrainConfig(steps=settings["steps"], lr=settings["lr"],
                      warmup_steps=settings["warmup_steps"], checkpoint_path=str(path),
                      progress=False),
          device="cpu", settings={"batch": settings["batch"]})
    return path


def grade(path, capsys):
    return grade_checkpoint(EXERCISE, path, capsys)


def _untrained(path):
    blob = CheckpointStore.read(path)
    config = bert_lib.BertConfig(**blob["identity"]["model"]["config"])
    torch.manual_seed(1)
    blob["state"]["model"] = bert_lib.BertForPreTraining(config).state_dict()
    return blob


def test_a_changed_run_that_reaches_the_target_earns_the_points(tmp_path, monkeypatch,
                                                                documents, capsys):
    path = run(tmp_path, monkeypatch, documents, lr=1e-2)
    message, failed = grade(path, capsys)
    assert not failed and message.startswith("Correct!"), message
    assert "changed lr" in message
    assert EXERCISE.rescore(CheckpointStore.read(path)) < TARGET < EXERCISE.rescore(
        _untrained(path))


def test_the_score_is_the_chapters_validation_loss(tmp_path, monkeypatch, documents):
    bpe, _ = documents
    path = run(tmp_path, monkeypatch, documents, lr=1e-2)
    blob = CheckpointStore.read(path)
    model = handin.with_weights(
        bert_lib.BertForPreTraining(bert_lib.BertConfig(**blob["identity"]["model"]["config"])),
        blob)
    _, _, valid_docs = bert_lib.wikitext2_documents(handin.BERT_BPE_VOCAB)
    # the chapter's validation set: 64 pairs drawn with seed 0, for inputs of 32 tokens
    valid = bert_lib.pretraining_batch(valid_docs, 64, bpe, 29, random.Random(0),
                                       torch.Generator().manual_seed(0))
    expected = bert_lib.evaluate_pretraining(model, valid)["mlm_loss"]
    assert EXERCISE.rescore(blob) == pytest.approx(expected, rel=1e-6)


def test_the_chapters_own_run_or_other_pairs_earn_nothing(tmp_path, monkeypatch, documents,
                                                         capsys):
    message, failed = grade(run(tmp_path, monkeypatch, documents), capsys)
    assert failed and "the chapter's own gpu run" in message

    message, failed = grade(run(tmp_path, monkeypatch, documents, lr=1e-2, max_position=24),
                            capsys)
    assert failed and "keep max_position at 32" in message


def test_a_forged_history_or_another_models_checkpoint_earns_nothing(tmp_path, monkeypatch,
                                                                     documents, capsys):
    path = run(tmp_path, monkeypatch, documents, lr=1e-2)
    blob = _untrained(path)
    assert_a_forged_history_earns_nothing(EXERCISE, path, blob, "mlm_loss", 1.0, capsys)

    blob["identity"]["model"]["config"]["vocab_size"] = 4000  # another tokenizer's model
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "not a BERT of WikiText-2 with the chapter's tokenizer" in message


def test_the_exercises_chapter_run_is_the_notebooks_gpu_budget():
    """The fields a change is looked for in, and those that must stay, hold chapter 5's gpu
    budget's values; so does the grader's validation set."""
    gpu = notebook_gpu_budget("05_bert")
    assert_runs_of_the_chapter(handin.EXERCISES["5.3"],
                               {**gpu["model"], **gpu["pretrain"], "batch": gpu["batch"]})
    assert gpu["bpe_vocab"] == handin.BERT_BPE_VOCAB
    assert gpu["val_pairs"] == handin.BERT_VALID_PAIRS
    assert gpu["wiki_articles"] is None  # the grader's tokenizer reads every article
