"""GPT: a decoder-only Transformer language model, the GPT-2 architecture in one file.

Radford et al. (2018) introduced GPT: pretrain a Transformer as a left-to-right language
model, then fine-tune it. GPT-2 (Radford et al., 2019) moved layer normalisation to the input
of each sub-block (pre-LN) and added one after the last block. This file follows GPT-2 so that
its weights can be copied to and from Hugging Face's ``GPT2LMHeadModel``:

    tokens ─► token embedding + learned position embedding ─► dropout
           ─► n_layer × [ x + attn(ln_1(x)) ;  x + mlp(ln_2(x)) ]
           ─► ln_f ─► logits = h @ token_embedding.T        (input and output embeddings tied)

    out = model(input_ids, targets=targets)   # out.logits (B, T, V), out.loss
    out.loss.backward()

Shapes: B = batch, T = time (tokens), C = n_embd (width), H = n_head, D = C // H, V = vocab.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctxlib.batches import IGNORE_INDEX, check_targets, lm_windows
from ctxlib.layers import ModelOutput
from ctxlib.runtime import device_of

# The key/value cache of one layer: keys and values of every position seen so far, (B, H, T, D).
LayerCache = tuple[torch.Tensor, torch.Tensor]


@dataclass
class GPTOutput(ModelOutput):
    """``logits``, ``loss``, ``last_hidden_state``, ``hidden_states`` (see ``ModelOutput``), and
    the key/value cache when asked for one."""

    past: list[LayerCache] | None = None  # with use_cache=True: pass back as past=out.past


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024  # the context length: the number of learned positions
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as in GPT-2
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t only."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        """x: (B, T, C); past: keys and values of earlier positions, each (B, H, T_past, D).

        Returns the output (B, T, C) and the keys and values of all positions (B, H, T_past+T, D).
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # each (B, T, C)
        # (B, T, C) -> (B, H, T, D): each head attends on its own D-dimensional slice.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, T_past + T, D)
            v = torch.cat([past[1], v], dim=2)
        T_past = k.size(2) - T
        dropout = self.dropout if self.training else 0.0
        if T_past == 0:
            # The fused kernel builds the causal mask itself (FlashAttention on a GPU).
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            # New queries sit at positions T_past .. T_past+T-1: query i sees keys <= T_past + i.
            # (With one new token, T == 1, it sees every key and the mask is all True.)
            allowed = torch.ones(T, T_past + T, dtype=torch.bool, device=x.device).tril(T_past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C -> GELU (tanh approximation) -> C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """A pre-LN Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, past: LayerCache | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        attended, present = self.attn(self.ln_1(x), past)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, present


def _within(ids: torch.Tensor, size: int) -> bool:
    """Whether every id lies in [0, size): one pass over the ids, for a check on every batch."""
    low, high = torch.aminmax(ids)
    return bool(0 <= low and high < size)


class GPT(nn.Module):
    """The GPT-2 language model. ``model(input_ids).logits`` is (B, T, V)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings (V, C)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embeddings
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2 scales the projections that write into the residual stream by 1/sqrt(2 L),
        # so that the stream's variance does not grow with depth.
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, exclude_positions: bool = False) -> int:
        """Parameters counted once (the tied output matrix is the input embedding)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if exclude_positions else n

    def _check_input(self, input_ids: torch.Tensor, past_length: int) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else input_ids
            raise ValueError(f"input_ids must be a (batch, time) tensor of token ids, got {got}.")
        if input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}.")
        T = past_length + input_ids.size(1)
        if T > self.config.block_size:
            raise ValueError(
                f"sequence of {T} tokens is longer than the context of {self.config.block_size}; "
                "crop it to the last block_size tokens (generate() does this for you)."
            )
        if input_ids.numel() and not _within(input_ids, self.config.vocab_size):
            bad = input_ids[(input_ids < 0) | (input_ids >= self.config.vocab_size)][0].item()
            raise ValueError(
                f"token id {bad} is outside the vocabulary [0, {self.config.vocab_size}); "
                "was the text encoded with the tokenizer this model was trained with?"
            )

    def _body(
        self, input_ids: torch.Tensor, past: list[LayerCache] | None = None,
    ) -> tuple[list[torch.Tensor], list[LayerCache]]:
        """The embeddings' output and every block's, n_layer + 1 tensors (B, T, C), the last one
        after ``ln_f``; and the new key/value cache, one ``(keys, values)`` pair per layer."""
        past_length = past[0][0].size(2) if past else 0
        self._check_input(input_ids, past_length)
        T = input_ids.size(1)
        positions = torch.arange(past_length, past_length + T, device=input_ids.device)  # (T,)
        x = self.drop(self.wte(input_ids) + self.wpe(positions))  # (B, T, C)
        layers, presents = [x], []
        for i, block in enumerate(self.h):
            x, present = block(x, past[i] if past else None)
            layers.append(x)
            presents.append(present)
        layers[-1] = self.ln_f(x)
        return layers, presents

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        past: list[LayerCache] | None = None,
        use_cache: bool = False,
        all_layers: bool = False,
    ) -> GPTOutput:
        """input_ids: (B, T) token ids; targets: (B, T) next-token ids (-100 = ignore).

        Returns a ``GPTOutput``: ``logits`` (B, T, V) and ``last_hidden_state`` (B, T, C), after
        ``ln_f``; ``loss`` with ``targets``; with ``use_cache=True``, ``past``, the new
        key/value cache (one ``(keys, values)`` pair per layer, to pass back as ``past`` for the
        next tokens); with ``all_layers=True``, ``hidden_states``, the embeddings' output and
        every block's, n_layer + 1 tensors (B, T, C) (as Hugging Face's
        ``output_hidden_states``).
        """
        if targets is not None:  # checked first: a bad target should not cost a forward pass
            if targets.shape != input_ids.shape:
                raise ValueError(
                    f"targets {tuple(targets.shape)} must have the shape of input_ids "
                    f"{tuple(input_ids.shape)} (targets[b, t] is the token after input_ids[b, t])."
                )
            check_targets(targets, self.config.vocab_size, "next-token targets",
                          hint="give at least one token with a target, and check the masking")
        layers, presents = self._body(input_ids, past)
        hidden = layers[-1]  # (B, T, C)
        out = GPTOutput(logits=self.lm_head(hidden), last_hidden_state=hidden)  # logits (B, T, V)
        if targets is not None:
            out.loss = F.cross_entropy(out.logits.flatten(0, 1).float(), targets.flatten(),
                                       ignore_index=IGNORE_INDEX)
        if use_cache:
            out.past = presents
        if all_layers:
            out.hidden_states = layers
        return out

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue each sequence of ``input_ids`` (B, T) by ``max_new_tokens`` tokens.

        ``temperature=0`` is greedy decoding (always the most likely token). Otherwise tokens are
        sampled from softmax(logits / temperature), restricted to the ``top_k`` most likely
        tokens and/or to the smallest set whose probability reaches ``top_p`` (nucleus sampling).
        With ``use_cache`` each step feeds only the newest token and reuses the keys and values
        of the earlier ones. Once the sequence fills the context, the window slides: the cache
        is dropped and the last ``block_size`` tokens are re-read. Returns (B, T + max_new_tokens).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
        if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and input_ids.size(1) == 0:
            raise ValueError("the prompt is empty (input_ids of shape (B, 0)): generation continues "
                             "a text, so give it at least one token (e.g. an end-of-text token).")
        was_training = self.training
        self.eval()
        try:
            # The prompt goes to the model's device; the tokens come back to the prompt's.
            tokens = self._generate(input_ids.to(device_of(self)), max_new_tokens, temperature,
                                    top_k, top_p, use_cache, generator)
            return tokens.to(input_ids.device)
        finally:
            # Even when sampling fails midway (a bad top_k, an id outside the vocabulary), the
            # model goes back to the mode it was in: a training loop must not go on without
            # dropout just because a sample failed.
            self.train(was_training)

    def _generate(self, input_ids, max_new_tokens, temperature, top_k, top_p, use_cache,
                  generator) -> torch.Tensor:
        """The loop of ``generate``, which sets (and restores) eval mode around it."""
        block_size = self.config.block_size
        sequence = input_ids[:, -block_size:] if input_ids.size(1) > block_size else input_ids
        tokens = [input_ids]
        cache = None
        feed = sequence
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and cache[0][0].size(2) >= block_size:
                cache = None  # the context is full: slide the window without a cache
                feed = sequence[:, -block_size:]
            if use_cache:
                out = self(feed, past=cache, use_cache=True)
                logits, cache = out.logits, out.past
            else:
                logits = self(sequence[:, -block_size:]).logits
            next_token = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
            tokens.append(next_token)
            sequence = torch.cat([sequence, next_token], dim=1)
            feed = next_token
        return torch.cat(tokens, dim=1)

    # --- Weights from and to Hugging Face ------------------------------------------------------

    @classmethod
    def from_huggingface(cls, hf_model) -> GPT:
        """Our model with the weights of a ``transformers.GPT2LMHeadModel`` (any config).

        Hugging Face's GPT-2 stores its linear layers as ``Conv1D`` with the weight transposed
        (in_features, out_features): we transpose them into ``nn.Linear``'s (out, in).
        """
        hf_config = hf_model.config
        if hf_config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(
                f"activation {hf_config.activation_function!r} is not GPT-2's tanh GELU."
            )
        if getattr(hf_config, "n_inner", None) not in (None, 4 * hf_config.n_embd):
            raise ValueError("only the standard MLP width of 4 * n_embd is supported.")
        config = GPTConfig(**{ours: getattr(hf_config, theirs)
                              for ours, theirs in _HF_CONFIG_NAMES.items()},
                           dropout=hf_config.resid_pdrop, bias=True)
        model = cls(config)
        model.load_state_dict(_from_hf_state(hf_model.state_dict()))
        return model

    def to_huggingface(self):
        """A ``transformers.GPT2LMHeadModel`` with this model's weights."""
        from transformers import GPT2Config, GPT2LMHeadModel

        c = self.config
        if not c.bias:
            raise ValueError("GPT2LMHeadModel always has biases; this model was built without.")
        hf_config = GPT2Config(**{theirs: getattr(c, ours)
                                  for ours, theirs in _HF_CONFIG_NAMES.items()},
                               resid_pdrop=c.dropout, embd_pdrop=c.dropout,
                               attn_pdrop=c.dropout, activation_function="gelu_new")
        hf_model = GPT2LMHeadModel(hf_config)
        hf_model.load_state_dict(_to_hf_state(self.state_dict()))
        return hf_model.eval()

    @classmethod
    def from_pretrained(cls, name: str = "gpt2") -> GPT:
        """Published GPT-2 weights by name ("gpt2", "gpt2-medium", ...): downloads (online only)."""
        from transformers import GPT2LMHeadModel

        return cls.from_huggingface(GPT2LMHeadModel.from_pretrained(name))


# --- Training and evaluating the language model -------------------------------------------


def lm_loss(model: GPT, batch) -> torch.Tensor:
    """The next-token loss of a batch ``(x, y)`` of ``lm_windows`` (each (B, T)), moved to the
    model's device: nats per token."""
    x, y = (t.to(device_of(model)) for t in batch)
    return model(x, targets=y).loss


def validation_windows(token_ids: torch.Tensor, windows: int, block_size: int,
                       per_batch: int = 16, seed: int = 1234) -> list:
    """Fixed validation batches: ``windows // per_batch`` batches of ``per_batch`` random
    ``lm_windows`` of the stream (N,), drawn once with ``seed`` so that every evaluation
    scores the same tokens."""
    generator = torch.Generator().manual_seed(seed)
    return [lm_windows(token_ids, per_batch, block_size, generator)
            for _ in range(windows // per_batch)]


@torch.no_grad()
def evaluate_lm(model: GPT, batches: list) -> dict[str, float]:
    """``valid_loss``: the mean ``lm_loss`` over fixed ``validation_windows`` (dropout off);
    the model is put back in the mode it was in."""
    was_training = model.training
    model.eval()
    loss = sum(lm_loss(model, batch).item() for batch in batches) / len(batches)
    model.train(was_training)
    return {"valid_loss": loss}


@dataclass
class GPTClassifierOutput(ModelOutput):
    """The class ``logits`` and, with labels, the ``loss``; and the LM's logits."""

    lm_logits: torch.Tensor | None = None  # (B, T, V), for the auxiliary language-model loss


class GPTForClassification(nn.Module):
    """GPT-1's recipe for classification: a linear head on the hidden state of the last token.

    Radford et al. (2018) append an end token to each input, classify from its final hidden
    state (it has seen the whole text, by causality), and keep the language-modelling loss as
    an auxiliary objective while fine-tuning: loss = classification + ``lm_weight`` * LM.
    """

    def __init__(self, gpt: GPT, n_classes: int, dropout: float = 0.1):
        super().__init__()
        self.gpt = gpt
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        self.config = gpt.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None, lm_weight: float = 0.5) -> GPTClassifierOutput:
        """input_ids, attention_mask: (B, T), right-padded (1 = real token); labels: (B,) class
        ids (-100 = ignore).

        Returns the class ``logits`` (B, n_classes) and the ``lm_logits`` (B, T, V) for the
        auxiliary loss; with ``labels``, the ``loss``: classification plus ``lm_weight`` times
        the next-token loss on real tokens. Padding sits after the last real token, so
        causality keeps it out of the result.
        """
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the shape "
                             f"of input_ids {tuple(input_ids.shape)}.")
        real = attention_mask != 0  # (B, T)
        lengths = real.sum(dim=1)  # (B,)
        if (lengths == 0).any():
            raise ValueError("every sequence needs at least one real token.")
        # The last real token is read at index length - 1, which is right only if each row is
        # its real tokens first and then its padding (1...1 0...0). With left padding that index
        # would silently point at another token.
        right_padded = torch.arange(real.shape[1], device=real.device) < lengths[:, None]
        if (real != right_padded).any():
            raise ValueError("the attention mask has padding before a real token, but GPT "
                             "classifies from the last real token (at index length - 1): "
                             "pad on the right (pad_batch(..., side='right')).")
        targets = None
        if labels is not None:  # checked before the forward pass, as GPT checks its targets
            check_targets(labels, self.head.out_features, "class labels")
            targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
            if lm_weight:
                check_targets(targets, self.config.vocab_size, "next-token targets",
                              hint="every sequence has a single real token, so the auxiliary "
                                   "language-model loss has nothing to predict; use longer "
                                   "inputs (GPT-1 appends an end token) or lm_weight=0")
        lm = self.gpt(input_ids)
        hidden = lm.last_hidden_state  # (B, T, C)
        last = hidden[torch.arange(len(input_ids)), lengths - 1]  # (B, C): each last real token
        out = GPTClassifierOutput(logits=self.head(self.dropout(last)), last_hidden_state=hidden,
                                  lm_logits=lm.logits)
        if labels is not None:
            out.loss = F.cross_entropy(out.logits.float(), labels, ignore_index=IGNORE_INDEX)
            if lm_weight:
                out.loss = out.loss + lm_weight * F.cross_entropy(
                    out.lm_logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                    ignore_index=IGNORE_INDEX)
        return out


# GPTConfig's fields and the names GPT2Config gives them (dropout is one rate here, three there).
_HF_CONFIG_NAMES = {"vocab_size": "vocab_size", "block_size": "n_positions", "n_layer": "n_layer",
                    "n_head": "n_head", "n_embd": "n_embd", "layer_norm_eps": "layer_norm_epsilon"}

# Names of the Conv1D weights that Hugging Face stores transposed.
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _from_hf_state(hf_state: dict) -> dict:
    state = {}
    for name, tensor in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # old transformers versions keep the causal mask as a buffer
        name = name.removeprefix("transformer.")
        state[name] = tensor.t() if name.endswith(_CONV1D) else tensor
    state.setdefault("lm_head.weight", state["wte.weight"])
    return state


def _to_hf_state(state: dict) -> dict:
    hf_state = {}
    for name, tensor in state.items():
        tensor = tensor.t().contiguous() if name.endswith(_CONV1D) else tensor
        hf_name = name if name.startswith("lm_head") else f"transformer.{name}"
        hf_state[hf_name] = tensor
    return hf_state


def top_k_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (B, V); set the others to -inf."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}.")
    kth_best = torch.topk(logits, min(k, logits.size(-1))).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_best, float("-inf"))


def top_p_logits(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens
    whose probabilities add up to at least ``p``; set the other logits of each row to -inf."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}.")
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # Drop a token when the tokens ranked above it already reach p (the best always stays).
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p
    drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token from ``logits`` (B, V); returns ids (B, 1). See ``GPT.generate``."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    if top_p is not None:
        logits = top_p_logits(logits, top_p)
    probs = logits.softmax(dim=-1)
    if generator is not None and generator.device != probs.device:
        # A generator draws on its own device (a seeded CPU generator gives the same sample
        # on every machine): sample there, return to the logits' device.
        picked = torch.multinomial(probs.float().to(generator.device), 1, generator=generator)
        return picked.to(probs.device)
    return torch.multinomial(probs, num_samples=1, generator=generator)
