"""Scores for the downstream tasks: accuracy, and entity-level F1 for BIO-tagged spans."""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(predicted: Sequence, gold: Sequence) -> float:
    """Share of positions where ``predicted`` equals ``gold`` (same length required)."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels.")
    if not gold:
        raise ValueError("nothing to score.")
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold)


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities of one BIO-tagged sentence as ``(type, start, end)`` with ``end`` exclusive.

    Follows the CoNLL evaluation script: ``B-X`` starts an entity, ``I-X`` continues an entity
    of type X, and an ``I-X`` that does not continue one (after ``O`` or another type) starts a
    new entity, so a tagger is not scored on a technicality."""
    spans, kind, start = set(), None, 0
    for i, tag in enumerate([*tags, "O"]):  # the sentinel "O" closes a final entity
        if tag != "O" and "-" not in tag:
            raise ValueError(f"tag {tag!r} is neither 'O' nor 'B-type'/'I-type'.")
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and label == kind
        if kind is not None and not continues:
            spans.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and not continues:
            kind, start = label, i
    return spans


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Micro-averaged precision, recall and F1 over exact entity spans (type and boundaries
    must both match), the standard score of CoNLL and WNUT named-entity recognition."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted sentences for {len(gold)} gold ones.")
    found = correct = expected = 0
    for i, (g, p) in enumerate(zip(gold, predicted)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(g)} tokens.")
        gold_spans, predicted_spans = entity_spans(g), entity_spans(p)
        expected += len(gold_spans)
        found += len(predicted_spans)
        correct += len(gold_spans & predicted_spans)
    precision = correct / found if found else 0.0
    recall = correct / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's answer normalisation (as in its official evaluation script): lower case,
    drop punctuation, drop the articles a/an/the, collapse whitespace."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised reference answer, else 0.0."""
    if not answers:
        raise ValueError("a SQuAD question needs at least one reference answer.")
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best, over the reference answers, of the F1 of shared normalised words (a bag of
    words: each shared word counts as often as it occurs in both)."""
    from collections import Counter

    if not answers:
        raise ValueError("a SQuAD question needs at least one reference answer.")
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        reference = normalize_answer(answer).split()
        shared = sum((Counter(predicted) & Counter(reference)).values())
        if shared:
            precision, recall = shared / len(predicted), shared / len(reference)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best
