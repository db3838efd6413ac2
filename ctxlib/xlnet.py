"""XLNet (Yang et al., NeurIPS 2019) in one file: relative attention with two streams and memory,
the permutation language-modelling objective, and heads for fine-tuning.

    config = XLNetConfig(vocab_size=4000, mem_len=64)
    model = XLNetLM(config)
    perm_mask, target_mapping, labels = permutation_batch(input_ids, num_predict=8, generator=g)
    out = model(input_ids, perm_mask=perm_mask, target_mapping=target_mapping, labels=labels)
    out.loss.backward()                      # out.mems feeds the next segment: model(..., mems=out.mems)

The pieces, each a section below:

1. **Relative positions** (from Transformer-XL, Dai et al., ACL 2019). No position table: the
   score of query i and key j gets a term that depends only on their distance i - j, read from
   sinusoidal encodings of every distance, plus two learned biases (content and position).
2. **Relative segments.** A term that depends only on whether i and j lie in the same segment.
3. **Two streams.** The content stream h is an ordinary representation of each token. The query
   stream g represents "the token at position t, whose content I may not see": it starts from
   one learned vector (``mask_emb``), attends to the content stream with the same weights, and
   is what predicts the targets.
4. **Memory.** Each layer's input on the previous segment, kept (without gradient) and
   prepended to the keys and values of the next segment.

Conventions are the reference's (Hugging Face ``XLNetLMHeadModel``, whose weights load here and
whose outputs ours equal, tests/test_xlnet.py), except that everything is batch-first: the
reference keeps time first inside and transposes at its boundary; we never do.
- ``perm_mask[b, i, j] = 1``: token i may **not** attend to token j;
- ``target_mapping[b, k, t] = 1``: the k-th prediction is the token at position t;
- ``attention_mask[b, t] = 1`` for real tokens, 0 for padding (the same as BERT's).

Shapes: B batch, T tokens of this segment, M tokens of memory, K = M + T keys, P = K + T
relative distances, N targets, H heads, D width of a head, C = H * D width, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ctxlib.batches import IGNORE_INDEX, check_ids, check_targets, lm_windows
from ctxlib.layers import FeedForward, ModelOutput
from ctxlib.runtime import device_of


def blocked_score(dtype: torch.dtype) -> float:
    """The score given to a forbidden key: the most negative number of ``dtype``.

    It depends on the dtype because a fixed constant does not fit every one: -1e30 (the
    reference's float32 value) overflows float16, whose range ends at -65504, as used under
    ``torch.autocast``. Finite, as in the reference, so a query with no allowed key at all (the
    query stream of an all-padding row) gets no NaN but a uniform average over ALL keys, the
    forbidden ones included. For the first target of an order with no context and no memory
    that would mean seeing its own token: ``permutation_masks`` therefore always leaves at
    least one token of context.
    """
    return torch.finfo(dtype).min


@dataclass
class XLNetConfig:
    """Every size of the model. XLNet-base is n_layer=12, n_head=12, d_model=768, d_ff=3072,
    vocab_size=32000, mem_len=384 in pretraining; the defaults here train on a CPU."""

    vocab_size: int = 4000
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int | None = None  # None: 4 * d_model
    dropout: float = 0.1  # on embeddings, positions, attention weights and sub-layer outputs
    layer_norm_eps: float = 1e-12  # the reference's value
    mem_len: int = 0  # hidden states of past segments kept per layer (0: return no memory)
    clamp_len: int = -1  # distances longer than this share one encoding (-1: no clamping)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}.")
        if self.d_model % 2:
            raise ValueError("d_model must be even (sinusoidal encodings pair sin and cos).")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model


# --- 1. Relative positional encodings ----------------------------------------------------------

def relative_encodings(T: int, M: int, d_model: int, clamp_len: int = -1,
                       device=None) -> torch.Tensor:
    """Sinusoidal encodings of the distances K, K-1, ..., -T+1 (K = M + T): (P = K + T, C).

    Row p encodes the distance K - p. A query at position t of the segment (absolute M + t) and
    the key at j are M + t - j apart, which is row T - t + j (see ``relative_index``).
    """
    K = M + T
    distances = torch.arange(K, -T, -1, device=device, dtype=torch.float)  # (P,)
    if clamp_len > 0:
        distances = distances.clamp(-clamp_len, clamp_len)
    inv_freq = 1 / 10000 ** (torch.arange(0, d_model, 2, device=device).float() / d_model)
    angles = distances[:, None] * inv_freq  # (P, C/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (P, C): all sines, then all cosines


def relative_index(query_positions: torch.Tensor, T: int, K: int) -> torch.Tensor:
    """(B, Tq) positions in a segment of T tokens -> (B, 1, Tq, K): for each query and each of
    the K keys, the row of ``relative_encodings`` that holds their distance, T - t + j.

    (The reference gets the same numbers with Transformer-XL's "relative shift", a reshape
    trick; an index says what it means.)"""
    keys = torch.arange(K, device=query_positions.device)  # (K,)
    return (T - query_positions[..., None] + keys)[:, None]


class StreamView(NamedTuple):
    """Where one stream's queries sit and what they may see: the same in every layer, so
    ``XLNet.forward`` builds it once. Shapes: Tq queries, K keys."""

    distance_rows: torch.Tensor  # (B, 1, Tq, K) row of ``relative_encodings`` per (query, key)
    different_segment: torch.Tensor | None  # (B, Tq, K) bool: key in another segment
    blocked: torch.Tensor | None  # (B, Tq, K) bool: True = may not attend


def stream_view(query_positions: torch.Tensor, T: int, K: int,
                different_segment: torch.Tensor | None = None,
                blocked: torch.Tensor | None = None) -> StreamView:
    """The view of queries at ``query_positions`` (B, Tq) of a segment of T tokens with K keys;
    ``different_segment`` and ``blocked`` are per position (B, T, K), and each query takes the
    row of its position (the content stream: every position; the query stream: its targets)."""

    def rows(mask):
        if mask is None:
            return None
        return mask.gather(1, query_positions[..., None].expand(-1, -1, mask.shape[-1]))

    return StreamView(relative_index(query_positions, T, K), rows(different_segment), rows(blocked))


class RelativeAttention(nn.Module):
    """Multi-head attention whose scores add three terms (Transformer-XL, XLNet):

        score(i, j) = [ (q_i + u)·k_j            content: what j holds
                      + (q_i + v)·r_{i-j}        position: how far j is from i
                      + (q_i + s)·e_{same(i,j)}  segment: same segment as i or not ] / √D

    with u, v, s learned biases per head (``content_bias``, ``position_bias``,
    ``segment_bias``). The content term goes through the fused
    ``scaled_dot_product_attention``; the other two enter it as an additive bias.
    One module serves both streams: only the queries differ.
    """

    def __init__(self, config: XLNetConfig):
        super().__init__()
        C, H = config.d_model, config.n_head
        self.n_head, self.d_head = H, C // H
        self.query = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.position = nn.Linear(C, C, bias=False)  # projects the distance encodings r
        self.out = nn.Linear(C, C, bias=False)
        self.content_bias = nn.Parameter(torch.zeros(H, self.d_head))  # u
        self.position_bias = nn.Parameter(torch.zeros(H, self.d_head))  # v
        self.segment_bias = nn.Parameter(torch.zeros(H, self.d_head))  # s
        self.segment_embed = nn.Parameter(torch.zeros(2, H, self.d_head))  # e_same, e_different
        self.norm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.p_dropout = config.dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, H, T, D)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.d_head).transpose(1, 2)

    def attend(self, x: torch.Tensor, view: StreamView, keys: torch.Tensor,
               values: torch.Tensor, position_keys: torch.Tensor):
        """One stream's attention and its residual sub-layer.

        x: (B, Tq, C) the stream's input; view: where its queries sit and what they may see;
        keys, values: (B, H, K, D); position_keys: (H, P, D).
        Returns LayerNorm(x + attention output): (B, Tq, C).
        """
        q = self.heads(self.query(x))  # (B, H, Tq, D)
        B, H, Tq, D = q.shape
        K = keys.shape[2]
        # position term: score against every distance, then pick each (query, key)'s distance
        by_distance = torch.einsum("bhid,hpd->bhip", q + self.position_bias[:, None], position_keys)
        bias = by_distance.gather(-1, view.distance_rows.expand(B, H, Tq, K))  # (B, H, Tq, K)
        if view.different_segment is not None:
            # the segment term: (q + s)·e_same or (q + s)·e_different
            by_segment = torch.einsum("bhid,shd->bhis", q + self.segment_bias[:, None],
                                      self.segment_embed)  # (B, H, Tq, 2)
            bias = bias + torch.where(view.different_segment[:, None], by_segment[..., 1:],
                                      by_segment[..., :1])
        bias = bias / math.sqrt(D)  # the fused kernel scales only the content term
        if view.blocked is not None:
            bias = bias.masked_fill(view.blocked[:, None], blocked_score(bias.dtype))
        y = F.scaled_dot_product_attention(
            q + self.content_bias[:, None], keys, values, attn_mask=bias,
            dropout_p=self.p_dropout if self.training else 0.0)  # (B, H, Tq, D)
        y = y.transpose(1, 2).reshape(B, Tq, H * D)
        return self.norm(x + self.dropout(self.out(y)))


class XLNetLayer(nn.Module):
    """Relative attention then a feed-forward network, post-LN like BERT, applied to the
    content stream and (when there are targets) to the query stream with the same weights."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.attn = RelativeAttention(config)
        self.ff = FeedForward(config.d_model, config.d_ff, "gelu", config.dropout)
        self.ff_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff_norm(x + self.ff(x))

    def forward(self, h, g, memory, encodings, content_view: StreamView,
                query_view: StreamView | None):
        """h: (B, T, C) content stream; g: (B, N, C) query stream or None; memory: (B, M, C) or
        None; encodings: (P, C). Returns the new (h, g)."""
        context = h if memory is None else torch.cat([memory, h], dim=1)  # (B, K, C)
        keys = self.attn.heads(self.attn.key(context))  # (B, H, K, D), shared by both streams
        values = self.attn.heads(self.attn.value(context))
        position_keys = self.attn.position(encodings).view(-1, self.attn.n_head, self.attn.d_head)
        position_keys = position_keys.transpose(0, 1)  # (H, P, D)
        new_h = self.attn.attend(h, content_view, keys, values, position_keys)
        new_g = None
        if g is not None:
            new_g = self.feed_forward(self.attn.attend(g, query_view, keys, values, position_keys))
        return self.feed_forward(new_h), new_g


# --- The model ---------------------------------------------------------------------------------

@dataclass
class XLNetOutput(ModelOutput):
    """``ModelOutput`` with XLNet's memory. ``last_hidden_state`` is the query stream at the
    targets (B, N, C) given a target_mapping, else the content stream (B, T, C)."""

    mems: list[torch.Tensor] | None = None  # n_layer tensors (B, min(mem_len, M + T), C)


class XLNet(nn.Module):
    """The encoder: word embeddings, n_layer two-stream layers, memory in and out."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.word_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.mask_emb = nn.Parameter(torch.zeros(config.d_model))  # where every query stream starts
        self.layers = nn.ModuleList(XLNetLayer(config) for _ in range(config.n_layer))
        self.dropout = nn.Dropout(config.dropout)
        self.apply(_init_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, perm_mask=None,
                target_mapping=None, mems=None, all_layers: bool = False) -> XLNetOutput:
        """input_ids, token_type_ids, attention_mask: (B, T); perm_mask: (B, T, T);
        target_mapping: (B, N, T), one 1 per row; mems: n_layer tensors (B, M, C).
        -> ``last_hidden_state`` and ``mems`` (None when ``mem_len`` is 0). With
        ``all_layers=True`` (and no target_mapping), also ``hidden_states``: the content
        stream's input and every layer's output, n_layer + 1 tensors (B, T, C)."""
        self._check(input_ids, token_type_ids, attention_mask, perm_mask, target_mapping, mems)
        if all_layers and target_mapping is not None:
            raise ValueError("all_layers gives the content stream's layers: leave target_mapping "
                             "out (the query stream exists only at the targets).")
        B, T = input_ids.shape
        M = mems[0].shape[1] if mems else 0
        blocked_h, blocked_g = attention_masks(B, T, M, attention_mask, perm_mask)
        different_segment = None
        if token_type_ids is not None:
            # memory counts as segment 0, as in the reference
            key_segments = F.pad(token_type_ids, (M, 0), value=0)  # (B, K)
            different_segment = token_type_ids[:, :, None] != key_segments[:, None, :]  # (B, T, K)

        positions = torch.arange(T, device=input_ids.device).expand(B, T)
        content_view = stream_view(positions, T, M + T, different_segment, blocked_h)
        h = self.dropout(self.word_embedding(input_ids))  # (B, T, C)
        g, query_view = None, None
        if target_mapping is not None:
            # each query sits at its target's position: its distances, segment and mask row
            query_view = stream_view(target_mapping.argmax(dim=-1), T, M + T, different_segment,
                                     blocked_g)
            g = self.dropout(self.mask_emb.expand(B, target_mapping.shape[1], -1))  # (B, N, C)
        encodings = self.dropout(relative_encodings(T, M, self.config.d_model,
                                                    self.config.clamp_len, h.device))
        new_mems = [] if self.config.mem_len > 0 else None
        layers = [h]
        for i, layer in enumerate(self.layers):
            memory = mems[i] if mems else None
            if new_mems is not None:
                # what this layer sees of the past next time: its input, the newest mem_len
                kept = h if memory is None else torch.cat([memory, h], dim=1)
                new_mems.append(kept[:, -self.config.mem_len:].detach())
            h, g = layer(h, g, memory, encodings, content_view, query_view)
            layers.append(h)
        out = XLNetOutput(last_hidden_state=self.dropout(g if g is not None else h), mems=new_mems)
        if all_layers:  # the top layer as last_hidden_state: one dropout, not two draws
            out.hidden_states = layers[:-1] + [out.last_hidden_state]
        return out

    def _check(self, input_ids, token_type_ids, attention_mask, perm_mask, target_mapping, mems):
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, time), got {tuple(input_ids.shape)}.")
        check_ids(input_ids, self.config.vocab_size, "token ids")
        B, T = input_ids.shape
        for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
            if t is not None and t.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, but input_ids has "
                                 f"{tuple(input_ids.shape)}; they must match.")
        if perm_mask is not None and tuple(perm_mask.shape) != (B, T, T):
            raise ValueError(f"perm_mask must be (batch, time, time) = {(B, T, T)}, got "
                             f"{tuple(perm_mask.shape)}.")
        if target_mapping is not None:
            if target_mapping.dim() != 3 or target_mapping.shape[0] != B or \
                    target_mapping.shape[2] != T:
                raise ValueError(f"target_mapping must be (batch, targets, time) = ({B}, N, {T}),"
                                 f" got {tuple(target_mapping.shape)}.")
            one_hot = ((target_mapping == 0) | (target_mapping == 1)).all() and \
                (target_mapping.sum(dim=-1) == 1).all()
            if not one_hot:
                raise ValueError("each row of target_mapping must hold a single 1 (the position "
                                 "of that prediction) and 0 elsewhere.")
        if mems:
            if len(mems) != self.config.n_layer:
                raise ValueError(f"mems holds {len(mems)} layers; this model has "
                                 f"{self.config.n_layer}.")
            for m in mems:
                if m.dim() != 3 or m.shape[0] != B or m.shape[2] != self.config.d_model:
                    raise ValueError(
                        f"a memory of shape {tuple(m.shape)} does not fit: this model needs "
                        f"(batch={B}, memory length, width={self.config.d_model}); was it made by "
                        "a model of another width, or for another batch size?")

    @classmethod
    def from_huggingface(cls, hf_model) -> XLNet:
        """Our encoder with the weights of a ``transformers.XLNetModel`` (any supported config)."""
        model = cls(config_from_huggingface(hf_model.config))
        model.load_state_dict(_encoder_state(hf_model.state_dict(), "", model.config))
        return model


def attention_masks(B: int, T: int, M: int, attention_mask=None, perm_mask=None):
    """The boolean masks (B, T, K), True = blocked, of the content stream and the query stream.

    A key is blocked if ``perm_mask`` says so or it is padding; memory is never blocked. The query
    stream uses exactly that; the content stream may also always see its own token (that is the
    one difference between the streams' masks). Both are None when nothing is blocked.
    """
    blocked = perm_mask.bool() if perm_mask is not None else None
    if attention_mask is not None:
        padding = (attention_mask == 0)[:, None, :]  # (B, 1, T): nobody attends to padding
        blocked = padding if blocked is None else blocked | padding
    if blocked is None:
        return None, None
    blocked = F.pad(blocked.expand(B, T, T), (M, 0), value=False)  # (B, T, K)
    itself = F.pad(torch.eye(T, dtype=torch.bool, device=blocked.device), (M, 0), value=False)
    return blocked & ~itself, blocked


class XLNetLM(nn.Module):
    """XLNet with its language-modelling head, whose weights are the word embeddings (tied)."""

    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.xlnet = XLNet(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.lm_head.weight = self.xlnet.word_embedding.weight  # tied
        nn.init.zeros_(self.lm_head.bias)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, perm_mask=None,
                target_mapping=None, mems=None, labels=None) -> XLNetOutput:
        """As ``XLNet.forward``, with ``logits`` (B, N, V) at the targets, else (B, T, V); and
        with ``labels`` (B, N) with targets, else (B, T), the ``loss``: the mean cross-entropy
        over labels that are not IGNORE_INDEX."""
        out = self.xlnet(input_ids, token_type_ids, attention_mask, perm_mask, target_mapping,
                         mems)
        logits = out.logits = self.lm_head(out.last_hidden_state)  # (B, N or T, V)
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels {tuple(labels.shape)} must be {tuple(logits.shape[:2])}"
                                 " (one per target, or one per token without target_mapping).")
            check_targets(labels, self.config.vocab_size, "labels",
                          hint="check the labels of the targets (permutation_batch builds them)")
            # the loss in float32 even under autocast, as GPT's: a sum of many float16 terms
            # loses precision
            out.loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                       ignore_index=IGNORE_INDEX)
        return out

    @classmethod
    def from_huggingface(cls, hf_model) -> XLNetLM:
        """Ours with the weights of a ``transformers.XLNetLMHeadModel`` (no download needed)."""
        model = cls(config_from_huggingface(hf_model.config))
        hf = hf_model.state_dict()
        state = _encoder_state(hf, "transformer.", model.config, into="xlnet.")
        state["lm_head.weight"] = hf["lm_loss.weight"]
        state["lm_head.bias"] = hf["lm_loss.bias"]
        model.load_state_dict(state)
        return model


# --- Heads for fine-tuning ---------------------------------------------------------------------

class XLNetForSequenceClassification(nn.Module):
    """Sentence classes from the **last** position, where XLNet puts ``<cls>``: the reference's
    "sequence summary" (a dense layer and tanh), dropout, then a linear layer to the classes.
    Because the last position is read, batches are padded on the left."""

    def __init__(self, config: XLNetConfig, num_labels: int):
        super().__init__()
        self.xlnet = XLNet(config)
        self.summary = nn.Linear(config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, num_labels)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                mems=None) -> XLNetOutput:
        """(B, T) -> ``logits`` (B, num_labels), with the encoder's outputs."""
        if attention_mask is not None and (attention_mask[:, -1] == 0).any():
            raise ValueError("the last position is padding, but XLNet classifies from the last "
                             "position: pad on the left (pad_batch(..., side='left')).")
        out = self.xlnet(input_ids, token_type_ids, attention_mask, mems=mems)
        summary = torch.tanh(self.summary(out.last_hidden_state[:, -1]))  # (B, C)
        out.logits = self.classifier(self.dropout(summary))
        return out

    @classmethod
    def from_huggingface(cls, hf_model) -> XLNetForSequenceClassification:
        """Ours from a ``transformers.XLNetForSequenceClassification`` (summary type "last",
        with its projection and tanh: the reference's defaults)."""
        c = hf_model.config
        if (c.summary_type, c.summary_use_proj, c.summary_activation) != ("last", True, "tanh"):
            raise ValueError("only the default summary (last token, projection, tanh) is built.")
        return _with_head(cls(config_from_huggingface(c), c.num_labels), hf_model.state_dict(),
                          {"summary": "sequence_summary.summary", "classifier": "logits_proj"})


class XLNetForTokenClassification(nn.Module):
    """A class for every token: a linear layer on the content stream, (B, T) -> (B, T, labels)."""

    def __init__(self, config: XLNetConfig, num_labels: int):
        super().__init__()
        self.xlnet = XLNet(config)
        self.classifier = nn.Linear(config.d_model, num_labels)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None,
                mems=None) -> XLNetOutput:
        """(B, T) -> ``logits`` (B, T, num_labels), with the encoder's outputs."""
        out = self.xlnet(input_ids, token_type_ids, attention_mask, mems=mems)
        out.logits = self.classifier(out.last_hidden_state)
        return out

    @classmethod
    def from_huggingface(cls, hf_model) -> XLNetForTokenClassification:
        """Ours from a ``transformers.XLNetForTokenClassification``."""
        c = hf_model.config
        return _with_head(cls(config_from_huggingface(c), c.num_labels), hf_model.state_dict(),
                          {"classifier": "classifier"})


def _with_head(model: nn.Module, hf: dict, layers: dict[str, str]) -> nn.Module:
    """Load the reference's encoder (under "transformer.") and the named linear layers."""
    state = _encoder_state(hf, "transformer.", model.xlnet.config, into="xlnet.")
    for ours, theirs in layers.items():
        for p in ("weight", "bias"):
            state[f"{ours}.{p}"] = hf[f"{theirs}.{p}"]
    model.load_state_dict(state)
    return model


def load_encoder(task_model: nn.Module, pretrained: XLNetLM) -> nn.Module:
    """Copy a pretrained ``XLNetLM``'s encoder into a task model (its head stays as built)."""
    task_model.xlnet.load_state_dict(pretrained.xlnet.state_dict())
    return task_model


# --- The permutation language-modelling objective ----------------------------------------------

def perm_mask_from_order(order: torch.Tensor, num_predict: int) -> torch.Tensor:
    """The ``perm_mask`` (T, T) of a factorization order whose last ``num_predict`` steps are
    predicted (partial prediction); 1 where token i may not attend to token j.

    ``order``: (T,) the positions in the order they are factorized. The first T - num_predict
    are context: as in the paper's implementation they see each other (all of them, whatever
    their order) and every token sees them. A target sees the context and the targets before it
    in the order, never itself (its query stream must not see its own token; the content
    stream gets its own token back in ``attention_masks``) and never a later one.
    """
    return perm_masks_from_orders(order[None], num_predict)[0]


def perm_masks_from_orders(orders: torch.Tensor, num_predict: int) -> torch.Tensor:
    """``perm_mask_from_order`` for a batch of orders (B, T), one per row: (B, T, T)."""
    B, T = orders.shape
    if not torch.equal(orders.sort(dim=1).values, torch.arange(T).expand(B, T)):
        bad = next(row for row in orders if sorted(row.tolist()) != list(range(T)))
        raise ValueError(f"order must hold each position 0..{T - 1} once, got {bad.tolist()}.")
    if not 0 < num_predict <= T:
        raise ValueError(f"num_predict must be between 1 and T = {T}, got {num_predict}.")
    return _perm_masks(orders, num_predict)


def _perm_masks(orders: torch.Tensor, num_predict: int) -> torch.Tensor:
    """``perm_masks_from_orders`` without checking that each row is a permutation."""
    B, T = orders.shape
    targets = orders[:, T - num_predict:]  # (B, N): the predicted positions, in order
    steps = torch.arange(num_predict, dtype=torch.int32).expand(B, num_predict)
    # rank: the step at which each position is predicted; all context shares step -1
    rank = torch.full((B, T), -1, dtype=torch.int32).scatter(1, targets, steps)  # (B, T)
    # i may not see j when j is a target not before i: own_rank[i] <= rank[j], where a target's
    # own rank is its step and the context's is 0 (it sees no target). A context j (rank -1)
    # is seen by everybody. Written straight into a float tensor: this runs for every batch.
    own_rank = rank.clamp(min=0)
    perm_mask = torch.empty(B, T, T)
    return torch.le(own_rank[:, :, None], rank[:, None, :], out=perm_mask)


def factorization_order(T: int, num_predict: int, generator: torch.Generator,
                        max_span: int = 1) -> torch.Tensor:
    """Sample a factorization order (T,) whose last ``num_predict`` positions are the targets.

    ``num_predict`` tokens are targets (partial prediction: the paper predicts the last 1/K of
    the order, K = 6 or 7). With ``max_span`` > 1 the targets come in spans of 1..max_span
    consecutive tokens, as in the paper's implementation; otherwise any tokens.
    """
    if not 0 < num_predict < T:
        raise ValueError(f"num_predict must be between 1 and T - 1 = {T - 1}, got {num_predict}: "
                         "at least one token must be context (see blocked_score).")
    order = torch.randperm(T, generator=generator)
    if max_span > 1:  # choose the targets as spans, then put them last, in a random order
        is_target = torch.zeros(T, dtype=torch.bool)
        while is_target.sum() < num_predict:
            length = int(torch.randint(1, max_span + 1, (1,), generator=generator))
            start = int(torch.randint(0, T, (1,), generator=generator))
            for t in range(start, min(T, start + length)):
                if is_target.sum() < num_predict:
                    is_target[t] = True
        order = torch.cat([order[~is_target[order]], order[is_target[order]]])
    return order


def permutation_masks(T: int, num_predict: int, generator: torch.Generator, max_span: int = 1):
    """Sample a factorization order (``factorization_order``) and build its mask
    (``perm_mask_from_order``). Returns ``perm_mask`` (T, T) and the target positions
    (num_predict,) in the order of prediction."""
    order = factorization_order(T, num_predict, generator, max_span)
    return perm_mask_from_order(order, num_predict), order[T - num_predict:]


def permutation_batch(input_ids: torch.Tensor, num_predict: int, generator: torch.Generator,
                      max_span: int = 1):
    """(B, T) token ids -> perm_mask (B, T, T), target_mapping (B, N, T), labels (B, N): one
    order per sequence, ``num_predict`` = N targets each, labels = the targets' token ids.

    Only the orders are drawn row by row (one ``randperm`` each, the same draws as
    ``permutation_masks``); the masks, mappings and labels are built for the whole batch at
    once, so that building a batch does not keep a GPU waiting.
    """
    B, T = input_ids.shape
    orders = torch.stack([factorization_order(T, num_predict, generator, max_span)
                          for _ in range(B)])  # (B, T): permutations, by construction
    targets = orders[:, T - num_predict:]  # (B, N)
    target_mapping = torch.zeros(B, num_predict, T).scatter_(2, targets[..., None], 1.0)
    return _perm_masks(orders, num_predict), target_mapping, input_ids.gather(1, targets)


# --- Pretraining on a token stream (chapter 6) --------------------------------------------------


def pretraining_batch(token_ids: torch.Tensor, size: int, seg_len: int, num_predict: int,
                      generator: torch.Generator):
    """``size`` windows of two consecutive segments of ``seg_len`` tokens from the stream
    ``token_ids`` (N,), each segment with its own factorization order: a list of two
    (input_ids (B, S), perm_mask (B, S, S), target_mapping (B, P, S), labels (B, P)), P =
    ``num_predict``. The second segment is read with the first as memory."""
    windows, _ = lm_windows(token_ids, size, 2 * seg_len, generator)  # (B, 2S)
    return [(segment, *permutation_batch(segment, num_predict, generator))
            for segment in windows.split(seg_len, dim=1)]


def pretraining_loss(model: XLNetLM, batch) -> torch.Tensor:
    """The permutation-LM loss of a ``pretraining_batch``: the mean over its segments, each
    segment seeing the one before it as memory."""
    device = device_of(model)
    mems, losses = None, []
    for ids, perm_mask, target_mapping, labels in batch:
        out = model(ids.to(device), perm_mask=perm_mask.to(device),
                    target_mapping=target_mapping.to(device), labels=labels.to(device),
                    mems=mems)
        mems = out.mems
        losses.append(out.loss)
    return sum(losses) / len(losses)


def validation_batches(token_ids: torch.Tensor, windows: int, seg_len: int, num_predict: int,
                       per_batch: int = 16, seed: int = 0) -> list:
    """Fixed validation ``pretraining_batch``es: ``windows // per_batch`` batches of
    ``per_batch`` windows (at least one), with their orders, drawn once with ``seed`` so that
    every evaluation scores the same predictions."""
    generator = torch.Generator().manual_seed(seed)
    stream = token_ids[: len(token_ids) // (2 * seg_len) * 2 * seg_len]
    return [pretraining_batch(stream, per_batch, seg_len, num_predict, generator)
            for _ in range(max(1, windows // per_batch))]


@torch.no_grad()
def evaluate_pretraining(model: XLNetLM, batches: list) -> dict[str, float]:
    """The mean permutation-LM loss over fixed ``validation_batches``; the model is put back in
    training mode."""
    model.eval()
    loss = sum(pretraining_loss(model, batch).item() for batch in batches) / len(batches)
    model.train()
    return {"valid_loss": loss}


# --- Loading the reference's weights -----------------------------------------------------------

def config_from_huggingface(hf_config) -> XLNetConfig:
    """Our config from a ``transformers.XLNetConfig``; options we do not build are an error."""
    unsupported = {
        "attn_type": (hf_config.attn_type, "bi"),
        "bi_data": (hf_config.bi_data, False),
        "ff_activation": (hf_config.ff_activation, "gelu"),
        "reuse_len": (hf_config.reuse_len or 0, 0),
        "d_head": (hf_config.d_head, hf_config.d_model // hf_config.n_head),
    }
    for name, (value, ours) in unsupported.items():
        if value != ours:
            raise ValueError(f"{name}={value!r} is not built here (we build {name}={ours!r}).")
    return XLNetConfig(
        vocab_size=hf_config.vocab_size, n_layer=hf_config.n_layer, n_head=hf_config.n_head,
        d_model=hf_config.d_model, d_ff=hf_config.d_inner, dropout=hf_config.dropout,
        layer_norm_eps=hf_config.layer_norm_eps, mem_len=hf_config.mem_len or 0,
        clamp_len=hf_config.clamp_len,
    )


def _encoder_state(hf: dict, prefix: str, config: XLNetConfig, into: str = "") -> dict:
    """Rename (and reshape) the reference's encoder weights into ours.

    The reference stores each projection as a (C, H, D) tensor used as ``einsum("ibh,hnd")``;
    ours are ``nn.Linear`` layers, whose weight is (out, in): queries, keys, values and
    positions are the reference's tensor flattened to (C, C) and transposed; the output
    projection (H * D -> C) is flattened only.
    """
    C = config.d_model
    state = {f"{into}word_embedding.weight": hf[f"{prefix}word_embedding.weight"],
             f"{into}mask_emb": hf[f"{prefix}mask_emb"].reshape(C)}
    for i in range(config.n_layer):
        src, dst = f"{prefix}layer.{i}.", f"{into}layers.{i}."
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("position", "r")):
            state[f"{dst}attn.{ours}.weight"] = hf[f"{src}rel_attn.{theirs}"].reshape(C, C).T
        state[f"{dst}attn.out.weight"] = hf[f"{src}rel_attn.o"].reshape(C, C)
        for ours, theirs in (("content_bias", "r_w_bias"), ("position_bias", "r_r_bias"),
                             ("segment_bias", "r_s_bias"), ("segment_embed", "seg_embed")):
            state[f"{dst}attn.{ours}"] = hf[f"{src}rel_attn.{theirs}"]
        for ours, theirs in (("attn.norm", "rel_attn.layer_norm"), ("ff.fc", "ff.layer_1"),
                             ("ff.proj", "ff.layer_2"), ("ff_norm", "ff.layer_norm")):
            for p in ("weight", "bias"):
                state[f"{dst}{ours}.{p}"] = hf[f"{src}{theirs}.{p}"]
    return state


def _init_weights(module: nn.Module) -> None:
    """The reference's initialisation: normal(0, 0.02) for matrices, embeddings and the
    attention biases, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, RelativeAttention):
        for p in (module.content_bias, module.position_bias, module.segment_bias,
                  module.segment_embed):
            nn.init.normal_(p, std=0.02)
    elif isinstance(module, XLNet):
        nn.init.normal_(module.mask_emb, std=0.02)
