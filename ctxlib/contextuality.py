"""How contextual is a layer? Ethayarajh's three measures (EMNLP 2019, section 3), with his
correction for anisotropy.

A static embedding gives a word one vector; a contextual one gives each *occurrence* its own.
For a word w seen n times, stack the n vectors a layer gives its occurrences into the
occurrence matrix (n, d). Then:

- **self-similarity**: the mean cosine between different occurrences of w (1 for a static
  embedding, lower the more the vectors depend on context);
- **intra-sentence similarity**: for a sentence, the mean cosine between each word's vector
  and the sentence's mean vector (how much the words of one sentence are pulled together).
  The mean holds the word itself, so T unrelated random vectors already score about
  1/sqrt(T): compare layers on the same sentences, never against 0;
- **maximum explainable variance** (MEV): the share of the occurrence matrix's variance that
  its first principal direction explains, sigma_1^2 / sum_i sigma_i^2 over its singular values
  (1 when one static vector would do; the paper does not centre the matrix, nor do we).

All three are inflated when a layer's vectors share a common direction (**anisotropy**):
random pairs of unrelated words then have a high cosine too. The paper's correction subtracts
the same measure taken on uniformly random words of the layer: the mean cosine of random
pairs for the two similarities, the MEV of a random sample for MEV. An adjusted value near 0
means "no more alike than any two words of this layer".

Shapes: n occurrences, T words of a sentence, N vectors of a layer, d their width.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _check_matrix(vectors: torch.Tensor, what: str, at_least: int,
                  cosines: bool = True) -> torch.Tensor:
    """``vectors`` as float32 after checking it can be measured: a matrix of at least
    ``at_least`` rows, finite, and (for cosines, which a zero vector has none of) no zero row."""
    if vectors.dim() != 2:
        raise ValueError(f"{what} must be a matrix (rows, width), got shape "
                         f"{tuple(vectors.shape)}.")
    if len(vectors) < at_least:
        raise ValueError(f"{what} needs at least {at_least} rows, got {len(vectors)}.")
    bad = _bad_rows(vectors, cosines)
    if bad:
        raise ValueError(f"{what}: row {bad[0]} {bad[1]}.")
    return vectors.float()


def _bad_rows(vectors: torch.Tensor, cosines: bool = True) -> tuple[int, str] | None:
    """(the first row that cannot be measured, why), or None."""
    finite = torch.isfinite(vectors).all(dim=-1)
    if not finite.all():
        return int((~finite).nonzero()[0]), "holds NaN or infinite entries"
    zero = vectors.abs().sum(dim=-1) == 0
    if cosines and zero.any():
        return int(zero.nonzero()[0]), "is a zero vector, which has no cosine with anything"
    if zero.all():
        return 0, "is zero, as is every row: there is no variance to explain"
    return None


def self_similarity(occurrences: torch.Tensor) -> float:
    """Mean cosine over the ordered pairs of different rows of (n, d), n >= 2."""
    x = F.normalize(_check_matrix(occurrences, "occurrences", 2), dim=-1)
    n = len(x)
    cosines = x @ x.T  # (n, n); the diagonal (each row with itself) is left out below
    return ((cosines.sum() - cosines.diagonal().sum()) / (n * n - n)).item()


def intra_sentence_similarity(words: torch.Tensor) -> float:
    """Mean cosine between each row of (T, d) and the mean of the rows."""
    x = _check_matrix(words, "a sentence's word vectors", 1)
    return F.cosine_similarity(x, x.mean(0, keepdim=True), dim=-1).mean().item()


def max_explainable_variance(occurrences: torch.Tensor) -> float:
    """sigma_1^2 / sum sigma_i^2 over the singular values of (n, d), uncentred."""
    singular = torch.linalg.svdvals(_check_matrix(occurrences, "occurrences", 1,
                                                  cosines=False).double())
    squares = singular**2
    return (squares[0] / squares.sum()).item()


def random_pair_cosine(vectors: torch.Tensor, pairs: int, generator: torch.Generator) -> float:
    """The anisotropy baseline: the mean cosine of ``pairs`` random pairs of different rows of
    (N, d)."""
    x = F.normalize(_check_matrix(vectors, "the layer's vectors", 2), dim=-1)
    i = torch.randint(0, len(x), (pairs,), generator=generator)
    shift = torch.randint(1, len(x), (pairs,), generator=generator)  # never a row with itself
    j = (i + shift) % len(x)
    return (x[i] * x[j]).sum(-1).mean().item()


def random_sample_mev(vectors: torch.Tensor, n: int, samples: int,
                      generator: torch.Generator) -> float:
    """The MEV baseline: the mean MEV of ``samples`` random samples of ``n`` rows of (N, d)."""
    x = _check_matrix(vectors, "the layer's vectors", n, cosines=False)
    return sum(max_explainable_variance(x[torch.randperm(len(x), generator=generator)[:n]])
               for _ in range(samples)) / samples


@dataclass
class LayerContextuality:
    """One layer's three measures (means over words or sentences), raw and with the anisotropy
    baseline subtracted."""

    self_similarity: float
    intra_sentence_similarity: float
    max_explainable_variance: float
    random_pair_cosine: float  # the baseline of the two similarities
    random_mev: float  # the baseline of MEV

    @property
    def adjusted(self) -> dict[str, float]:
        return {
            "self_similarity": self.self_similarity - self.random_pair_cosine,
            "intra_sentence_similarity": self.intra_sentence_similarity
            - self.random_pair_cosine,
            "max_explainable_variance": self.max_explainable_variance - self.random_mev,
        }


def layer_contextuality(sentences: Sequence[Sequence[str]], vectors: Sequence[torch.Tensor],
                        min_count: int = 5, max_occurrences: int = 50, pairs: int = 5000,
                        seed: int = 0) -> LayerContextuality:
    """The three measures of one layer over a corpus: ``sentences`` (lists of words) and, for
    each, its words' vectors in this layer, (T, d) each.

    Self-similarity and MEV are averaged over the words seen at least ``min_count`` times
    (each word's first ``max_occurrences``, so that "the" does not cost more than all other
    words together), intra-sentence similarity over the sentences of two words or more. The
    baselines come from the same vectors: random pairs, and, for each word, random samples of
    as many rows as it has occurrences (MEV depends on the number of rows)."""
    if len(sentences) != len(vectors):
        raise ValueError(f"{len(sentences)} sentences but {len(vectors)} vector matrices.")
    if min_count < 2:
        raise ValueError(f"min_count must be 2 or more (got {min_count}): self-similarity "
                         "compares a word's occurrences with each other.")
    widths = {rows.shape[-1] for rows in vectors}
    if len(widths) > 1:
        raise ValueError(f"the vectors have different widths {sorted(widths)}: give one "
                         "layer's vectors at a time.")
    occurrences: dict[str, list[torch.Tensor]] = defaultdict(list)
    for index, (words, rows) in enumerate(zip(sentences, vectors)):
        if len(words) != len(rows):
            raise ValueError(f"a sentence of {len(words)} words has {len(rows)} vectors.")
        bad = _bad_rows(rows)
        if bad:
            raise ValueError(f"the vector of {words[bad[0]]!r} (word {bad[0]} of sentence "
                             f"{index}) {bad[1]}.")
        for word, row in zip(words, rows):
            if len(occurrences[word]) < max_occurrences:
                occurrences[word].append(row)
    frequent = [torch.stack(rows) for rows in occurrences.values() if len(rows) >= min_count]
    if not frequent:
        raise ValueError(f"no word occurs {min_count} times or more: lower min_count or give "
                         "more sentences.")
    everything = torch.cat([rows.float() for rows in vectors])
    generator = torch.Generator().manual_seed(seed)
    baseline_of = {n: random_sample_mev(everything, n, 20, generator)
                   for n in sorted({len(m) for m in frequent})}
    sentences_of_two = [rows for rows in vectors if len(rows) > 1]
    if not sentences_of_two:
        raise ValueError("every sentence has one word: intra-sentence similarity needs "
                         "sentences of two words or more.")
    return LayerContextuality(
        self_similarity=sum(map(self_similarity, frequent)) / len(frequent),
        intra_sentence_similarity=sum(map(intra_sentence_similarity, sentences_of_two))
        / len(sentences_of_two),
        max_explainable_variance=sum(map(max_explainable_variance, frequent)) / len(frequent),
        random_pair_cosine=random_pair_cosine(everything, pairs, generator),
        random_mev=sum(baseline_of[len(m)] for m in frequent) / len(frequent),
    )


# --- Senses of one word ------------------------------------------------------------------------


def sense_occurrences(lines: Sequence[str], word: str, cues: dict[str, set[str]],
                      width: int = 10, label_width: int = 60) -> list[tuple[list[str], int, str]]:
    """Occurrences of ``word`` labelled with a sense by cue words the model never reads.

    For each occurrence in ``lines`` (whitespace-separated text), the window the model will
    read is the ``width`` words on each side. An occurrence whose window holds a cue word is
    dropped (the model could read its label). The others are labelled by the sense whose cue
    words (``cues``: sense -> words) occur more often within ``label_width`` words; ties are
    dropped. Returns (window words, position of ``word`` in it, sense) per occurrence."""
    empty = [sense for sense, words in cues.items() if not words]
    if len(cues) < 2 or empty:
        raise ValueError(f"give cue words for two senses or more (got {len(cues)} senses"
                         + (f"; no cue words for {', '.join(map(repr, empty))}" if empty else "")
                         + ").")
    every_cue = set().union(*cues.values())
    found = []
    for line in lines:
        tokens = line.split()
        for i, token in enumerate(tokens):
            if token != word:
                continue
            start = max(0, i - width)
            window = tokens[start : i + width + 1]
            if every_cue & set(window):
                continue
            further = tokens[max(0, i - label_width) : i + label_width + 1]
            votes = {sense: sum(t in words for t in further) for sense, words in cues.items()}
            best = max(votes.values())
            if best and list(votes.values()).count(best) == 1:
                found.append((window, i - start, max(votes, key=votes.get)))
    return found


def sense_cosines(vectors: torch.Tensor, senses: Sequence[str], resamples: int = 100,
                  seed: int = 0) -> tuple[float, float, float]:
    """Mean cosine of same-sense pairs and of cross-sense pairs of occurrences (n, d), and the
    standard deviation of their difference over ``resamples`` bootstrap resamples of the
    occurrences (pairs of an occurrence with itself never count)."""
    vectors = _check_matrix(vectors, "occurrence vectors", at_least=2)
    if len(senses) != len(vectors) or len(set(senses)) < 2:
        raise ValueError("give one sense per occurrence, and at least two different senses.")
    names = sorted(set(senses))
    labels = torch.tensor([names.index(s) for s in senses])
    unit = F.normalize(vectors, dim=-1)
    cosine = unit @ unit.T

    def means(rows: torch.Tensor) -> tuple[float, float]:
        same = labels[rows][:, None] == labels[rows][None, :]
        distinct = rows[:, None] != rows[None, :]
        picked = cosine[rows][:, rows]
        return picked[same & distinct].mean().item(), picked[~same].mean().item()

    n = len(vectors)
    same, cross = means(torch.arange(n))
    generator = torch.Generator().manual_seed(seed)
    gaps = torch.tensor([a - b for a, b in (means(torch.randint(0, n, (n,), generator=generator))
                                            for _ in range(resamples))])
    gaps = gaps[gaps.isfinite()]  # a small resample may miss a sense's pairs altogether
    return same, cross, gaps.std().item() if len(gaps) > 1 else float("nan")
