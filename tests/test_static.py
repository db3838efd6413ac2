"""Skip-gram with negative sampling: the loss, the pairs, the noise distribution, training."""

import dataclasses
from collections import Counter

import pytest
import torch

from ctxlib import data, static
from ctxlib.checkpoints import CheckpointStore, run_id
from ctxlib.static import (
    SkipGramConfig,
    Vocab,
    nearest_neighbors,
    negative_sampling_loss,
    skipgram_pairs,
    subsample,
    train_skipgram,
)


def test_loss_matches_a_hand_computation():
    v = torch.tensor([[1.0, 0.0]])
    u = torch.tensor([[2.0, 0.0]])
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])
    sigmoid = torch.sigmoid
    # -log σ(2) - log σ(-0) - log σ(1)
    expected = -(sigmoid(torch.tensor(2.0)).log() + sigmoid(torch.tensor(0.0)).log()
                 + sigmoid(torch.tensor(1.0)).log())
    torch.testing.assert_close(negative_sampling_loss(v, u, negatives), expected)


def test_pairs_stay_within_the_window_and_the_line():
    ids = torch.arange(12)
    lines = torch.tensor([0] * 6 + [1] * 6)
    centers, contexts = skipgram_pairs(ids, lines, window=2, generator=torch.Generator().manual_seed(0))
    assert len(centers) > 0
    assert ((centers - contexts).abs() <= 2).all() and (centers != contexts).all()
    assert (lines[centers] == lines[contexts]).all()
    # With window 1 every neighbour pair appears, in both directions.
    c, o = skipgram_pairs(ids, lines, window=1, generator=torch.Generator())
    assert set(zip(c.tolist(), o.tolist())) == {(i, i + 1) for i in range(11) if i != 5} | {
        (i + 1, i) for i in range(11) if i != 5}


def test_subsampling_drops_frequent_words_more():
    counts = torch.tensor([1000.0, 10.0])
    ids = torch.tensor([0] * 5000 + [1] * 5000)
    kept = subsample(ids, counts, threshold=1e-2, generator=torch.Generator().manual_seed(0))
    assert kept[5000:].all()  # the rare word is always kept
    rate = kept[:5000].float().mean().item()
    assert rate == pytest.approx((1e-2 / (1000 / 1010)) ** 0.5, abs=0.02)


def test_noise_distribution_follows_counts_to_the_three_quarters():
    vocab = Vocab(Counter({"a": 800, "b": 100, "c": 100}), min_count=1)
    noise = vocab.counts**0.75
    draws = torch.multinomial(noise, 60000, replacement=True, generator=torch.Generator().manual_seed(0))
    observed = torch.bincount(draws, minlength=3).float() / 60000
    torch.testing.assert_close(observed, noise / noise.sum(), atol=0.01, rtol=0)


def test_nearest_neighbors_by_cosine_and_unknown_words():
    vocab = Vocab(Counter({"cat": 3, "dog": 2, "car": 1}), min_count=1)
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert [w for w, _ in nearest_neighbors(vectors, vocab, "cat", k=2)] == ["dog", "car"]
    with pytest.raises(KeyError, match="Close words in the vocabulary: cat"):
        nearest_neighbors(vectors, vocab, "cats")


def test_short_training_on_real_text_learns_something(shared_data):
    text = data.load_wikitext2("valid")
    config = SkipGramConfig(dim=32, epochs=1, batch_size=1024, min_count=3, lr=0.01)
    vocab, model, losses = train_skipgram(text, config, progress_bar=False)
    assert sum(losses[-20:]) / 20 < 0.8 * sum(losses[:20]) / 20
    vectors = torch.nn.functional.normalize(model.vectors(), dim=-1)
    # Numbers sit closer to numbers than to function words.
    years = [vocab.index(y) for y in ["1990", "1995", "2000", "2005"]]
    words = [vocab.index(w) for w in ["the", "of", "and", "was"]]
    within = (vectors[years] @ vectors[years].T).mean()
    across = (vectors[years] @ vectors[words].T).mean()
    assert within > across


# --- Checkpoints and resuming --------------------------------------------------------------------

# Two epochs of about 40 batches each on the small text below: well under a second per run.
SMALL = SkipGramConfig(dim=8, window=2, negatives=3, epochs=2, batch_size=128, lr=0.01,
                       min_count=1, subsample_threshold=1e-2)


def small_text(lines: int = 300) -> str:
    """A made-up corpus: 40 words with Zipf-like frequencies, 10 words a line."""
    generator = torch.Generator().manual_seed(0)
    weights = 1.0 / torch.arange(1, 41)
    draws = torch.multinomial(weights, lines * 10, replacement=True, generator=generator)
    return "\n".join(" ".join(f"w{i}" for i in row) for row in draws.view(lines, 10).tolist())


def fail_after(monkeypatch, calls: int, error: type[BaseException]) -> None:
    """Make the loss raise ``error`` on batch ``calls + 1``, as a crash or the stop button would."""
    count = 0

    def loss(*args):
        nonlocal count
        count += 1
        if count > calls:
            raise error("simulated interruption")
        return negative_sampling_loss(*args)

    monkeypatch.setattr(static, "negative_sampling_loss", loss)


def saved_state(path) -> dict:
    return torch.load(path, weights_only=True)["state"]


def test_a_run_that_crashes_mid_epoch_resumes_exactly(tmp_path, monkeypatch):
    text, path = small_text(), str(tmp_path / "skipgram.pt")
    _, reference, reference_losses = train_skipgram(text, SMALL, progress_bar=False)
    crash_at = len(reference_losses) - 7  # in the second epoch, between two checkpoints
    fail_after(monkeypatch, crash_at, RuntimeError)
    with pytest.raises(RuntimeError, match="simulated"):
        train_skipgram(text, SMALL, progress_bar=False, checkpoint_path=path, checkpoint_every=5)
    state = saved_state(path)
    assert state["epoch"] == 1 and 0 < state["position"]  # the last checkpoint, mid-epoch
    assert len(state["losses"]) < crash_at  # the batches after it are lost, and done again

    monkeypatch.undo()
    _, model, losses = train_skipgram(text, SMALL, progress_bar=False, checkpoint_path=path,
                                      checkpoint_every=5)
    assert torch.equal(model.vectors(), reference.vectors())
    assert torch.equal(model.outputs.weight, reference.outputs.weight)
    assert losses == reference_losses

    # A finished run returns at once from its checkpoint: no batch is trained again.
    fail_after(monkeypatch, 0, RuntimeError)
    _, again, again_losses = train_skipgram(text, SMALL, progress_bar=False, checkpoint_path=path)
    assert torch.equal(again.vectors(), reference.vectors()) and again_losses == reference_losses


def test_the_stop_button_saves_the_last_batch_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    text, path = small_text(), str(tmp_path / "skipgram.pt")
    _, reference, reference_losses = train_skipgram(text, SMALL, progress_bar=False)
    stop_at = len(reference_losses) - 7
    fail_after(monkeypatch, stop_at, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        train_skipgram(text, SMALL, progress_bar=False, checkpoint_path=path,
                       checkpoint_every=1000)
    assert "Interrupted: saved epoch 2" in capsys.readouterr().out
    assert len(saved_state(path)["losses"]) == stop_at  # nothing done is lost

    monkeypatch.undo()
    _, model, losses = train_skipgram(text, SMALL, progress_bar=False, checkpoint_path=path)
    assert torch.equal(model.vectors(), reference.vectors())
    assert losses == reference_losses


@pytest.mark.parametrize("change", ["config", "text"])
def test_other_settings_start_a_new_run_and_keep_the_old_one(tmp_path, capsys, change):
    text, path = small_text(), tmp_path / "skipgram.pt"
    old = dataclasses.replace(SMALL, epochs=1)
    train_skipgram(text, old, progress_bar=False, checkpoint_path=str(path))
    old_identity = torch.load(path, weights_only=True)["identity"]

    new_text, new = (text, dataclasses.replace(old, lr=0.02)) if change == "config" else (
        small_text(lines=301), old)
    _, model, losses = train_skipgram(new_text, new, progress_bar=False, checkpoint_path=str(path))
    out = capsys.readouterr().out
    assert "settings differ" in out and ("lr: 0.01 -> 0.02" in out or change == "text")
    # The new run did not start from the old weights: it matches a run without checkpoints.
    _, fresh, fresh_losses = train_skipgram(new_text, new, progress_bar=False)
    assert torch.equal(model.vectors(), fresh.vectors()) and losses == fresh_losses
    archived = CheckpointStore(path).archived(run_id(old_identity))
    assert torch.load(archived, weights_only=True)["identity"] == old_identity

    # Putting the settings back finds the old (finished) run again.
    train_skipgram(text, old, progress_bar=False, checkpoint_path=str(path))
    assert "Found an earlier run with exactly these settings" in capsys.readouterr().out


def test_checkpoints_load_without_running_code(tmp_path):
    path = tmp_path / "skipgram.pt"
    config = dataclasses.replace(SMALL, epochs=1)
    _, model, losses = train_skipgram(small_text(), config, progress_bar=False,
                                      checkpoint_path=str(path), checkpoint_every=5)
    blob = torch.load(path, weights_only=True)  # tensors, numbers, strings, lists, dicts only
    assert blob["identity"]["config"]["dim"] == 8 and len(blob["identity"]["text_sha256"]) == 64
    state = blob["state"]
    assert state["epoch"] == 1 and state["position"] == 0
    assert torch.equal(state["model"]["inputs.weight"], model.vectors())
    assert state["losses"].tolist() == losses
    assert (tmp_path / "skipgram.prev.pt").exists()  # the checkpoint before it is kept too


def _vocab_of(words):
    return Vocab(Counter({word: 5 for word in words}))


def test_analogies_answer_from_vector_offsets():
    """Vectors in which every relation is one constant offset answer the questions; the same
    vectors in shuffled rows answer none."""
    words = sorted({word for pairs in static.ANALOGIES.values() for pair in pairs
                    for word in pair})
    vocab = _vocab_of(words + ["filler"])
    generator = torch.Generator().manual_seed(0)
    relations = list(static.ANALOGIES)
    vectors = torch.randn(len(vocab), 64, generator=generator)
    for r, pairs in enumerate(relations):
        for a, b in static.ANALOGIES[pairs]:
            offset = torch.zeros(64)
            offset[r] = 30.0  # a direction of its own per relation, larger than the noise
            vectors[vocab.index(b)] = vectors[vocab.index(a)] + offset
    accuracy = static.analogy_accuracy(vectors, vocab)
    # Nearly every question is answered right: the test reads unit vectors, and the words two
    # relations reach (France from Paris, then French) are longer, so their offsets bend a
    # little after normalising.
    assert min(accuracy.values()) > 0.97, accuracy
    shuffled = vectors[torch.randperm(len(vocab), generator=generator)]
    assert static.analogy_accuracy(shuffled, vocab)["all"] < 0.05


def test_analogies_count_missing_words_as_wrong_and_refuse_misfit_vectors():
    pairs = static.ANALOGIES["capital"]
    vocab = _vocab_of([word for pair in pairs[:2] for word in pair])  # two pairs of 18
    vectors = torch.zeros(len(vocab), 4)
    vectors[:, 0] = 1.0
    vectors[vocab.index("France"), 1] = vectors[vocab.index("Germany"), 1] = 1.0
    scores = static.analogy_accuracy(vectors, vocab)
    # Paris : France :: Berlin : Germany and back are the only answerable questions of 306
    assert scores["capital"] == pytest.approx(2 / 306)
    assert scores["gender"] == 0.0
    with pytest.raises(ValueError, match="one vector per word"):
        static.analogy_accuracy(vectors[:3], vocab)
