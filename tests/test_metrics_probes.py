"""Entity F1 against hand-counted examples, and probes that find the informative layer."""

import pytest
import torch

from ctxlib.metrics import accuracy, entity_f1, entity_spans
from ctxlib.probes import LayerProbe, fit_probe


def test_entity_spans_follow_conll_rules():
    tags = ["B-person", "I-person", "O", "I-location", "B-group", "B-group", "I-product"]
    assert entity_spans(tags) == {("person", 0, 2), ("location", 3, 4), ("group", 4, 5),
                                  ("group", 5, 6), ("product", 6, 7)}
    assert entity_spans(["O", "O"]) == set()
    with pytest.raises(ValueError, match="neither"):
        entity_spans(["PER"])


def test_entity_f1_counts_exact_spans_only():
    gold = [["B-person", "I-person", "O", "B-location"], ["O", "B-group"]]
    predicted = [["B-person", "O", "O", "B-location"], ["O", "B-group"]]
    # 3 gold entities; 3 predicted, of which 2 exact ("person" is cut short).
    scores = entity_f1(gold, predicted)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert entity_f1(gold, gold)["f1"] == 1.0
    assert entity_f1(gold, [["O"] * 4, ["O"] * 2])["f1"] == 0.0
    with pytest.raises(ValueError, match="sentence 1"):
        entity_f1(gold, [gold[0], ["O"]])


def test_accuracy():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError):
        accuracy([1], [1, 2])


def layered_data(n=2000, seed=0):
    """Three layers of 8 features; only layer 1 carries the label (its first feature's sign)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 3, 8, generator=g)
    labels = (features[:, 1, 0] > 0).long()
    return features, labels


def test_probe_on_the_informative_layer_learns_and_the_others_do_not():
    x, y = layered_data()
    dev_x, dev_y = layered_data(seed=1)
    scores = [accuracy(fit_probe(x, y, 2, layer=j, steps=200).predict(dev_x).tolist(), dev_y.tolist())
              for j in range(3)]
    assert scores[1] > 0.85
    assert scores[0] < 0.6 and scores[2] < 0.6


def test_mixed_probe_puts_its_weight_on_the_informative_layer():
    x, y = layered_data()
    probe = fit_probe(x, y, 2, layer=None, steps=300)
    weights = probe.mix.weights()
    assert weights.argmax() == 1 and weights[1] > 0.4


def test_hidden_layer_probe_learns_what_a_linear_one_cannot():
    """The label is an XOR of two features' signs: not linearly separable."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 1, 8, generator=g)
    y = ((x[:, 0, 0] > 0) ^ (x[:, 0, 1] > 0)).long()
    dev, dev_y = x[2000:], y[2000:]
    linear = accuracy(fit_probe(x[:2000], y[:2000], 2, layer=0, steps=300).predict(dev).tolist(),
                      dev_y.tolist())
    mlp = accuracy(fit_probe(x[:2000], y[:2000], 2, layer=0, steps=1000, hidden=64)
                   .predict(dev).tolist(), dev_y.tolist())
    assert linear < 0.65 and mlp > 0.75


def test_probe_rejects_bad_input():
    with pytest.raises(ValueError, match="layer 3"):
        LayerProbe(3, 8, 2, layer=3)
    with pytest.raises(ValueError, match="features"):
        LayerProbe(3, 8, 2)(torch.zeros(4, 8))
    with pytest.raises(ValueError, match="labels"):
        fit_probe(torch.zeros(5, 3, 8), torch.zeros(4, dtype=torch.long), 2)


def test_entity_f1_agrees_with_seqeval_on_random_taggings():
    """seqeval (the reference implementation of CoNLL scoring) on random, often ill-formed tags."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    g = torch.Generator().manual_seed(0)
    tags = ["O", "B-person", "I-person", "B-location", "I-location", "I-group"]
    for _ in range(20):
        lengths = torch.randint(1, 12, (15,), generator=g).tolist()

        def random_tags(lengths=lengths):
            return [[tags[int(i)] for i in torch.randint(0, len(tags), (n,), generator=g)]
                    for n in lengths]

        gold, predicted = random_tags(), random_tags()
        ours = entity_f1(gold, predicted)
        assert ours["precision"] == pytest.approx(precision_score(gold, predicted))
        assert ours["recall"] == pytest.approx(recall_score(gold, predicted))
        assert ours["f1"] == pytest.approx(f1_score(gold, predicted))


def test_squad_metrics_follow_the_official_definitions():
    from ctxlib.metrics import normalize_answer, squad_exact_match, squad_f1

    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert squad_exact_match("the Eiffel tower.", ["Eiffel Tower", "Paris"]) == 1.0
    assert squad_exact_match("tower", ["Eiffel Tower"]) == 0.0
    # "in 1889" vs "1889": precision 1/2, recall 1, F1 2/3; the best reference counts.
    assert squad_f1("in 1889", ["1889"]) == pytest.approx(2 / 3)
    assert squad_f1("in 1889", ["in 1889", "1889"]) == 1.0
    assert squad_f1("Denver Broncos", ["Carolina Panthers"]) == 0.0
    # Repeated words count as often as they occur in both.
    assert squad_f1("the the cat cat", ["cat dog"]) == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    with pytest.raises(ValueError):
        squad_f1("x", [])
