"""Tokenizers from scratch: characters, and byte-level byte-pair encoding (BPE).

A tokenizer turns text into integer ids and back. Two kinds are used in the course:

- ``CharTokenizer``: one id per character. Tiny vocabulary, long sequences (chapter 4's
  Tiny Shakespeare GPT).
- ``BPETokenizer``: byte-level BPE, the idea of Sennrich et al. (2016) applied to bytes as in
  GPT-2 (Radford et al., 2019). Start from the 256 byte values, then repeatedly merge the most
  frequent adjacent pair into a new token. Frequent words end up as one token, rare words as a
  few pieces, and since every string is a sequence of bytes nothing is ever unknown.

Special tokens are defined once, here, and take the first ids (``[PAD]`` is always 0).

Saved tokenizers are JSON files in UTF-8, whatever the computer's locale, so that a file saved
on one machine loads on any other.
"""

from __future__ import annotations

import heapq
import json
import re
import warnings
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

from ctxlib.runtime import progress

# The special tokens of every model in the course, in id order.
PAD, UNK, CLS, SEP, MASK, EOD = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[EOD]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK, EOD)
# [PAD] fills batches to one length; [UNK] stands for what a vocabulary lacks; [CLS] and [SEP]
# mark a classification position and segment ends (BERT; XLNet puts its summary token last);
# [MASK] hides tokens for masked language modelling; [EOD] ends a document.

# Pre-tokenization: split text into words with their leading space, numbers, punctuation runs
# and whitespace. Merges never cross these boundaries, so "dog." and "dog" share "dog".
PRETOKENIZE = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+", re.UNICODE
)


class CharTokenizer:
    """One id per distinct character of the training text (after any special tokens)."""

    def __init__(self, chars: list[str], special_tokens: tuple[str, ...] = ()):
        self.special_tokens = tuple(special_tokens)
        self.itos = list(self.special_tokens) + list(chars)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("characters and special tokens must all be distinct.")

    @classmethod
    def train(cls, text: str, special_tokens: tuple[str, ...] = ()) -> CharTokenizer:
        """The vocabulary is the sorted set of characters in ``text``."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text.")
        return cls(sorted(set(text)), special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as error:
            if UNK in self.stoi:
                return [self.stoi.get(c, self.stoi[UNK]) for c in text]
            raise ValueError(
                f"character {error.args[0]!r} is not in the vocabulary of {self.vocab_size} "
                "characters; train the tokenizer on text that contains it, or give it [UNK]."
            ) from None

    def decode(self, ids) -> str:
        return "".join(self.itos[i] for i in _checked_ids(ids, self.vocab_size))

    def save(self, path: str | Path) -> None:
        chars = self.itos[len(self.special_tokens) :]
        state = {"type": "char", "special_tokens": self.special_tokens, "chars": chars}
        # Always UTF-8: the locale's default encoding may be ASCII, which cannot hold "é".
        Path(path).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        state = _read_state(path, "char")
        return cls(state["chars"], tuple(state["special_tokens"]))


class BPETokenizer:
    """Byte-level byte-pair encoding.

    Ids: the special tokens first, then the 256 byte values, then one id per learned merge,
    in the order the merges were learned.
    """

    def __init__(self, merges: list[tuple[int, int]], special_tokens=SPECIAL_TOKENS):
        self.special_tokens = tuple(special_tokens)
        self.offset = len(self.special_tokens)  # id of byte 0
        self.merges = [tuple(pair) for pair in merges]
        # rank of each merge (lower = learned earlier = applied first) and the id it makes
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.pieces: list[bytes] = [b""] * self.offset + [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.pieces.append(self.pieces[a] + self.pieces[b])
        self.special_ids = {tok: i for i, tok in enumerate(self.special_tokens)}
        self._cache: dict[str, list[int]] = {}

    # --- training -------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: tuple[str, ...] = SPECIAL_TOKENS,
        progress_bar: bool = True,
    ) -> BPETokenizer:
        """Learn merges from ``text`` until the vocabulary has ``vocab_size`` entries.

        Merges are counted over the table of distinct pre-tokens and their frequencies, not over
        the running text: WikiText-2's 2 million words are only ~60,000 distinct pre-tokens.
        Ties between equally frequent pairs go to the smaller pair of ids (deterministic).
        """
        n_merges = vocab_size - len(special_tokens) - 256
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least {len(special_tokens) + 256}.")
        offset = len(special_tokens)
        counts = Counter(PRETOKENIZE.findall(text))
        words = [[offset + b for b in w.encode("utf-8")] for w in counts]  # symbols per word
        freqs = list(counts.values())

        # How often each adjacent pair occurs, and in which words (so a merge touches only those).
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (symbols, freq) in enumerate(zip(words, freqs)):
            for pair in pairwise(symbols):
                pair_counts[pair] += freq
                where[pair].add(w)
        # A max-heap of (-count, pair); stale entries are skipped when popped.
        heap = [(-c, pair) for pair, c in pair_counts.items()]
        heapq.heapify(heap)

        merges: list[tuple[int, int]] = []
        bar = progress(total=n_merges, desc="BPE merges", disable=not progress_bar)
        while len(merges) < n_merges and heap:
            negative_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -negative_count or negative_count == 0:
                continue  # stale: the count changed since this entry was pushed
            new_id = offset + 256 + len(merges)
            merges.append(pair)
            bar.update()
            changed = set()
            for w in where.pop(pair):
                symbols, freq = words[w], freqs[w]
                for old in pairwise(symbols):  # forget the word's old pairs ...
                    pair_counts[old] -= freq
                    changed.add(old)
                words[w] = symbols = _merge(symbols, pair, new_id)
                for new in pairwise(symbols):  # ... and count its new ones
                    pair_counts[new] += freq
                    where[new].add(w)
                    changed.add(new)
            del pair_counts[pair]
            for p in changed:
                if pair_counts.get(p, 0) > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
        bar.close()
        if len(merges) < n_merges:
            # Every pre-token is already a single symbol: nothing is left to merge. Say so, since
            # a model sized for vocab_size would otherwise get a smaller vocabulary unnoticed.
            reached = vocab_size - (n_merges - len(merges))
            warnings.warn(
                f"BPE stopped at a vocabulary of {reached} tokens, short of the {vocab_size} "
                "asked for: the training text has no more pairs to merge. Train on more text or "
                "ask for a smaller vocab_size.",
                stacklevel=2,
            )
        return cls(merges, special_tokens)

    # --- encoding -------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def __len__(self) -> int:
        return self.vocab_size

    def _encode_pretoken(self, word: str) -> list[int]:
        """Apply the merges to one pre-token, earliest-learned first (cached)."""
        if word in self._cache:
            return self._cache[word]
        symbols = [self.offset + b for b in word.encode("utf-8")]
        while len(symbols) > 1:
            ranked = [(self.ranks.get(p, len(self.ranks)), p) for p in pairwise(symbols)]
            rank, pair = min(ranked)
            if rank == len(self.ranks):
                break  # no learned merge applies any more
            symbols = _merge(symbols, pair, self.offset + 256 + rank)
        self._cache[word] = symbols
        return symbols

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``. With ``allow_special``, the strings of special tokens in the
        text (e.g. ``"[SEP]"``) become their single ids; otherwise they are ordinary text."""
        if allow_special and self.special_tokens:
            pattern = "(" + "|".join(re.escape(t) for t in self.special_tokens) + ")"
            ids = []
            for part in re.split(pattern, text):
                if part in self.special_ids:
                    ids.append(self.special_ids[part])
                elif part:
                    ids.extend(self.encode(part))
            return ids
        return [i for word in PRETOKENIZE.findall(text) for i in self._encode_pretoken(word)]

    def encode_batch(self, texts: list[str], allow_special: bool = False) -> list[list[int]]:
        return [self.encode(t, allow_special) for t in texts]

    def decode(self, ids) -> str:
        """Text of ``ids``. Special tokens are written as their names (``[SEP]``)."""
        out = bytearray()
        for i in _checked_ids(ids, self.vocab_size):
            out += self.special_tokens[i].encode() if i < self.offset else self.pieces[i]
        return out.decode("utf-8", errors="replace")  # a cut can split a multi-byte character

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` as readable strings, e.g. ``[' token', 'ization']``."""
        return [self.id_to_token(i) for i in self.encode(text)]

    def token_to_id(self, token: str) -> int:
        if token in self.special_ids:
            return self.special_ids[token]
        ids = self.encode(token)
        if len(ids) != 1:
            raise KeyError(f"{token!r} is not a single token; it encodes to {len(ids)} tokens.")
        return ids[0]

    def id_to_token(self, i: int) -> str:
        (i,) = _checked_ids([i], self.vocab_size)
        if i < self.offset:
            return self.special_tokens[i]
        return self.pieces[i].decode("utf-8", errors="backslashreplace")

    # --- saving ---------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        state = {"type": "bpe", "special_tokens": self.special_tokens, "merges": self.merges}
        Path(path).write_text(json.dumps(state), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        state = _read_state(path, "bpe")
        return cls([tuple(m) for m in state["merges"]], tuple(state["special_tokens"]))


def _merge(symbols: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``symbols`` (left to right) by ``new_id``."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _checked_ids(ids, vocab_size: int) -> list[int]:
    ids = [int(i) for i in ids]  # accepts lists and tensors
    for i in ids:
        if not 0 <= i < vocab_size:
            raise ValueError(f"token id {i} is outside the vocabulary (size {vocab_size}).")
    return ids


def _read_state(path: str | Path, kind: str) -> dict:
    state = json.loads(Path(path).read_text(encoding="utf-8"))
    if state.get("type") != kind:
        raise ValueError(f"{path} holds a {state.get('type')!r} tokenizer, not a {kind!r} one.")
    return state
