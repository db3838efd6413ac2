"""Batches: random windows for language modelling, padded batches, labels aligned to subwords.

Every function that draws at random takes a ``torch.Generator``: the training loop saves that
generator's state in its checkpoints, which is what lets a run resume at the same data position.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # label of positions that take no part in a loss (PyTorch's default)


def check_ids(ids: torch.Tensor, size: int, name: str) -> None:
    """Raise a clear error unless ``ids`` (any shape) are torch.long and lie in [0, size).

    An id outside the table would otherwise fail deep inside an embedding lookup (or, on a GPU,
    as an opaque device-side assert); ``name`` says which ids, e.g. "token ids".
    """
    if ids.dtype != torch.long:
        raise TypeError(f"{name} must be torch.long, got {ids.dtype}.")
    if ids.numel() and (ids.min() < 0 or ids.max() >= size):
        raise ValueError(f"{name} must lie in [0, {size}), found {ids.min().item()}.."
                         f"{ids.max().item()}.")


def check_targets(
    targets: torch.Tensor, size: int, name: str, hint: str = "check the masking and the labels"
) -> None:
    """Raise a clear error unless ``targets`` (any shape) can go into a cross-entropy loss over
    ``size`` classes: torch.long, each in [0, size) or IGNORE_INDEX, and at least one of them not
    IGNORE_INDEX.

    A mean over no target at all is 0/0: the loss would be NaN, which a training loop reports as
    a diverged run (and sends you looking at the learning rate). A target outside the classes
    would fail deep inside the loss, or on a GPU as an opaque device-side assert. ``name`` says
    which targets, e.g. "next-token targets"; ``hint`` says what to do when none is left.
    """
    if targets.dtype != torch.long:
        raise TypeError(f"{name} must be torch.long, got {targets.dtype}.")
    if targets.numel() == 0:
        raise ValueError(f"{name} are empty (shape {tuple(targets.shape)}): there is nothing to "
                         f"predict, and the loss would be NaN; {hint}.")
    low, high = torch.aminmax(targets)  # one pass; the common case ends here
    if 0 <= low and high < size:
        return  # every target a class, none ignored
    ignored = targets == IGNORE_INDEX
    if ignored.all():
        raise ValueError(f"no position has a target: every one of the {targets.numel()} {name} "
                         f"is {IGNORE_INDEX} (ignored), and the loss would be NaN; {hint}.")
    outside = ~ignored & ((targets < 0) | (targets >= size))
    if outside.any():
        raise ValueError(f"{name} must lie in [0, {size}) or be {IGNORE_INDEX} (ignored), "
                         f"found {targets[outside][0].item()}.")


def lm_windows(
    token_ids: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of a token stream (N,), for next-token prediction.

    Returns x and y, each (batch_size, block_size), with ``y[b, t] = x[b, t + 1]``: the target
    of each position is the token that follows it.
    """
    if token_ids.dim() != 1:
        raise ValueError(f"token_ids must be a 1-D stream, got shape {tuple(token_ids.shape)}.")
    if len(token_ids) < block_size + 1:
        raise ValueError(
            f"the stream has {len(token_ids)} tokens, fewer than block_size + 1 = {block_size + 1}."
        )
    starts = torch.randint(0, len(token_ids) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size + 1)
    windows = token_ids[starts[:, None] + offsets]  # (batch_size, block_size + 1)
    return windows[:, :-1], windows[:, 1:]


def pad_batch(
    sequences: list[list[int]], pad_id: int = 0, max_len: int | None = None, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad sequences of ids to one length, on the right (or, with ``side="left"``, on the left,
    so that every sequence ends at the last position: where XLNet's classifier reads).

    Sequences longer than ``max_len`` are cut at the end (their first ``max_len`` ids stay).
    Returns ``input_ids`` (B, T) and ``attention_mask`` (B, T), 1 for real tokens, 0 for padding.
    """
    if side not in ("left", "right"):
        raise ValueError(f'side must be "left" or "right", got {side!r}.')
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence.")
    length = max(len(s) for s in sequences)
    if max_len is not None:
        length = min(length, max_len)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        seq = list(seq)[:length]
        where = slice(0, len(seq)) if side == "right" else slice(length - len(seq), length)
        input_ids[row, where] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, where] = 1
    return input_ids, attention_mask


def encode_words(tokenizer, words: list[str]) -> tuple[list[int], list[int]]:
    """Encode a sentence given as words, recording which word each token comes from.

    Every word but the first gets a leading space, as it had in running text (byte-level BPE
    learned its merges on words with their spaces). ``tokenizer`` is the course's or a
    ``transformers`` one (then without its special tokens: the caller adds [CLS] and [SEP]
    where its model wants them). Returns ``(ids, word_ids)``.
    """
    ids, word_ids = [], []
    for index, word in enumerate(words):
        text = word if index == 0 else " " + word
        if hasattr(tokenizer, "add_special_tokens"):  # a transformers tokenizer
            pieces = tokenizer.encode(text, add_special_tokens=False)
        else:
            pieces = tokenizer.encode(text)
        ids.extend(pieces)
        word_ids.extend([index] * len(pieces))
    return ids, word_ids


def align_labels(
    word_ids: list[int | None],
    word_labels: list[int],
    label_all_subwords: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> list[int]:
    """Word-level labels spread over subword tokens.

    ``word_ids[i]`` is the word token i came from (None for special tokens such as [CLS]).
    The first token of each word gets the word's label; the other tokens of the word get
    ``ignore_index`` (or the word's label too, with ``label_all_subwords``), and special tokens
    always get ``ignore_index``. So each word is predicted and scored exactly once.
    """
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(ignore_index)
        elif word != previous:
            if not 0 <= word < len(word_labels):
                raise ValueError(f"word index {word} has no label ({len(word_labels)} labels).")
            labels.append(word_labels[word])
        else:
            labels.append(word_labels[word] if label_all_subwords else ignore_index)
        previous = word
    return labels


def wikitext2_bpe_streams(bpe_vocab: int, wiki_chars: int | None = None):
    """Chapters 4 and 6 (and their graders): a BPE tokenizer of ``bpe_vocab`` entries trained on
    WikiText-2's training text (its first ``wiki_chars`` characters, if set), and the training
    and validation text as streams of its token ids: (tokenizer, (N_train,), (N_valid,))."""
    from ctxlib.data import load_wikitext2
    from ctxlib.tokenizers import BPETokenizer

    text = load_wikitext2("train")
    if wiki_chars:
        text = text[:wiki_chars]
    bpe = BPETokenizer.train(text, vocab_size=bpe_vocab, progress_bar=False)
    return (bpe, torch.tensor(bpe.encode(text)),
            torch.tensor(bpe.encode(load_wikitext2("valid"))))
