"""ELMo (Peters et al., NAACL 2018) in one file: a character-level token encoder, a
bidirectional LSTM language model, and the task-weighted mix of its layers.

    config = ELMoConfig(vocab_size=len(words))
    bilm = BiLM(config)
    layers = bilm(char_ids).hidden_states   # L+1 tensors, each (batch, time, 2*dim)
    mix = ScalarMix(len(layers))
    elmo = mix(layers)                 # (batch, time, 2*dim)

Words go in as characters: ``char_ids`` has shape (batch, time, max_chars), one row of
character ids per word (see ``CharVocab``). A word whose ids are all 0 is padding; padding words
must come after the real words of their sentence.

Shapes in comments: B batch, T words per sentence, C characters per word, d = config.dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctxlib.batches import IGNORE_INDEX, check_ids, check_targets, lm_windows
from ctxlib.layers import ModelOutput
from ctxlib.runtime import device_of

# Character ids: 0 pads, bytes of the UTF-8 word are 1..256, then begin- and end-of-word marks.
PAD_CHAR, BOW_CHAR, EOW_CHAR = 0, 257, 258
CHAR_VOCAB_SIZE = 259


@dataclass
class ELMoConfig:
    """Every size of the model. The defaults give a small biLM that trains on a CPU; the
    published model used filters up to width 7 (2048 in all), 2 highway layers, dim 512,
    LSTM cells of 4096 and a vocabulary of 793,471 words."""

    vocab_size: int = 10_000  # words the language model predicts (the softmax)
    max_chars: int = 20  # characters per word, begin/end marks included; longer words are cut
    char_vocab_size: int = CHAR_VOCAB_SIZE  # character id 0 is padding
    char_dim: int = 16  # character embedding width
    filters: tuple[tuple[int, int], ...] = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256))
    highway_layers: int = 2
    dim: int = 128  # token encoding width = LSTM output width (after its projection)
    hidden: int = 512  # LSTM cell width, projected down to dim (no projection if equal)
    layers: int = 2  # LSTM layers per direction
    dropout: float = 0.1
    cutoffs: tuple[int, ...] = (2_000, 8_000)  # adaptive softmax clusters (by word frequency)

    def __post_init__(self):
        if self.max_chars < 3:
            raise ValueError("max_chars must be at least 3 (begin mark, a character, end mark).")
        if max(w for w, _ in self.filters) > self.max_chars:
            raise ValueError("a convolution is wider than max_chars.")
        if not all(0 < c < self.vocab_size for c in self.cutoffs):
            raise ValueError(f"cutoffs {self.cutoffs} must lie inside (0, vocab_size).")


class CharVocab:
    """Words to character ids: ``[BOW] bytes of the word [EOW]``, padded with 0 to max_chars.
    Any word can be written this way, so the encoder has no unknown words. A word longer than
    ``max_chars - 2`` bytes keeps its first ``max_chars - 2`` bytes (the original ELMo did the
    same with 50 characters)."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars

    def word(self, word: str | bytes) -> list[int]:
        """One word's character ids. A word may also be given as its bytes: a piece of a
        byte-level BPE vocabulary need not be valid UTF-8 on its own."""
        if not word:
            raise ValueError("cannot encode an empty word; split the text on whitespace first.")
        raw = word if isinstance(word, bytes) else word.encode("utf-8")
        body = [b + 1 for b in raw[: self.max_chars - 2]]
        ids = [BOW_CHAR, *body, EOW_CHAR]
        return ids + [PAD_CHAR] * (self.max_chars - len(ids))

    def sentences(self, sentences: list[list[str]]) -> torch.Tensor:
        """A batch of word lists -> char ids (B, T_max, C), padded with all-zero words."""
        if not sentences or any(len(s) == 0 for s in sentences):
            raise ValueError("every sentence needs at least one word.")
        longest = max(len(s) for s in sentences)
        pad_word = [PAD_CHAR] * self.max_chars
        rows = [[self.word(w) for w in s] + [pad_word] * (longest - len(s)) for s in sentences]
        return torch.tensor(rows, dtype=torch.long)


class Highway(nn.Module):
    """y = g * relu(W x) + (1 - g) * x with gate g = sigmoid(V x) (Srivastava et al., 2015)."""

    def __init__(self, width: int):
        super().__init__()
        self.transform = nn.Linear(width, 2 * width)
        # A gate bias of -1 starts each layer close to the identity ("carry"), as in ELMo.
        nn.init.constant_(self.transform.bias[width:], -1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        candidate, gate = self.transform(x).chunk(2, dim=-1)
        gate = torch.sigmoid(gate)
        return gate * F.relu(candidate) + (1 - gate) * x


class CharCNNEncoder(nn.Module):
    """Characters of each word -> one vector per word (Kim et al., 2016, as used by ELMo):
    embed the characters, convolve with filters of several widths, max-pool over the word,
    highway layers, a linear projection to ``dim``, and batch normalisation.

    Why the normalisation (not in the paper): every pooled feature is a non-negative maximum, so
    all words' vectors share a large common component (cosine about 0.9 between random words
    at initialisation). The LSTMs then learn almost nothing beyond word frequencies for hundreds
    of steps (training loss 7.2 after 300 steps on WikiText-2, against 6.4 with normalised
    inputs). Batch normalisation (Ioffe and Szegedy, 2015) removes that component; it costs
    nothing at the published model's scale, where it simply is not needed.
    """

    def __init__(self, config: ELMoConfig):
        super().__init__()
        self.char_embedding = nn.Embedding(config.char_vocab_size, config.char_dim, padding_idx=0)
        self.convolutions = nn.ModuleList(
            nn.Conv1d(config.char_dim, count, width) for width, count in config.filters
        )
        width = sum(count for _, count in config.filters)
        self.highways = nn.Sequential(*(Highway(width) for _ in range(config.highway_layers)))
        self.projection = nn.Linear(width, config.dim)
        self.norm = nn.BatchNorm1d(config.dim)

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        """char_ids (N, C) of N real words (no padding words) -> token encodings (N, d)."""
        chars = self.char_embedding(char_ids).transpose(1, 2)  # (N, e, C)
        # Each filter slides over the characters; the max keeps its strongest match anywhere.
        pooled = [F.relu(conv(chars)).amax(dim=-1) for conv in self.convolutions]  # (N, n_i)
        features = self.highways(torch.cat(pooled, dim=-1))  # (N, sum n_i)
        return self.norm(self.projection(features))  # (N, d)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``lengths[b]`` positions of each row b of x (B, T, ...); padding stays
    where it is. Applying it twice gives x back."""
    T = x.shape[1]
    positions = torch.arange(T, device=x.device).expand(x.shape[0], T)  # (B, T)
    flipped = lengths.unsqueeze(1) - 1 - positions
    index = torch.where(positions < lengths.unsqueeze(1), flipped, positions)  # (B, T)
    index = index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class LSTMStack(nn.Module):
    """One direction of the biLM: L LSTM layers, each projecting its cell (hidden) down to dim
    (``proj_size``), with a residual connection from layer 2 on, as in ELMo. It reads its input
    left to right; the backward direction gives it reversed sentences."""

    def __init__(self, config: ELMoConfig):
        super().__init__()
        # With hidden == dim there is nothing to project: a plain LSTM, which PyTorch runs much
        # faster on CPUs (oneDNN has no kernel for projected LSTMs; cuDNN does).
        proj_size = config.dim if config.hidden != config.dim else 0
        self.lstms = nn.ModuleList(
            nn.LSTM(config.dim, config.hidden, proj_size=proj_size, batch_first=True)
            for _ in range(config.layers)
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, T, d) -> the output of every layer, each (B, T, d)."""
        outputs = []
        for j, lstm in enumerate(self.lstms):
            h, _ = lstm(self.dropout(x))
            x = h + x if j > 0 else h  # residual connection between LSTM layers
            outputs.append(x)
        return outputs


@dataclass
class BiLMOutput(ModelOutput):
    """``hidden_states``: the L+1 layers that ELMo mixes, each (B, T, 2d), and the top one as
    ``last_hidden_state``; given word ids, ``loss`` (the mean of the two directions') and each
    direction's. No ``logits``: the adaptive softmax scores only the words it needs."""

    forward_loss: torch.Tensor | None = None  # nats per word, the forward LM
    backward_loss: torch.Tensor | None = None  # nats per word, the backward LM


class BiLM(nn.Module):
    """Forward and backward LSTM language models over a shared token encoder and a shared
    softmax. ``forward`` returns the L+1 layers that ELMo mixes as its ``hidden_states``."""

    def __init__(self, config: ELMoConfig):
        super().__init__()
        self.config = config
        self.encoder = CharCNNEncoder(config)
        self.forward_lm = LSTMStack(config)
        self.backward_lm = LSTMStack(config)
        self.dropout = nn.Dropout(config.dropout)
        # Adaptive softmax (Grave et al., 2017): frequent words get the full width, rare words
        # share smaller clusters. It gives exact probabilities (so perplexity is exact, unlike
        # the sampled softmax the original ELMo trained with) at a fraction of the cost of a
        # full softmax over tens of thousands of words. Word ids must be sorted by frequency.
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(
            config.dim, config.vocab_size, cutoffs=list(config.cutoffs), div_value=4.0
        )

    def mask(self, char_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T) bool, True at real words; checks that padding comes last."""
        if char_ids.dim() != 3 or char_ids.shape[-1] != self.config.max_chars:
            raise ValueError(
                f"char_ids must have shape (batch, time, {self.config.max_chars}), got "
                f"{tuple(char_ids.shape)}; CharVocab(max_chars).sentences(...) builds it."
            )
        if char_ids.shape[1] == 0:
            raise ValueError("char_ids has no words (time dimension 0).")
        check_ids(char_ids, self.config.char_vocab_size, "character ids")
        mask = (char_ids != PAD_CHAR).any(dim=-1)  # (B, T)
        lengths = mask.sum(dim=1)
        if (lengths == 0).any():
            raise ValueError(f"sentence {int((lengths == 0).nonzero()[0])} of the batch is empty.")
        if (mask != (torch.arange(mask.shape[1], device=mask.device) < lengths[:, None])).any():
            raise ValueError("padding words (all character ids 0) must come after the real words.")
        return mask

    def directions(self, char_ids: torch.Tensor):
        """Token encodings and both directions' layers: (x, forward layers, backward layers,
        mask), each layer (B, T, d) aligned with the input positions."""
        mask = self.mask(char_ids)
        lengths = mask.sum(dim=1)
        # Encode the real words only (batch statistics never see padding); zero at padding.
        encoded = self.encoder(char_ids[mask])  # (real words, d)
        x = encoded.new_zeros(*mask.shape, encoded.shape[-1])  # (B, T, d)
        x[mask] = encoded
        forward = self.forward_lm(x)
        # The backward LM reads each sentence from its last real word to its first: reverse the
        # real words, run left to right, reverse back. Padding stays at the end, where it cannot
        # reach the real words.
        backward = [reverse_padded(h, lengths) for h in self.backward_lm(reverse_padded(x, lengths))]
        keep = mask.unsqueeze(-1)
        return x, [h * keep for h in forward], [h * keep for h in backward], mask

    def forward(self, char_ids: torch.Tensor, word_ids: torch.Tensor | None = None) -> BiLMOutput:
        """char_ids (B, T, C) -> ``hidden_states``, L+1 tensors (B, T, 2d): layer 0 is the token
        encoding twice ``[x; x]``, layer j is ``[forward_j; backward_j]``, zero at padding. With
        ``word_ids`` (B, T), also the losses (see ``lm_losses``)."""
        if word_ids is not None:  # checked first: a bad batch should not cost a forward pass
            self._check_word_ids(char_ids, word_ids)
        x, forward, backward, mask = self.directions(char_ids)
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat(fb, dim=-1)
                                                for fb in zip(forward, backward)]
        out = BiLMOutput(last_hidden_state=layers[-1], hidden_states=layers)
        if word_ids is not None:
            out.forward_loss, out.backward_loss = self._losses(forward, backward, mask, word_ids)
            out.loss = (out.forward_loss + out.backward_loss) / 2
        return out

    def lm_losses(self, char_ids: torch.Tensor, word_ids: torch.Tensor):
        """Mean negative log-likelihood (nats per word) of each direction: the forward top layer
        at t predicts word t+1, the backward top layer at t predicts word t-1.

        char_ids (B, T, C), word_ids (B, T) -> (forward loss, backward loss), scalars: the
        losses of ``forward(char_ids, word_ids)`` without building its layers, for training."""
        self._check_word_ids(char_ids, word_ids)
        _, forward, backward, mask = self.directions(char_ids)
        return self._losses(forward, backward, mask, word_ids)

    def _check_word_ids(self, char_ids, word_ids) -> None:
        if word_ids.shape != char_ids.shape[:2]:
            raise ValueError(f"word_ids {tuple(word_ids.shape)} must match char_ids' "
                             f"(batch, time) {tuple(char_ids.shape[:2])}.")

    def _losses(self, forward, backward, mask, word_ids):
        # the ids at padding positions are never used, so only the real ones are checked
        check_ids(word_ids[mask], self.config.vocab_size, "word ids")
        forward_targets, backward_targets = shifted_targets(word_ids, mask)
        # Both directions have a target wherever two real words are neighbours, so checking one
        # direction checks both. A batch of one-word sentences has none at all.
        check_targets(forward_targets, self.config.vocab_size, "word targets",
                      hint="sentences need at least 2 words for a language-model target (each "
                           "word predicts its neighbour)")
        return (self._nll(forward[-1], forward_targets), self._nll(backward[-1], backward_targets))

    def _nll(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        keep = targets != IGNORE_INDEX  # (B, T)
        # The adaptive softmax scores only the clusters each target needs, not every word. It
        # writes each cluster's log-probabilities into one float32 tensor, which fails under
        # mixed precision (half-precision parts): it runs in float32, a small part of the work.
        with torch.autocast(states.device.type, enabled=False):
            return self.softmax(self.dropout(states[keep]).float(), targets[keep]).loss



def shifted_targets(word_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The word each position must predict, in each direction; IGNORE_INDEX where there is none.

    word_ids, mask (B, T) -> forward targets (B, T): word t+1 at t (none at the last real word),
    backward targets (B, T): word t-1 at t (none at the first)."""
    forward = torch.full_like(word_ids, IGNORE_INDEX)
    backward = torch.full_like(word_ids, IGNORE_INDEX)
    both_real = mask[:, 1:] & mask[:, :-1]
    forward[:, :-1] = torch.where(both_real, word_ids[:, 1:], IGNORE_INDEX)
    backward[:, 1:] = torch.where(both_real, word_ids[:, :-1], IGNORE_INDEX)
    return forward, backward


# --- Pretraining on a word stream (chapter 3) ---------------------------------------------------


def spell_vocabulary(words: list[str] | list[bytes], max_chars: int) -> torch.Tensor:
    """Each word of a vocabulary spelled once: (V, max_chars) character ids, row i for word i,
    so that a batch of word ids becomes characters by indexing: ``spelled[word_ids]``."""
    return CharVocab(max_chars).sentences([words])[0]


def lm_batch(word_ids: torch.Tensor, spelled: torch.Tensor, size: int, window: int,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` random windows of ``window`` words from the stream ``word_ids`` (N,): their
    characters (B, T, C) and their word ids (B, T), the targets of both directions."""
    windows, _ = lm_windows(word_ids, size, window, generator)  # (B, T)
    return spelled[windows], windows


def lm_loss(model: BiLM, batch) -> torch.Tensor:
    """The mean of the two directions' losses on an ``lm_batch`` (nats per word)."""
    char_ids, word_ids = (t.to(device_of(model)) for t in batch)
    forward_loss, backward_loss = model.lm_losses(char_ids, word_ids)
    return (forward_loss + backward_loss) / 2


def validation_windows(word_ids: torch.Tensor, window: int) -> torch.Tensor:
    """The stream (N,) cut into consecutive windows of ``window`` words: (N // window, window).
    Every word is scored once per direction, with the words of its own window as context."""
    return word_ids[: len(word_ids) // window * window].view(-1, window)


@torch.no_grad()
def evaluate_lm(model: BiLM, windows: torch.Tensor, spelled: torch.Tensor,
                batch_size: int) -> dict[str, float]:
    """Validation perplexity of each direction on fixed ``validation_windows`` (the mean loss
    over batches of ``batch_size`` windows, exponentiated), and ``valid_loss``, the mean of
    the two directions' losses in nats; the model is put back in training mode."""
    model.eval()
    device = device_of(model)
    totals = torch.zeros(2)
    for chunk in windows.split(batch_size):
        totals += torch.stack(model.lm_losses(spelled[chunk].to(device), chunk.to(device))).cpu()
    forward_loss, backward_loss = (totals / math.ceil(len(windows) / batch_size)).tolist()
    model.train()
    return {"forward_ppl": math.exp(forward_loss), "backward_ppl": math.exp(backward_loss),
            "valid_loss": (forward_loss + backward_loss) / 2}


class ScalarMix(nn.Module):
    """ELMo_task = γ · Σ_j softmax(s)_j · h_j, the task-specific weighting of the biLM's layers
    (equation 1 of the paper). s (one scalar per layer) and γ are learned by the task model.
    With ``layer_norm=True`` each layer's vectors are first normalised to zero mean and unit
    variance, which the paper found helpful in some cases."""

    def __init__(self, num_layers: int, layer_norm: bool = False):
        super().__init__()
        self.scalars = nn.Parameter(torch.zeros(num_layers))  # s: equal weights to start
        self.gamma = nn.Parameter(torch.ones(()))
        self.layer_norm = layer_norm

    def weights(self) -> torch.Tensor:
        """softmax(s): (num_layers,), non-negative, summing to one."""
        return torch.softmax(self.scalars, dim=0)

    def forward(self, layers) -> torch.Tensor:
        """A list of num_layers tensors (..., D), or one tensor (..., num_layers, D) -> (..., D)."""
        if isinstance(layers, torch.Tensor):
            layers = layers.unbind(dim=-2)
        if len(layers) != len(self.scalars):
            raise ValueError(f"expected {len(self.scalars)} layers, got {len(layers)}.")
        if self.layer_norm:
            layers = [F.layer_norm(h, h.shape[-1:]) for h in layers]
        return self.gamma * sum(w * h for w, h in zip(self.weights(), layers))


@torch.no_grad()
def embed_sentences(bilm: BiLM, sentences: list[list[str]], batch_size: int = 64,
                    show_progress: bool = True) -> list[torch.Tensor]:
    """The biLM's layers for each sentence (a list of words), frozen: one tensor
    (L+1, len(sentence), 2d) per sentence, on the CPU, in the order given.

    Sentences are batched by length so that little time goes into padding."""
    from ctxlib.runtime import progress

    bilm.eval()
    chars = CharVocab(bilm.config.max_chars)
    device = device_of(bilm)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out: list[torch.Tensor | None] = [None] * len(sentences)
    starts = range(0, len(order), batch_size)
    for start in progress(starts, desc="ELMo features", disable=not show_progress):
        rows = order[start : start + batch_size]
        layers = bilm(chars.sentences([sentences[i] for i in rows]).to(device)).hidden_states
        stacked = torch.stack(layers, dim=1).cpu()  # (B, L+1, T, 2d)
        for b, i in enumerate(rows):
            out[i] = stacked[b, :, : len(sentences[i])]
    return out
