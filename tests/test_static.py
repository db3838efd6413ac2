"""Skip-gram with negative sampling: the loss, the pairs, the noise distribution, training."""

from collections import Counter

import pytest
import torch

from ctxlib import data
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
