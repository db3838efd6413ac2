"""GPU exercises graded from the weights handed in: a genuine, changed run that reaches the
target earns the points; a chapter run unchanged, another budget's run, an unfinished run, a
forged history or forged weights, a damaged file, a missing file earn nothing."""

import dataclasses
from functools import partial

import pytest
import torch
from handin_helpers import assert_runs_of_the_chapter, forge, notebook_gpu_budget
from handin_helpers import grade as grade_checkpoint

from ctxlib import checks, handin
from ctxlib.batches import lm_windows
from ctxlib.checkpoints import CheckpointStore
from ctxlib.data import load_tinyshakespeare
from ctxlib.gpt import GPT, GPTConfig
from ctxlib.tokenizers import CharTokenizer
from ctxlib.train import TrainConfig, train

# A test-sized exercise: the "chapter's gpu run" is a one-layer GPT of width 32 trained for
# 60 steps; a uniform guess over 65 characters scores 4.17 nats, the target is 3.3.
CHAPTER_RUN = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "dropout": 0.0,
               "steps": 60, "lr": 3e-3, "batch": 16}
EXERCISE = dataclasses.replace(
    handin.EXERCISES["4.4"], file="tiny_exercise", target=3.3, chapter_run=CHAPTER_RUN,
    rescore=partial(handin.char_gpt_validation_loss, max_windows=40))


@pytest.fixture(scope="module")
def characters():
    text = load_tinyshakespeare()
    chars = CharTokenizer.train(text)
    data = torch.tensor(chars.encode(text))
    return chars, data[: int(0.9 * len(data))]


def run(root, monkeypatch, characters, budget="gpu", stop_at=None, **changes):
    """Train the test-sized run with ``changes`` under ``budget``; return its checkpoint."""
    chars, train_data = characters
    settings = {**CHAPTER_RUN, **changes}
    monkeypatch.setenv("CTXLIB_BUDGET", budget)
    path = root / "checkpoints" / budget / f"{EXERCISE.file}.pt"
    model_fields = {k: settings[k] for k in ("n_layer", "n_head", "n_embd", "block_size",
                                             "dropout")}
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=chars.vocab_size, **model_fields))
    block, batch = model_fields["block_size"], settings["batch"]
    train(model, lambda g: lm_windows(train_data, batch, block, g),
          lambda m, b: m(b[0], targets=b[1]).loss,
          TrainConfig(steps=settings["steps"], lr=settings["lr"], checkpoint_path=str(path),
                      progress=False),
          device="cpu", settings={"batch": batch})
    if stop_at is not None:  # an unfinished run: its checkpoint says so
        blob = CheckpointStore.read(path)
        blob["state"]["step"] = stop_at
        forge(path, blob)
    return path


def grade(path, capsys):
    return grade_checkpoint(EXERCISE, path, capsys)


def test_a_changed_run_that_reaches_the_target_earns_the_points(tmp_path, monkeypatch,
                                                                characters, capsys):
    path = run(tmp_path, monkeypatch, characters, n_embd=64)
    message, failed = grade(path, capsys)
    assert not failed and message.startswith("Correct!"), message
    assert "changed n_embd" in message
    score = handin.char_gpt_validation_loss(CheckpointStore.read(path), max_windows=40)
    assert score < 3.3 < handin.char_gpt_validation_loss(_untrained_blob(path), max_windows=40)


def _untrained_blob(path):
    blob = CheckpointStore.read(path)
    config = GPTConfig(**blob["identity"]["model"]["config"])
    torch.manual_seed(1)
    blob["state"]["model"] = GPT(config).state_dict()
    return blob


def test_the_chapters_own_run_unchanged_earns_nothing(tmp_path, monkeypatch, characters,
                                                      capsys):
    message, failed = grade(run(tmp_path, monkeypatch, characters), capsys)
    assert failed and "the chapter's own gpu run" in message


def test_another_budgets_run_renamed_earns_nothing(tmp_path, monkeypatch, characters, capsys):
    cpu_run = run(tmp_path, monkeypatch, characters, budget="cpu", n_embd=64)
    handed_in = EXERCISE.handed_in(tmp_path)
    handed_in.parent.mkdir(parents=True, exist_ok=True)
    cpu_run.rename(handed_in)
    message, failed = grade(handed_in, capsys)
    assert failed and "trained under the cpu budget" in message


def test_an_unfinished_run_earns_nothing(tmp_path, monkeypatch, characters, capsys):
    path = run(tmp_path, monkeypatch, characters, n_embd=64, stop_at=30)
    message, failed = grade(path, capsys)
    assert failed and "stopped at step 30 of 60" in message


def test_forged_history_and_forged_weights_earn_nothing(tmp_path, monkeypatch, characters,
                                                        capsys):
    path = run(tmp_path, monkeypatch, characters, n_embd=64)
    blob = _untrained_blob(path)  # untrained weights, with a history claiming a low loss
    blob["state"]["history"]["evals"] = {"valid_loss": [0.1]}
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "is above the target 3.3" in message


def test_a_damaged_or_foreign_file_earns_nothing(tmp_path, monkeypatch, characters, capsys):
    path = run(tmp_path, monkeypatch, characters, n_embd=64)
    blob = CheckpointStore.read(path)
    blob["state"]["model"]["lm_head.weight"] = blob["state"]["model"]["lm_head.weight"] * 0
    torch.save(blob, path)  # edited without a new checksum
    message, failed = grade(path, capsys)
    assert failed and "does not match its checksum" in message

    blob["identity"]["model"]["config"]["vocab_size"] = 100  # another model's checkpoint
    forge(path, blob)
    message, failed = grade(path, capsys)
    assert failed and "not a character GPT of Tiny Shakespeare" in message


def test_a_missing_file_says_what_to_hand_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CTXLIB_BUDGET", "smoke")
    missing = tmp_path / "checkpoints" / "gpu" / "tiny_exercise.pt"
    checks.check_gpu_exercise(EXERCISE, missing)
    captured = capsys.readouterr()
    assert "Correct!" not in captured.out
    assert "Not graded" in captured.err and "hand in checkpoints/gpu/tiny_exercise.pt" in (
        captured.err.replace("\n", " "))
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")  # on the gpu budget, a missing file fails
    with pytest.raises(checks.ExerciseFailed, match="there is no checkpoint"):
        checks.check_gpu_exercise(EXERCISE, missing)


def test_the_exercises_chapter_run_is_the_notebooks_gpu_budget():
    """The fields a change is looked for in hold the chapter's gpu budget's values."""
    gpu = notebook_gpu_budget("04_gpt")
    # the chapter's character GPT trains with weight decay 0.1 (the exercise cell's default)
    # and TrainConfig's default schedule floor
    assert_runs_of_the_chapter(handin.EXERCISES["4.4"], {
        "weight_decay": 0.1, "min_lr_ratio": TrainConfig.min_lr_ratio, **gpu["char_model"],
        **gpu["char_train"], "batch": gpu["char_batch"]})


def test_a_run_capped_for_a_code_path_test_is_not_graded(tmp_path, monkeypatch, characters,
                                                          capsys):
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "5")
    path = run(tmp_path, monkeypatch, characters, n_embd=64)
    message, failed = grade(path, capsys)
    assert not failed and "Not graded: this run was capped at 5 steps" in message
    assert "Correct!" not in message


def test_the_published_fine_tuning_is_scored_again_from_its_features_and_classifier(
        tmp_path, capsys, monkeypatch):
    from ctxlib.data import load_sst2

    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")  # the exercise's budget; a cpu run: below

    dev = [label for _, label in load_sst2("dev")]
    labels = torch.tensor(dev)
    # Features that put the label in one coordinate, flipped for every tenth sentence: a
    # classifier reading that coordinate is right on 90% of them.
    features = torch.zeros(len(dev), handin.FINETUNE_WIDTH)
    features[:, 0] = (labels * 2 - 1).float()
    features[::10, 0] *= -1
    classifier = torch.nn.Linear(handin.FINETUNE_WIDTH, 2)
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.zero_()
        classifier.weight[1, 0], classifier.weight[0, 0] = 1.0, -1.0
    expected = ((features[:, 0] > 0).long() == labels).float().mean().item()
    path = handin.save_finetune(range(1000), features, classifier, tmp_path / "ok.pt")
    checks.check_published_finetune(path)
    assert f"dev accuracy {expected:.3f}" in capsys.readouterr().out
    assert expected >= handin.FINETUNE_TARGET

    classifier.weight.data[[0, 1]] = classifier.weight.data[[1, 0]]  # now 10% right
    low = handin.save_finetune(range(1000), features, classifier, tmp_path / "low.pt")
    with pytest.raises(checks.ExerciseFailed, match="below the target"):
        checks.check_published_finetune(low)
    few = handin.save_finetune(range(100), features, classifier, tmp_path / "few.pt")
    with pytest.raises(checks.ExerciseFailed, match="1,000 distinct"):
        checks.check_published_finetune(few)
    narrow = handin.save_finetune(range(1000), features[:, :48], torch.nn.Linear(48, 2),
                                  tmp_path / "narrow.pt")
    with pytest.raises(checks.ExerciseFailed, match="768-wide"):
        checks.check_published_finetune(narrow)
    (tmp_path / "typed.pt").write_bytes(b"accuracy = 0.95")
    with pytest.raises(checks.ExerciseFailed, match="not exercise 8.1's file"):
        checks.check_published_finetune(tmp_path / "typed.pt")

    classifier.weight.data[[0, 1]] = classifier.weight.data[[1, 0]]  # right on 90% again
    monkeypatch.setenv("CTXLIB_BUDGET", "cpu")
    cpu = handin.save_finetune(range(1000), features, classifier, tmp_path / "cpu.pt")
    capsys.readouterr()
    checks.check_published_finetune(cpu)
    printed = capsys.readouterr()  # "Not graded" goes to stderr: no points
    assert "Not graded: the target 0.85 is for the gpu budget" in printed.err
    assert "Correct!" not in printed.out
