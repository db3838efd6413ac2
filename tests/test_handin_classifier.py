"""Exercise 2.4 graded from the classifier handed in: its weights are scored again on SST-2's
dev sentences, so a changed run that reaches the target earns the points, and the chapter's run
unchanged, another tokenizer, a forged history or another model's checkpoint earn nothing."""

import dataclasses
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from handin_helpers import (
    assert_a_forged_history_earns_nothing,
    assert_runs_of_the_chapter,
    forge,
    notebook_gpu_budget,
)
from handin_helpers import grade as grade_checkpoint

from ctxlib import handin
from ctxlib.batches import pad_batch
from ctxlib.checkpoints import CheckpointStore
from ctxlib.data import load_sst2
from ctxlib.layers import TransformerClassifier
from ctxlib.train import TrainConfig, train

# A test-sized exercise: the "chapter's gpu run" is a one-block classifier of width 16 trained
# for 40 steps of 32 SST-2 items (in the chapter's 8,000-entry tokenizer), scored on the first
# 300 dev sentences: about 0.5, a guess; 600 steps reach 0.67.
CHAPTER_RUN = {"width": 16, "heads": 2, "layers": 1, "dropout": 0.0, "batch": 32, "steps": 40,
               "lr": 1e-2}
FIXED = {"bpe_vocab": 8000, "max_len": 64, "train_sentences": None}
TARGET = 0.6
EXERCISE = dataclasses.replace(
    handin.EXERCISES["2.4"], file="tiny_classifier_exercise", target=TARGET,
    chapter_run=CHAPTER_RUN, fixed=FIXED, rescore=partial(handin.sst2_dev_accuracy,
                                                          sentences=300))


@pytest.fixture(scope="module")
def items():
    """The chapter's tokenizer, SST-2's training items in its ids and their labels."""
    bpe = handin.sst2_bpe(handin.SST2_BPE_VOCAB)
    train_set = load_sst2("train")
    return bpe, [bpe.encode(" " + s)[:64] for s, _ in train_set], torch.tensor(
        [y for _, y in train_set])


def run(root, monkeypatch, items, **changes):
    """Train the test-sized run with ``changes`` under the gpu budget; return its checkpoint."""
    bpe, train_ids, labels = items
    settings = {**CHAPTER_RUN, **FIXED, **changes}
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    path = root / "checkpoints" / "gpu" / f"{EXERCISE.file}.pt"

    def batches(generator):
        rows = torch.randint(0, len(train_ids), (settings["batch"],), generator=generator)
        ids, mask = pad_batch([train_ids[r] for r in rows])
        return ids, mask, labels[rows]

    torch.manual_seed(0)
    model = TransformerClassifier(bpe.vocab_size, settings["width"], settings["heads"],
                                  settings["layers"], settings["max_len"],
                                  dropout=settings["dropout"])
    train(model, batches, lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]),
          TrainConfig(steps=settings["steps"], lr=settings["lr"], checkpoint_path=str(path),
                      progress=False, eval_every=settings["steps"]),
          eval_fn=lambda m: {"dev_accuracy": dev_accuracy(m, bpe)},
          device="cpu", settings=settings)
    return path


@torch.no_grad()
def dev_accuracy(model, bpe, sentences=300):
    """The chapter's dev accuracy on the first ``sentences`` dev sentences, computed apart
    from ``ctxlib.layers.classifier_accuracy`` (what the chapter and the grader call): one
    sentence at a time, without padding, so that batching cannot hide a difference."""
    dev = load_sst2("dev")[:sentences]
    correct = 0
    for sentence, label in dev:
        ids = torch.tensor([bpe.encode(" " + sentence)[:64]])  # (1, T)
        correct += int(model(ids, torch.ones_like(ids)).argmax(-1).item() == label)
    return correct / len(dev)


def grade(path, capsys):
    return grade_checkpoint(EXERCISE, path, capsys)


def _untrained(path):
    blob = CheckpointStore.read(path)
    vocab, width = blob["identity"]["model"]["shapes"]["tokens.weight"]
    torch.manual_seed(1)
    blob["state"]["model"] = TransformerClassifier(vocab, width, 2, 1, 64).state_dict()
    return blob


def test_a_changed_run_that_reaches_the_target_earns_the_points(tmp_path, monkeypatch, items,
                                                                capsys):
    path = run(tmp_path, monkeypatch, items, steps=600)
    message, failed = grade(path, capsys)
    assert not failed and message.startswith("Correct!"), message
    assert "changed steps" in message
    assert EXERCISE.rescore(CheckpointStore.read(path)) >= TARGET > EXERCISE.rescore(
        _untrained(path))


def test_the_score_is_the_chapters_dev_accuracy(tmp_path, monkeypatch, items):
    path = run(tmp_path, monkeypatch, items, steps=600)
    blob = CheckpointStore.read(path)
    recorded = blob["state"]["history"]["evals"]["dev_accuracy"][-1]
    assert EXERCISE.rescore(blob) == pytest.approx(recorded)


def test_the_chapters_own_run_or_another_tokenizer_earns_nothing(tmp_path, monkeypatch, items,
                                                                capsys):
    message, failed = grade(run(tmp_path, monkeypatch, items), capsys)
    assert failed and "the chapter's own gpu run" in message

    message, failed = grade(run(tmp_path, monkeypatch, items, steps=600, bpe_vocab=4000),
                            capsys)
    assert failed and "keep bpe_vocab at 8000" in message


def test_a_forged_history_or_another_models_checkpoint_earns_nothing(tmp_path, monkeypatch,
                                                                     items, capsys):
    path = run(tmp_path, monkeypatch, items, steps=600)
    blob = _untrained(path)
    assert_a_forged_history_earns_nothing(EXERCISE, path, blob, "dev_accuracy", 0.99, capsys)

    blob["identity"]["model"]["shapes"]["tokens.weight"] = [4000, 16]  # another tokenizer's
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "not chapter 2's SST-2 classifier" in message


def test_the_exercises_chapter_run_is_the_notebooks_gpu_budget():
    """The fields a change is looked for in, and those that must stay, hold chapter 2's gpu
    budget's values (the classifier's dropout is the chapter's 0.1)."""
    gpu = {**notebook_gpu_budget("02_attention"), "dropout": 0.1}
    assert_runs_of_the_chapter(handin.EXERCISES["2.4"], gpu)
    assert gpu["bpe_vocab"] == handin.SST2_BPE_VOCAB


def test_the_classifier_refuses_inputs_it_cannot_read():
    model = TransformerClassifier(100, 16, 2, 1, max_len=8)
    with pytest.raises(ValueError, match="do not fit the 8 positions"):
        model(torch.zeros(1, 9, dtype=torch.long), torch.ones(1, 9))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 100\)"):
        model(torch.full((1, 4), 100), torch.ones(1, 4))
