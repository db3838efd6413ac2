"""Exercise 3.3 graded from the biLM handed in: its weights are scored again on WikiText-2's
validation words, so a changed run that reaches the target earns the points, and the chapter's
run unchanged, a forged history or another model's checkpoint earn nothing."""

import dataclasses
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

from ctxlib import elmo, handin
from ctxlib.checkpoints import CheckpointStore
from ctxlib.data import load_wikitext2
from ctxlib.static import Vocab
from ctxlib.train import TrainConfig, train

# A test-sized exercise: the "chapter's gpu run" is a one-layer biLM of width 16 trained for
# 40 steps on WikiText-2's first 20,000 words, scored on 2,000 validation words: perplexity
# 19,457 (24,716 untrained, among 33,278 words). With a rate of 10^-2 instead it reaches 3,506.
CHAPTER_RUN = {"dim": 16, "hidden": 16, "layers": 1, "max_chars": 10, "dropout": 0.0,
               "filters": [[1, 8], [2, 8]], "steps": 40, "lr": 3e-3, "warmup_steps": 2,
               "batch": 8, "window": 10}
TARGET = 5000.0
EXERCISE = dataclasses.replace(
    handin.EXERCISES["3.3"], file="tiny_bilm_exercise", target=TARGET, chapter_run=CHAPTER_RUN,
    rescore=partial(handin.bilm_forward_perplexity, valid_words=2000))
MODEL_FIELDS = ("dim", "hidden", "layers", "max_chars", "dropout", "filters")


@pytest.fixture(scope="module")
def words():
    """WikiText-2's vocabulary (the chapter's) and its first 20,000 training words as ids."""
    wiki = load_wikitext2("train")
    vocab = Vocab.from_text(wiki, min_count=1)
    return vocab, torch.tensor([vocab.stoi[w] for w in wiki.split()[:20_000]])


def run(root, monkeypatch, words, budget="gpu", **changes):
    """Train the test-sized run with ``changes`` under ``budget``; return its checkpoint."""
    vocab, train_ids = words
    settings = {**CHAPTER_RUN, **changes}
    monkeypatch.setenv("CTXLIB_BUDGET", budget)
    path = root / "checkpoints" / budget / f"{EXERCISE.file}.pt"
    config = elmo.ELMoConfig(vocab_size=len(vocab), **{k: settings[k] for k in MODEL_FIELDS})
    spelled = elmo.spell_vocabulary(vocab.itos, config.max_chars)
    torch.manual_seed(0)
    batch, window = settings["batch"], settings["window"]
    train(elmo.BiLM(config),
          lambda g: elmo.lm_batch(train_ids, spelled, batch, window, g), elmo.lm_loss,
          TrainConfig(steps=settings["steps"], lr=settings["lr"],
                      warmup_steps=settings["warmup_steps"], checkpoint_path=str(path),
                      progress=False),
          device="cpu", settings={"batch": batch, "window": window})
    return path


def grade(path, capsys):
    return grade_checkpoint(EXERCISE, path, capsys)


def test_a_changed_run_that_reaches_the_target_earns_the_points(tmp_path, monkeypatch, words,
                                                                capsys):
    path = run(tmp_path, monkeypatch, words, lr=1e-2)
    message, failed = grade(path, capsys)
    assert not failed and message.startswith("Correct!"), message
    assert "changed lr" in message
    trained = EXERCISE.rescore(CheckpointStore.read(path))
    assert trained < TARGET < EXERCISE.rescore(_untrained(path))


def _untrained(path):
    blob = CheckpointStore.read(path)
    config = elmo.ELMoConfig(**blob["identity"]["model"]["config"])
    torch.manual_seed(1)
    blob["state"]["model"] = elmo.BiLM(config).state_dict()
    return blob


def test_the_score_is_the_chapters_validation_perplexity(tmp_path, monkeypatch, words):
    """Scored again, the run's weights give the perplexity the chapter's evaluate gives."""
    vocab, _ = words
    path = run(tmp_path, monkeypatch, words, window=12)
    blob = CheckpointStore.read(path)
    model = handin.with_weights(elmo.BiLM(elmo.ELMoConfig(**blob["identity"]["model"]["config"])),
                                blob)
    unk = vocab.index("<unk>")
    valid = [vocab.stoi.get(w, unk) for w in load_wikitext2("valid").split()[:2000]]
    windows = elmo.validation_windows(torch.tensor(valid), 12)  # the run's own window
    expected = elmo.evaluate_lm(model, windows, elmo.spell_vocabulary(vocab.itos, 10), 64)
    assert EXERCISE.rescore(blob) == pytest.approx(expected["forward_ppl"], rel=1e-6)


def test_the_chapters_own_run_or_a_forged_history_earns_nothing(tmp_path, monkeypatch, words,
                                                                capsys):
    path = run(tmp_path, monkeypatch, words)
    message, failed = grade(path, capsys)
    assert failed and "the chapter's own gpu run" in message

    changed = run(tmp_path, monkeypatch, words, dropout=0.1)
    assert_a_forged_history_earns_nothing(EXERCISE, changed, _untrained(changed), "forward_ppl",
                                          50.0, capsys)


def test_another_models_checkpoint_earns_nothing(tmp_path, monkeypatch, words, capsys):
    path = run(tmp_path, monkeypatch, words, lr=1e-2)
    blob = CheckpointStore.read(path)
    blob["identity"]["model"]["config"]["vocab_size"] = 65  # a character model's, say
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "not a biLM of WikiText-2's words" in message


def test_the_exercises_chapter_run_is_the_notebooks_gpu_budget():
    """The fields a change is looked for in hold chapter 3's gpu budget's values."""
    gpu = notebook_gpu_budget("03_elmo")
    assert_runs_of_the_chapter(handin.EXERCISES["3.3"], {**gpu["model"], **gpu["train"],
                                                         "batch": gpu["batch"],
                                                         "window": gpu["window"]})
