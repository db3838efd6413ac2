"""Exercise 6.3 graded from the XLNet handed in: its weights are scored again on the chapter's
fixed validation windows and orders, so a changed run that reaches the target earns the points,
and the chapter's run unchanged, a run of another task, a forged history or another model's
checkpoint earn nothing."""

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

from ctxlib import handin
from ctxlib import xlnet as xlnet_lib
from ctxlib.checkpoints import CheckpointStore
from ctxlib.train import TrainConfig, train

# A test-sized exercise: the "chapter's gpu run" is a one-layer XLNet of width 16 on segments
# of 16 tokens (WikiText-2 in the chapter's 8,000-entry BPE), trained for 30 steps and scored
# on 64 validation windows.
CHAPTER_RUN = {"n_layer": 1, "n_head": 2, "d_model": 16, "dropout": 0.0, "steps": 30,
               "lr": 3e-3, "warmup_steps": 2, "batch": 8}
FIXED = {"seg_len": 16, "predict_every": 4, "wiki_chars": None}
TARGET = 8.0
EXERCISE = dataclasses.replace(
    handin.EXERCISES["6.3"], file="tiny_xlnet_exercise", target=TARGET, chapter_run=CHAPTER_RUN,
    fixed=FIXED, rescore=partial(handin.xlnet_permutation_loss, windows=64))
MODEL_FIELDS = ("n_layer", "n_head", "d_model", "dropout")


@pytest.fixture(scope="module")
def stream():
    """The chapter's tokenizer and WikiText-2's first 100,000 training tokens in its ids."""
    from ctxlib.batches import wikitext2_bpe_streams

    bpe, train_ids, _ = wikitext2_bpe_streams(handin.XLNET_BPE_VOCAB)
    return bpe, train_ids[:100_000]


def run(root, monkeypatch, stream, **changes):
    """Train the test-sized run with ``changes`` under the gpu budget; return its checkpoint."""
    bpe, train_ids = stream
    settings = {**CHAPTER_RUN, **FIXED, **changes}
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    path = root / "checkpoints" / "gpu" / f"{EXERCISE.file}.pt"
    seg_len = settings["seg_len"]
    num_predict = seg_len // settings["predict_every"]
    config = xlnet_lib.XLNetConfig(vocab_size=bpe.vocab_size, mem_len=seg_len,
                                   **{k: settings[k] for k in MODEL_FIELDS})
    torch.manual_seed(0)
    train(xlnet_lib.XLNetLM(config),
          lambda g: xlnet_lib.pretraining_batch(train_ids, settings["batch"], seg_len,
                                                num_predict, g),
          xlnet_lib.pretraining_loss,
          TrainConfig(steps=settings["steps"], lr=settings["lr"],
                      warmup_steps=settings["warmup_steps"], checkpoint_path=str(path),
                      progress=False),
          device="cpu",
          settings={k: settings[k] for k in ("batch", "seg_len", "predict_every", "wiki_chars")})
    return path


def grade(path, capsys):
    return grade_checkpoint(EXERCISE, path, capsys)


def _untrained(path):
    blob = CheckpointStore.read(path)
    config = xlnet_lib.XLNetConfig(**blob["identity"]["model"]["config"])
    torch.manual_seed(1)
    blob["state"]["model"] = xlnet_lib.XLNetLM(config).state_dict()
    return blob


def test_a_changed_run_that_reaches_the_target_earns_the_points(tmp_path, monkeypatch, stream,
                                                                capsys):
    path = run(tmp_path, monkeypatch, stream, lr=1e-2)
    message, failed = grade(path, capsys)
    assert not failed and message.startswith("Correct!"), message
    assert "changed lr" in message
    assert EXERCISE.rescore(CheckpointStore.read(path)) < TARGET < EXERCISE.rescore(
        _untrained(path))


def test_the_score_is_the_chapters_validation_loss(tmp_path, monkeypatch, stream):
    path = run(tmp_path, monkeypatch, stream, lr=1e-2)
    blob = CheckpointStore.read(path)
    model = handin.with_weights(
        xlnet_lib.XLNetLM(xlnet_lib.XLNetConfig(**blob["identity"]["model"]["config"])), blob)
    _, valid_ids = handin.wikitext2_bpe_validation(handin.XLNET_BPE_VOCAB)
    batches = xlnet_lib.validation_batches(valid_ids, 64, 16, 4)  # the run's 16 and 16 // 4
    expected = xlnet_lib.evaluate_pretraining(model, batches)["valid_loss"]
    assert EXERCISE.rescore(blob) == pytest.approx(expected, rel=1e-6)


def test_the_chapters_own_run_or_another_task_earns_nothing(tmp_path, monkeypatch, stream,
                                                           capsys):
    message, failed = grade(run(tmp_path, monkeypatch, stream), capsys)
    assert failed and "the chapter's own gpu run" in message

    # fewer predicted tokens make an easier task: its loss is not comparable
    message, failed = grade(run(tmp_path, monkeypatch, stream, lr=1e-2, predict_every=8), capsys)
    assert failed and "keep predict_every at 4" in message


def test_a_forged_history_or_another_models_checkpoint_earns_nothing(tmp_path, monkeypatch,
                                                                     stream, capsys):
    path = run(tmp_path, monkeypatch, stream, lr=1e-2)
    blob = _untrained(path)
    assert_a_forged_history_earns_nothing(EXERCISE, path, blob, "valid_loss", 1.0, capsys)

    blob["identity"]["model"]["config"]["vocab_size"] = 4000  # another tokenizer's model
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "not an XLNet of WikiText-2 with the chapter's tokenizer" in message


def test_the_exercises_chapter_run_is_the_notebooks_gpu_budget():
    """The fields a change is looked for in, and those that must stay, hold chapter 6's gpu
    budget's values; so does the tokenizer the grader builds."""
    gpu = notebook_gpu_budget("06_xlnet")
    assert_runs_of_the_chapter(handin.EXERCISES["6.3"],
                               {**gpu["model"], **gpu["pretrain"], **gpu})
    assert gpu["bpe_vocab"] == handin.XLNET_BPE_VOCAB
    assert gpu["eval_windows"] == handin.XLNET_VALID_WINDOWS
