"""Downstream tasks for encoders that read ``[CLS] A [SEP] (B [SEP])``: tokenised examples,
batches, and predictions, for sentence classification, word tagging and extractive QA.

Every task becomes a ``TaskData``: token ids and segment ids per example, and labels: one int
per example (classification), one per token with IGNORE_INDEX except at each word's first token
(tagging), or a (start, end) token span (QA). ``batch(data, rows)`` pads any subset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ctxlib.batches import IGNORE_INDEX, align_labels, encode_words
from ctxlib.runtime import device_of


@dataclass
class TaskData:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list  # see the module docstring
    word_ids: list[list[int | None]] = field(default_factory=list)  # token -> word (tagging, QA)

    def __len__(self) -> int:
        return len(self.input_ids)


def _specials(tokenizer) -> tuple[int, int, int]:
    return tuple(tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))


def classification_data(tokenizer, texts: list[str], labels: list[int], max_len: int) -> TaskData:
    """``[CLS] text [SEP]``, cut to ``max_len`` tokens, one label each."""
    cls, sep, _ = _specials(tokenizer)
    ids = [[cls, *tokenizer.encode(t)[: max_len - 2], sep] for t in texts]
    return TaskData(ids, [[0] * len(x) for x in ids], list(labels))


def tagging_data(tokenizer, sentences: list[list[str]], tags: list[list[int]],
                 max_len: int) -> TaskData:
    """``[CLS] words [SEP]``; each word's label sits on its first token. Words beyond
    ``max_len`` tokens are cut (``word_ids`` tells which words remain)."""
    cls, sep, _ = _specials(tokenizer)
    data = TaskData([], [], [], [])
    for words, word_tags in zip(sentences, tags):
        ids, word_ids = encode_words(tokenizer, words)
        ids, word_ids = ids[: max_len - 2], word_ids[: max_len - 2]
        token_words = [None, *word_ids, None]
        data.input_ids.append([cls, *ids, sep])
        data.token_type_ids.append([0] * (len(ids) + 2))
        data.labels.append(align_labels(token_words, word_tags))
        data.word_ids.append(token_words)
    return data


def squad_data(tokenizer, examples: list[dict], max_len: int, max_question: int = 32) -> TaskData:
    """``[CLS] question [SEP] passage [SEP]`` with the passage cut to fit ``max_len``; labels
    are the answer's (start, end) token span, or None when the answer was cut off (such an
    example cannot be learned from, and counts as a miss when evaluated). ``word_ids`` maps
    passage tokens to passage words (None elsewhere); words are runs of letters and digits
    and single punctuation marks, each encoded with a leading space (``encode_words``)."""
    cls, sep, _ = _specials(tokenizer)
    data = TaskData([], [], [], [])
    for example in examples:
        question = tokenizer.encode(example["question"])[:max_question]
        words, starts = _words_with_offsets(example["context"])
        ids, word_ids = encode_words(tokenizer, words)
        first, last = _answer_words(words, starts, example["answers"], example["answer_starts"])
        answer = [i for i, w in enumerate(word_ids) if first <= w <= last]  # its tokens
        room = max_len - len(question) - 3
        ids, word_ids = ids[:room], word_ids[:room]
        offset = len(question) + 2  # tokens before the passage
        data.input_ids.append([cls, *question, sep, *ids, sep])
        data.token_type_ids.append([0] * offset + [1] * (len(ids) + 1))
        data.word_ids.append([None] * offset + word_ids + [None])
        fits = answer[-1] < room
        data.labels.append((offset + answer[0], offset + answer[-1]) if fits else None)
    return data


def _words_with_offsets(text: str) -> tuple[list[str], list[int]]:
    """Words (runs of letters and digits) and single punctuation marks, with their character
    offsets: fine enough that nearly every SQuAD answer starts and ends on a word boundary."""
    matches = list(re.finditer(r"\w+|[^\w\s]", text))
    return [m.group() for m in matches], [m.start() for m in matches]


def _answer_words(words, starts, answers, answer_starts) -> tuple[int, int]:
    """Indices of the first and last passage words of the reference answer. Of the references,
    the first whose characters begin and end on word boundaries is used (a few of SQuAD's
    offsets point inside a word: "8" inside "20–18"); failing that, the first."""
    spans = []
    for answer, start in zip(answers, answer_starts):
        end = start + len(answer)  # one past the last character
        first = max(i for i, s in enumerate(starts) if s <= start)
        last = max(i for i, s in enumerate(starts) if s < end)
        aligned = starts[first] == start and starts[last] + len(words[last]) == end
        spans.append((not aligned, first, last))
    _, first, last = min(spans, key=lambda span: span[0])  # stable: first aligned, else first
    return first, last


def batch(data: TaskData, rows: list[int], pad_id: int = 0, device=None):
    """Padded tensors for the examples ``rows``: input_ids, token_type_ids, attention_mask
    (B, T) and labels ((B,) for classification, (B, T) for tagging, (B, 2) for QA)."""
    length = max(len(data.input_ids[r]) for r in rows)

    def pad(seqs, value):
        return torch.tensor([s + [value] * (length - len(s)) for s in seqs])

    input_ids = pad([data.input_ids[r] for r in rows], pad_id)
    token_type_ids = pad([data.token_type_ids[r] for r in rows], 0)
    attention_mask = pad([[1] * len(data.input_ids[r]) for r in rows], 0)
    first = data.labels[rows[0]]
    if isinstance(first, list):
        labels = pad([data.labels[r] for r in rows], IGNORE_INDEX)
    elif isinstance(first, tuple) or first is None:
        labels = torch.tensor([data.labels[r] or (0, 0) for r in rows])
    else:
        labels = torch.tensor([data.labels[r] for r in rows])
    tensors = (input_ids, token_type_ids, attention_mask, labels)
    return tuple(t.to(device) for t in tensors) if device is not None else tensors


def trainable_rows(data: TaskData) -> list[int]:
    """Examples with a usable label (QA examples whose answer survived the cut)."""
    return [i for i, label in enumerate(data.labels) if label is not None]


@torch.no_grad()
def predict(model, data: TaskData, batch_size: int = 64) -> list:
    """Run ``model`` over all examples, in order: the argmax class per example
    (classification), the argmax label per token (tagging), or the best (start, end) span with
    start <= end inside the passage, at most 30 tokens long (QA)."""
    model.eval()
    device = device_of(model)
    out = []
    for start in range(0, len(data), batch_size):
        rows = list(range(start, min(start + batch_size, len(data))))
        ids, segments, mask, _ = batch(data, rows, device=device)
        result = model(ids, segments, mask)
        if result.logits is None:  # QA: a start and an end score per token
            out.extend(_best_spans(result.start_logits, result.end_logits, segments, mask))
        else:
            out.extend(result.logits.argmax(-1).tolist())
    return out


def _best_spans(start_logits, end_logits, segments, mask, max_answer: int = 30):
    passage = (segments == 1) & mask.bool()
    passage[torch.arange(len(mask)), mask.sum(1) - 1] = False  # the final [SEP]
    scores = start_logits[:, :, None] + end_logits[:, None, :]  # (B, T start, T end)
    T = scores.shape[1]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    allowed = (j >= i) & (j - i < max_answer)
    allowed = allowed.to(scores.device) & passage[:, :, None] & passage[:, None, :]
    best = scores.masked_fill(~allowed, float("-inf")).flatten(1).argmax(1)
    return [(int(b) // T, int(b) % T) for b in best]


def span_text(data: TaskData, row: int, span: tuple[int, int], context: str) -> str:
    """The passage text that a predicted token span covers, exactly as written in ``context``."""
    words, starts = _words_with_offsets(context)
    first, last = data.word_ids[row][span[0]], data.word_ids[row][span[1]]
    if first is None or last is None:
        return ""
    return context[starts[first] : starts[last] + len(words[last])]


def word_predictions(data: TaskData, token_predictions: list[list[int]]) -> list[list[int]]:
    """Per-token predictions -> one prediction per (kept) word: the one at its first token."""
    sentences = []
    for word_ids, predicted in zip(data.word_ids, token_predictions):
        words, previous = [], None
        for w, p in zip(word_ids, predicted):
            if w is not None and w != previous:
                words.append(p)
            previous = w
        sentences.append(words)
    return sentences
