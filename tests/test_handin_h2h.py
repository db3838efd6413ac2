"""Exercise 7.2 graded from the causal LM handed in: its weights are scored again as chapter
7's causal contender on the shared text's fixed validation windows, so a changed run that
reaches the target earns the points, and the chapter's run unchanged, another objective's run,
another context, a forged history or another vocabulary's model earn nothing."""

import dataclasses

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
from ctxlib import head_to_head as h2h
from ctxlib.checkpoints import CheckpointStore

# A test-sized exercise: the "chapter's gpu run" is a one-block causal LM of width 16 reading
# 16 tokens of the shared text (WikiText-2 in the chapter's 8,000-entry BPE), trained for 30
# steps and scored on 4 validation batches.
SIZES = {"d_model": 16, "n_layer": 1, "n_head": 2, "dropout": 0.0, "batch": 8, "context": 16,
         "valid_batches": 4}
CHAPTER_RUN = {"d_model": 16, "n_layer": 1, "n_head": 2, "dropout": 0.0, "batch": 8,
               "steps": 30, "warmup_steps": 2}
FIXED = {"context": 16, "valid_batches": 4}
TARGET = 8.0
EXERCISE = dataclasses.replace(
    handin.EXERCISES["7.2"], file="tiny_h2h_exercise", target=TARGET, chapter_run=CHAPTER_RUN,
    fixed=FIXED)


@pytest.fixture(scope="module")
def text():
    return handin.shared_wikitext2(handin.H2H_BPE_VOCAB)


def run(root, monkeypatch, text, key="causal", steps=30, lr=3e-3, **size_changes):
    """Train the test-sized contender ``key`` under the gpu budget; return its checkpoint."""
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    monkeypatch.setenv("CTXLIB_CHECKPOINTS", str(root))
    contender = h2h.build(key, text, h2h.Sizes(**{**SIZES, **size_changes}))
    h2h.pretrain(contender, steps, lr, warmup_steps=2, name=EXERCISE.file, progress=False)
    return EXERCISE.handed_in(root)


def grade(path, capsys):
    return grade_checkpoint(EXERCISE, path, capsys)


def _untrained(path):
    blob = CheckpointStore.read(path)
    from ctxlib.gpt import GPT, GPTConfig

    torch.manual_seed(1)
    blob["state"]["model"] = GPT(GPTConfig(**blob["identity"]["model"]["config"])).state_dict()
    return blob


def test_a_changed_run_that_reaches_the_target_earns_the_points(tmp_path, monkeypatch, text,
                                                                capsys):
    path = run(tmp_path, monkeypatch, text, steps=60)
    message, failed = grade(path, capsys)
    assert not failed and message.startswith("Correct!"), message
    assert "changed steps" in message
    assert EXERCISE.rescore(CheckpointStore.read(path)) < TARGET < EXERCISE.rescore(
        _untrained(path))


def test_the_score_is_the_contenders_own_validation_loss(tmp_path, monkeypatch, text):
    path = run(tmp_path, monkeypatch, text, steps=60)
    blob = CheckpointStore.read(path)
    contender = h2h.build("causal", text, h2h.Sizes(**SIZES))
    contender.model.load_state_dict(blob["state"]["model"])
    expected = contender.evaluate(contender.model)["valid_loss"]
    assert EXERCISE.rescore(blob) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(blob["state"]["history"]["evals"]["valid_loss"][-1],
                                     rel=1e-5)


def test_the_chapters_own_run_another_objective_or_context_earns_nothing(tmp_path, monkeypatch,
                                                                        text, capsys):
    message, failed = grade(run(tmp_path, monkeypatch, text), capsys)
    assert failed and "the chapter's own gpu run" in message

    message, failed = grade(run(tmp_path, monkeypatch, text, steps=60, context=32), capsys)
    assert failed and "keep context at 16" in message

    message, failed = grade(run(tmp_path, monkeypatch, text, key="mlm", steps=60), capsys)
    assert failed and "not a run of chapter 7's causal contender" in message


def test_a_forged_history_or_another_vocabulary_earns_nothing(tmp_path, monkeypatch, text,
                                                             capsys):
    path = run(tmp_path, monkeypatch, text, steps=60)
    blob = _untrained(path)
    assert_a_forged_history_earns_nothing(EXERCISE, path, blob, "valid_loss", 1.0, capsys)

    blob["identity"]["model"]["config"]["vocab_size"] = 4000
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "another vocabulary" in message


def test_the_exercises_chapter_run_is_the_notebooks_gpu_budget():
    """The fields a change is looked for in, and those that must stay, hold chapter 7's gpu
    budget's values; so does the grader's vocabulary."""
    gpu = notebook_gpu_budget("07_head_to_head")
    assert_runs_of_the_chapter(handin.EXERCISES["7.2"],
                               {**dataclasses.asdict(h2h.Sizes(**gpu["sizes"])), **gpu})
    assert gpu["bpe_vocab"] == handin.H2H_BPE_VOCAB and gpu["articles"] is None
