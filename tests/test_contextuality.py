"""Ethayarajh's contextuality measures: a hand computation on a tiny input, and the values
they must take in the degenerate cases (one static vector; random isotropic vectors)."""

import math

import pytest
import torch

from ctxlib.contextuality import (
    intra_sentence_similarity,
    layer_contextuality,
    max_explainable_variance,
    random_pair_cosine,
    self_similarity,
    sense_cosines,
    sense_occurrences,
)


def test_self_similarity_by_hand():
    # three occurrences: cos(a, b) = 0, cos(a, c) = 1/sqrt(2), cos(b, c) = 1/sqrt(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    assert self_similarity(x) == pytest.approx((0 + 2 / math.sqrt(2)) * 2 / 6)


def test_intra_sentence_similarity_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # the mean (0.5, 0.5) is 45 degrees from both
    assert intra_sentence_similarity(x) == pytest.approx(1 / math.sqrt(2))


def test_max_explainable_variance_by_hand():
    # orthogonal rows of lengths 3 and 1: singular values 3 and 1, so 9 / (9 + 1)
    x = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert max_explainable_variance(x) == pytest.approx(0.9)


def test_a_static_embedding_has_self_similarity_and_mev_one():
    same = torch.tensor([0.3, -1.2, 2.0]).repeat(6, 1)  # six occurrences, one vector
    assert self_similarity(same) == pytest.approx(1.0)
    assert max_explainable_variance(same) == pytest.approx(1.0)
    assert intra_sentence_similarity(same) == pytest.approx(1.0)


def test_random_isotropic_vectors_adjust_to_about_zero():
    torch.manual_seed(0)
    words = [f"w{i}" for i in range(20)]
    sentences = [[words[(s + t) % 20] for t in range(10)] for s in range(100)]  # each word 50x
    vectors = [torch.randn(10, 64) for _ in sentences]  # no word has a vector of its own
    layer = layer_contextuality(sentences, vectors, min_count=5)
    assert abs(layer.random_pair_cosine) < 0.02 and abs(layer.self_similarity) < 0.02
    assert abs(layer.adjusted["self_similarity"]) < 0.02
    assert abs(layer.adjusted["max_explainable_variance"]) < 0.02
    # each word is part of its sentence's mean: 10 random vectors score about 1/sqrt(10)
    assert layer.adjusted["intra_sentence_similarity"] == pytest.approx(1 / math.sqrt(10),
                                                                        abs=0.02)


def test_a_static_layer_is_fully_self_similar_once_adjusted():
    torch.manual_seed(0)
    table = torch.randn(20, 64)  # one vector per word, whatever the context
    words = [f"w{i}" for i in range(20)]
    sentences = [[words[(3 * s + t) % 20] for t in range(10)] for s in range(100)]
    vectors = [table[[int(w[1:]) for w in sentence]] for sentence in sentences]
    layer = layer_contextuality(sentences, vectors, min_count=5)
    assert layer.self_similarity == pytest.approx(1.0)
    assert layer.max_explainable_variance == pytest.approx(1.0)
    assert layer.adjusted["self_similarity"] > 0.95


def test_random_pairs_never_pair_a_row_with_itself():
    x = torch.eye(2)  # two orthogonal rows: every pair of different rows has cosine 0
    assert random_pair_cosine(x, 100, torch.Generator().manual_seed(0)) == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2 rows"):
        self_similarity(torch.ones(1, 4))
    with pytest.raises(ValueError, match="matrix"):
        max_explainable_variance(torch.ones(4))
    with pytest.raises(ValueError, match="no word occurs 5 times"):
        layer_contextuality([["a", "b"]], [torch.ones(2, 3)])
    with pytest.raises(ValueError, match="2 words has 3 vectors"):
        layer_contextuality([["a", "b"]], [torch.ones(3, 3)])


def test_sense_occurrences_never_label_by_a_word_the_model_reads():
    cues = {"stage": {"theatre"}, "game": {"team"}}
    far = " ".join(["x"] * 12)
    lines = [
        f"theatre {far} the play {far}",  # cue outside the window: labelled stage
        f"the team play {far}",  # cue inside the window: dropped
        f"team {far} play {far} theatre",  # one vote each: a tie, dropped
        f"{far} play {far} team team",  # labelled game
    ]
    found = sense_occurrences(lines, "play", cues, width=10, label_width=60)
    assert [sense for *_, sense in found] == ["stage", "game"]
    window, position, _ = found[0]
    assert window[position] == "play" and len(window) == 21


def test_sense_cosines_by_hand():
    # two senses along two axes: same-sense pairs have cosine 1, cross-sense pairs 0
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    same, cross, spread = sense_cosines(x, ["a", "a", "b", "b"], resamples=20)
    assert same == pytest.approx(1.0) and cross == pytest.approx(0.0) and spread >= 0
    with pytest.raises(ValueError, match="two different senses"):
        sense_cosines(x, ["a"] * 4)


def test_what_cannot_be_measured_is_refused_naming_the_word():
    with pytest.raises(ValueError, match="zero vector"):
        self_similarity(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="zero vector"):
        intra_sentence_similarity(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        random_pair_cosine(torch.tensor([[1.0, 0.0], [float("nan"), 1.0]]), 10,
                           torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no variance"):
        max_explainable_variance(torch.zeros(3, 4))
    words = [["a", "b", "a"], ["b", "a"]]
    good = [torch.randn(3, 4), torch.randn(2, 4)]
    zero = [good[0], torch.stack([torch.randn(4), torch.zeros(4)])]
    with pytest.raises(ValueError, match="'a' \\(word 1 of sentence 1\\) is a zero vector"):
        layer_contextuality(words, zero, min_count=2)
    with pytest.raises(ValueError, match="different widths"):
        layer_contextuality(words, [good[0], torch.randn(2, 5)], min_count=2)
    with pytest.raises(ValueError, match="min_count must be 2"):
        layer_contextuality(words, good, min_count=1)
    with pytest.raises(ValueError, match="every sentence has one word"):
        layer_contextuality([["a"], ["a"]], [torch.randn(1, 4), torch.randn(1, 4)],
                            min_count=2)
    measured = layer_contextuality(words, good, min_count=2)  # the same words, measurable
    assert all(math.isfinite(v) for v in measured.adjusted.values())
    with pytest.raises(ValueError, match="no cue words for 'river'"):
        sense_occurrences(["the bank"], "bank", {"money": {"cash"}, "river": set()})
    with pytest.raises(ValueError, match="two senses or more"):
        sense_occurrences(["the bank"], "bank", {})
