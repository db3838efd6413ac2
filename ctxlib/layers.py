"""Transformer building blocks: attention, masks, multi-head attention, the block.

Chapter 2 builds each piece by hand and checks it against these; the encoder models of later
chapters use them. (GPT, chapter 4, keeps its own attention in ``ctxlib/gpt.py`` so that the
whole GPT-2 model, with its key/value cache, reads in one file.)

Mask convention (the same as ``torch.nn.functional.scaled_dot_product_attention``'s boolean
masks): **True means "may attend"**. Shapes: B = batch, H = heads, T = time, C = width,
D = C // H = width of one head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctxlib.batches import check_ids, pad_batch


@dataclass
class ModelOutput:
    """What every model's forward returns, with the names Hugging Face's outputs use.

        out = model(input_ids, targets=targets)   # GPT; BERT, ELMo and XLNet alike
        out.logits      # scores over the vocabulary (or the classes): (B, T, V), (B, labels), ...
        out.loss        # a scalar, only when targets or labels were given, else None
        out.last_hidden_state   # the top layer's vectors (B, T, C), when the model has them
        out.hidden_states       # every layer (input first), with all_layers=True, else None
                                # (the biLM's always: they are what ELMo mixes)

    Each model adds its own extras in a subclass: GPT's key/value cache (``past``), BERT's pooled
    [CLS] vector and next-sentence logits, ELMo's two directions' losses, XLNet's memory
    (``mems``). A field the model did not fill in is None (an encoder without a head has no
    logits; a forward without targets has no loss).
    """

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, written out: softmax(q kᵀ / √d) v.

    q: (..., T_q, D), k and v: (..., T_k, D); ``mask`` broadcasts to (..., T_q, T_k), True where
    a query may attend to a key. Returns the output (..., T_q, D) and the weights (..., T_q, T_k).
    A query that may attend to no key at all is an error (its softmax would be 0/0).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T_q, T_k)
    if mask is not None:
        if not mask.any(dim=-1).all():
            raise ValueError("the mask leaves a query with no key to attend to (a row of all "
                             "False); every query needs at least one allowed key.")
        # -inf, not a large constant such as -1e30, which float16 (under torch.autocast) cannot
        # hold: every float dtype has -inf. It gives NaN only in a row of all -inf, refused above.
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if dropout_p and training:
        weights = F.dropout(weights, dropout_p)
    return weights @ v, weights


def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True on and below the diagonal: position t sees positions <= t."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) with 1 for real tokens -> (B, 1, 1, T) boolean: every query may see real keys."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, time), got {tuple(attention_mask.shape)}.")
    return attention_mask.bool()[:, None, None, :]


def attend_somewhere(mask: torch.Tensor) -> torch.Tensor:
    """The boolean ``mask`` (..., T_q, T_k), with every query that may attend to no key at all
    allowed to attend to every key instead.

    Such a query is a padding position whose whole sequence is padding (an all-padding row of a
    batch). Its output is ignored downstream, but a softmax over no key at all is 0/0, and
    some versions and backends of ``scaled_dot_product_attention`` then return NaN, whose
    gradient would spread to every weight. Attending everywhere gives it a harmless finite
    output instead; queries with at least one allowed key are unchanged.
    """
    return mask | ~mask.any(dim=-1, keepdim=True)


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """Logical AND of the given masks (None entries are ignored), broadcasting their shapes."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    combined = present[0]
    for m in present[1:]:
        combined = combined & m
    return combined


class MultiHeadAttention(nn.Module):
    """Self-attention with ``n_heads`` heads of width ``d_model // n_heads``.

    One fused linear layer computes queries, keys and values (``qkv``), and ``out`` mixes the
    heads. Padding keys (``attention_mask`` = 0) are never attended to.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 causal: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
        self.d_model, self.n_heads, self.causal, self.dropout = d_model, n_heads, causal, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, H, T, D)."""
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)

    @staticmethod
    def merge_heads(x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D) -> (B, T, H * D)."""
        B, H, T, D = x.shape
        return x.transpose(1, 2).reshape(B, T, H * D)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """x: (B, T, C); attention_mask: (B, T), 1 = real token, 0 = padding.

        Returns (B, T, C), or ``(output, weights (B, H, T, T))`` with ``return_weights``, which
        uses the hand-written ``attention`` (the fused kernel does not expose its weights).
        """
        _check_input(x, self.d_model, attention_mask)
        q, k, v = (self.split_heads(t) for t in self.qkv(x).split(self.d_model, dim=-1))
        T = x.size(1)
        mask = combine_masks(
            padding_mask(attention_mask) if attention_mask is not None else None,
            causal_mask(T, x.device) if self.causal else None,
        )
        if attention_mask is not None:
            mask = attend_somewhere(mask)  # an all-padding row has no key to attend to
        dropout = self.dropout if self.training else 0.0
        if return_weights:
            y, weights = attention(q, k, v, mask, dropout, self.training)
            return self.out(self.merge_heads(y)), weights
        if mask is None or (self.causal and attention_mask is None):
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out(self.merge_heads(y))


class FeedForward(nn.Module):
    """Position-wise MLP: C -> d_ff -> activation -> C."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        activations = {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "relu": nn.ReLU()}
        if activation not in activations:
            raise ValueError(f"unknown activation {activation!r}; "
                             f"choose one of {', '.join(activations)}.")
        self.fc = nn.Linear(d_model, d_ff)
        self.act = activations[activation]
        self.proj = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class TransformerBlock(nn.Module):
    """Attention and feed-forward sub-layers, each with a residual connection and LayerNorm.

    ``norm_first=True`` (pre-LN, GPT-2):  x = x + attn(ln1(x));  x = x + ff(ln2(x))
    ``norm_first=False`` (post-LN, BERT): x = ln1(x + attn(x));  x = ln2(x + ff(x))
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, dropout: float = 0.0,
                 norm_first: bool = True, causal: bool = False, activation: str = "gelu",
                 layer_norm_eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(d_model, n_heads, dropout, causal=causal)
        self.ff = FeedForward(d_model, d_ff or 4 * d_model, activation, dropout)
        self.ln1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.ln2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                return_weights: bool = False):
        """x: (B, T, C) -> (B, T, C) (and the attention weights with ``return_weights``)."""
        weights = None

        def attend(h):
            nonlocal weights
            if return_weights:
                h, weights = self.attn(h, attention_mask, return_weights=True)
                return self.dropout(h)
            return self.dropout(self.attn(h, attention_mask))

        if self.norm_first:
            x = x + attend(self.ln1(x))
            x = x + self.ff(self.ln2(x))
        else:
            x = self.ln1(x + attend(x))
            x = self.ln2(x + self.ff(x))
        return (x, weights) if return_weights else x


def _check_input(x: torch.Tensor, d_model: int, attention_mask: torch.Tensor | None) -> None:
    if x.dim() != 3:
        raise ValueError(f"expected input of shape (batch, time, {d_model}), got {tuple(x.shape)}.")
    if x.size(-1) != d_model:
        raise ValueError(f"input width {x.size(-1)} does not match d_model={d_model}.")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must be (batch, time) = "
                         f"{tuple(x.shape[:2])}.")


class TransformerClassifier(nn.Module):
    """Chapter 2's sentence classifier: token and position embeddings, a stack of pre-LN
    ``TransformerBlock``s, a final LayerNorm, the mean over the real tokens, one linear layer.

    ``forward(ids, attention_mask)``: (B, T) token ids and (B, T) mask (1 = real token) ->
    (B, n_classes) logits; with ``return_weights=True`` also every block's attention weights,
    (B, layers, heads, T, T).
    """

    def __init__(self, vocab_size: int, width: int, heads: int, layers: int, max_len: int,
                 n_classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(max_len, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, dropout=dropout)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor,
                return_weights: bool = False):
        check_ids(ids, self.tokens.num_embeddings, "token ids")
        if ids.size(1) > self.positions.num_embeddings:
            raise ValueError(f"{ids.size(1)} tokens do not fit the {self.positions.num_embeddings} "
                             "positions this classifier knows: cut the inputs to max_len.")
        x = self.tokens(ids) + self.positions(torch.arange(ids.size(1), device=ids.device))
        all_weights = []
        for block in self.blocks:
            if return_weights:
                x, weights = block(x, attention_mask, return_weights=True)
                all_weights.append(weights)
            else:
                x = block(x, attention_mask)
        x = self.norm(x)  # (B, T, C)
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (x * mask).sum(1) / mask.sum(1)  # (B, C): the mean over real tokens
        logits = self.head(pooled)
        return (logits, torch.stack(all_weights, 1)) if return_weights else logits


@torch.no_grad()
def classifier_accuracy(model: TransformerClassifier, items: list[tuple[str, int]], encode,
                        batch_size: int = 256) -> float:
    """The share of ``items`` ((text, label) pairs) that ``model`` labels right, each text read
    as ``encode(text)`` (its token ids, cut to the model's ``max_len``), in padded batches on
    the model's device. Chapter 2 scores its classifier with it, and so does the grader of
    its exercise 2.4; put the model in eval mode first (``ctxlib.train`` does)."""
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        ids, mask = pad_batch([encode(text) for text, _ in chunk])  # (B, T) each
        predicted = model(ids.to(device), mask.to(device)).argmax(-1).cpu()  # (B,)
        correct += (predicted == torch.tensor([label for _, label in chunk])).sum().item()
    return correct / len(items)
