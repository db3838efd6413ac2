"""BERT (Devlin et al., NAACL 2019) in one file: the encoder, its two pretraining heads, the
heads for fine-tuning, and the pretraining data (sentence pairs, masking).

    config = BertConfig(vocab_size=4000)
    model = BertForPreTraining(config)
    out = model(input_ids, token_type_ids, attention_mask, mlm_labels=labels, nsp_labels=is_next)
    out.loss.backward()

The encoder blocks are chapter 2's ``TransformerBlock`` in its post-LN form, the form BERT uses:
``x = LayerNorm(x + Attention(x)); x = LayerNorm(x + FeedForward(x))``. Weights load from, and
match, Hugging Face's ``BertModel``/``BertForPreTraining`` (tests/test_bert.py).

Shapes in comments: B batch, T tokens, C width (d_model), V vocabulary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctxlib.batches import IGNORE_INDEX, check_ids, check_targets
from ctxlib.layers import ModelOutput, TransformerBlock
from ctxlib.runtime import device_of


@dataclass
class BertConfig:
    """Every size of the model. BERT-base is n_layer=12, n_head=12, d_model=768, d_ff=3072,
    max_position=512, vocab_size=30522; the defaults here train on a CPU."""

    vocab_size: int = 4000
    max_position: int = 128  # longest input, [CLS] and [SEP]s included
    type_vocab_size: int = 2  # segments A and B
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int | None = None  # None: 4 * d_model
    dropout: float = 0.1  # on embeddings, attention weights and sub-layer outputs
    layer_norm_eps: float = 1e-12  # BERT's value (PyTorch's default is 1e-5)

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}.")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm and dropout: (B, T) -> (B, T, C)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.d_model)
        self.position = nn.Embedding(config.max_position, config.d_model)
        self.segment = nn.Embedding(config.type_vocab_size, config.d_model)
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(positions) + self.segment(token_type_ids)
        return self.dropout(self.norm(x))


@dataclass
class BertOutput(ModelOutput):
    """``ModelOutput`` with BERT's extras: the pooled [CLS] vector and next-sentence results."""

    pooled: torch.Tensor | None = None  # (B, C): tanh(dense([CLS]'s top vector))
    nsp_logits: torch.Tensor | None = None  # (B, 2): index 0 = "B follows A", 1 = "B is random"
    mlm_loss: torch.Tensor | None = None  # given mlm_labels
    nsp_loss: torch.Tensor | None = None  # given nsp_labels


class Bert(nn.Module):
    """The encoder: embeddings, n_layer post-LN Transformer blocks, and the pooler (a dense layer
    and tanh on the [CLS] position, which the next-sentence head and classifiers read)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.n_head, config.d_ff, config.dropout,
                             norm_first=False, activation="gelu", layer_norm_eps=config.layer_norm_eps)
            for _ in range(config.n_layer)
        )
        self.pooler = nn.Linear(config.d_model, config.d_model)
        self.apply(_init_weights)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, all_layers: bool = False) -> BertOutput:
        """input_ids, token_type_ids, attention_mask: (B, T) (segments default to all 0, the
        mask to all 1) -> ``last_hidden_state`` (B, T, C) and ``pooled`` (B, C). With
        ``all_layers=True``, also ``hidden_states``: the embeddings' output and every block's,
        n_layer + 1 tensors (B, T, C). An encoder has no ``logits``: its heads add them."""
        token_type_ids, attention_mask = self._check(input_ids, token_type_ids, attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        layers = [x]
        for block in self.blocks:
            x = block(x, attention_mask)
            layers.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, C): the [CLS] position
        return BertOutput(last_hidden_state=x, hidden_states=layers if all_layers else None,
                          pooled=pooled)

    @torch.no_grad()
    def attention_weights(self, input_ids, token_type_ids=None, attention_mask=None):
        """The attention weights of every layer, each (B, H, T, T), for plots and widgets."""
        token_type_ids, attention_mask = self._check(input_ids, token_type_ids, attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        weights = []
        for block in self.blocks:
            x, w = block(x, attention_mask, return_weights=True)
            weights.append(w)
        return weights

    def _check(self, input_ids, token_type_ids, attention_mask):
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, time), got {tuple(input_ids.shape)}.")
        T = input_ids.shape[1]
        if T > self.config.max_position:
            raise ValueError(f"{T} tokens, but the position table holds {self.config.max_position}: "
                             "truncate the input or build the model with a larger max_position.")
        check_ids(input_ids, self.config.vocab_size, "token ids")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
            if t.shape != input_ids.shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, but input_ids has "
                                 f"{tuple(input_ids.shape)}; they must match.")
        check_ids(token_type_ids, self.config.type_vocab_size, "segment ids (token_type_ids)")
        return token_type_ids, attention_mask

    @classmethod
    def from_huggingface(cls, hf_model) -> Bert:
        """Our encoder with the weights of a ``transformers.BertModel`` (any config)."""
        model = cls(config_from_huggingface(hf_model.config))
        model.load_state_dict(_encoder_state(hf_model.state_dict(), prefix=""))
        return model


class BertForPreTraining(nn.Module):
    """BERT with its two pretraining heads: masked-LM (a dense layer, GELU, LayerNorm, then the
    output layer tied to the input embeddings) and next-sentence prediction (on the pooler)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = Bert(config)
        self.mlm_dense = nn.Linear(config.d_model, config.d_model)
        self.mlm_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.nsp = nn.Linear(config.d_model, 2)
        self.mlm_dense.apply(_init_weights)
        self.nsp.apply(_init_weights)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V); the decoder is the word embedding matrix itself (tied)."""
        h = self.mlm_norm(F.gelu(self.mlm_dense(hidden)))
        return h @ self.bert.embeddings.word.weight.T + self.mlm_bias

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, mlm_labels=None,
                nsp_labels=None) -> BertOutput:
        """-> ``logits``, the masked-LM scores (B, T, V), and ``nsp_logits`` (B, 2), with the
        encoder's ``last_hidden_state`` and ``pooled``. With ``mlm_labels`` (B, T), IGNORE_INDEX
        at every position not chosen for masking, logits and loss cover the chosen positions
        only, ``logits`` (number chosen, V): padding and unchosen positions never enter the
        mean. ``nsp_labels`` (B,): 0 if B follows A, 1 if B is random. ``loss`` is the sum of
        the losses given labels (``mlm_loss`` + ``nsp_loss``)."""
        # Labels are checked before the encoder runs: a bad batch should not cost a forward pass.
        if mlm_labels is not None:
            if mlm_labels.shape != input_ids.shape:
                raise ValueError(f"mlm_labels {tuple(mlm_labels.shape)} must match input_ids "
                                 f"{tuple(input_ids.shape)}.")
            check_targets(mlm_labels, self.config.vocab_size, "mlm_labels",
                          hint="no position was chosen for masking (with short inputs and a 15% "
                               "rate this can happen by chance): use longer inputs or larger "
                               "batches, and check the maskable positions given to mask_tokens")
        if nsp_labels is not None:
            check_targets(nsp_labels, 2, "nsp_labels")
        out = self.bert(input_ids, token_type_ids, attention_mask)
        hidden = out.last_hidden_state  # (B, T, C)
        out.nsp_logits = self.nsp(out.pooled)  # (B, 2)
        if mlm_labels is not None:
            chosen = mlm_labels != IGNORE_INDEX  # (B, T)
            # Scoring only the chosen ~15% of positions saves most of the output layer's cost.
            out.logits = self.mlm_logits(hidden[chosen])  # (N chosen, V)
            out.mlm_loss = F.cross_entropy(out.logits, mlm_labels[chosen])
        else:
            out.logits = self.mlm_logits(hidden)  # (B, T, V)
        if nsp_labels is not None:
            out.nsp_loss = F.cross_entropy(out.nsp_logits, nsp_labels)
        losses = [x for x in (out.mlm_loss, out.nsp_loss) if x is not None]
        out.loss = sum(losses) if losses else None
        return out

    @classmethod
    def from_huggingface(cls, hf_model) -> BertForPreTraining:
        """Ours with the weights of a ``transformers.BertForPreTraining`` (any config)."""
        model = cls(config_from_huggingface(hf_model.config))
        hf = hf_model.state_dict()
        state = {f"bert.{k}": v for k, v in _encoder_state(hf, prefix="bert.").items()}
        state.update({
            "mlm_dense.weight": hf["cls.predictions.transform.dense.weight"],
            "mlm_dense.bias": hf["cls.predictions.transform.dense.bias"],
            "mlm_norm.weight": hf["cls.predictions.transform.LayerNorm.weight"],
            "mlm_norm.bias": hf["cls.predictions.transform.LayerNorm.bias"],
            "mlm_bias": hf["cls.predictions.bias"],
            "nsp.weight": hf["cls.seq_relationship.weight"],
            "nsp.bias": hf["cls.seq_relationship.bias"],
        })
        model.load_state_dict(state)
        return model


class BertForSequenceClassification(nn.Module):
    """A label per input (e.g. sentiment): dropout and a linear layer on the pooled [CLS]."""

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.bert = Bert(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, num_labels)
        self.classifier.apply(_init_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> BertOutput:
        """-> ``logits`` (B, num_labels), with the encoder's outputs."""
        out = self.bert(input_ids, token_type_ids, attention_mask)
        out.logits = self.classifier(self.dropout(out.pooled))
        return out


class BertForTokenClassification(BertForSequenceClassification):
    """A label per token (tagging, NER): dropout and a linear layer on every hidden state."""

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> BertOutput:
        """-> ``logits`` (B, T, num_labels), with the encoder's outputs."""
        out = self.bert(input_ids, token_type_ids, attention_mask)
        out.logits = self.classifier(self.dropout(out.last_hidden_state))
        return out


@dataclass
class SpanOutput(BertOutput):
    """A score for each token being the answer's first (``start_logits``) and last
    (``end_logits``) token, each (B, T)."""

    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None


class BertForQuestionAnswering(nn.Module):
    """Extractive QA: a start score and an end score for every token; the answer is the span
    with the best start + end score (the question is segment A, the passage segment B)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = Bert(config)
        self.span = nn.Linear(config.d_model, 2)
        self.span.apply(_init_weights)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None) -> SpanOutput:
        """-> ``start_logits`` and ``end_logits``, each (B, T), with the encoder's outputs."""
        out = self.bert(input_ids, token_type_ids, attention_mask)
        start, end = self.span(out.last_hidden_state).unbind(dim=-1)
        return SpanOutput(last_hidden_state=out.last_hidden_state, pooled=out.pooled,
                          start_logits=start, end_logits=end)


def load_encoder(task_model: nn.Module, pretrained: BertForPreTraining) -> nn.Module:
    """Copy a pretrained encoder into a task model (its head stays freshly initialised)."""
    task_model.bert.load_state_dict(pretrained.bert.state_dict())
    return task_model


# --- Pretraining data --------------------------------------------------------------------------


def mask_tokens(input_ids: torch.Tensor, maskable: torch.Tensor, mask_id: int,
                random_ids: tuple[int, int], generator: torch.Generator, rate: float = 0.15):
    """BERT's masking: choose ``rate`` of the maskable positions; of those, 80% become
    ``[MASK]``, 10% a random token, 10% stay as they are. The model must predict the original
    token at every chosen position, so it cannot tell which inputs to trust.

    input_ids, maskable (B, T) -> (masked inputs (B, T), labels (B, T): the original token at
    chosen positions, IGNORE_INDEX elsewhere). ``maskable`` is False at special tokens and
    padding, which are never chosen. Random tokens are drawn from ``range(*random_ids)``.
    """
    if maskable.shape != input_ids.shape:
        raise ValueError("maskable must have the shape of input_ids.")
    draw = torch.rand(input_ids.shape, generator=generator)
    chosen = (draw < rate) & maskable
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    action = torch.rand(input_ids.shape, generator=generator)
    random_tokens = torch.randint(*random_ids, input_ids.shape, generator=generator)
    masked = torch.where(chosen & (action < 0.8), mask_id, input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, masked)
    return masked, labels


def sentence_pair(documents: list[list[list[int]]], max_tokens: int, rng: random.Random):
    """One next-sentence-prediction example from tokenised documents (lists of sentences, each a
    list of token ids; at least two documents, one with two sentences or more).

    Segment A is a run of consecutive sentences of one document; half of the time segment B is
    the text that follows it (label 0), half of the time text from another document (label 1).
    The pair is cut, longest segment first, to ``max_tokens`` tokens (the [CLS] and [SEP]s come
    on top). Returns (A ids, B ids, label)."""
    while True:
        doc = rng.randrange(len(documents))
        sentences = documents[doc]
        if len(sentences) >= 2:
            break
    split = rng.randrange(1, len(sentences))  # A ends before sentence `split`
    start = split - 1
    a = list(sentences[start])
    while start > 0 and len(a) + len(sentences[start - 1]) <= max_tokens // 2:
        start -= 1
        a = list(sentences[start]) + a
    if rng.random() < 0.5:
        b, label = [t for s in sentences[split:] for t in s], 0
    else:
        other = rng.randrange(len(documents) - 1)
        other += other >= doc  # any document but this one
        others = documents[other]
        b, label = [t for s in others[rng.randrange(len(others)):] for t in s], 1
    while len(a) + len(b) > max_tokens:  # cut the longer segment, A from its start, B its end
        if len(a) > len(b):
            a.pop(0)
        else:
            b.pop()
    return a, b, label


def pack_pairs(pairs, cls_id: int, sep_id: int, pad_id: int):
    """[(A, B, label)] -> input_ids, token_type_ids, attention_mask (B, T) and labels (B,):
    ``[CLS] A [SEP] B [SEP]`` with segment 0 up to the first [SEP] and 1 after, padded."""
    length = max(len(a) + len(b) + 3 for a, b, _ in pairs)
    input_ids = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros_like(input_ids)
    attention_mask = torch.zeros_like(input_ids)
    for row, (a, b, _) in enumerate(pairs):
        ids = [cls_id, *a, sep_id, *b, sep_id]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        token_type_ids[row, len(a) + 2 : len(ids)] = 1
        attention_mask[row, : len(ids)] = 1
    labels = torch.tensor([label for _, _, label in pairs])
    return input_ids, token_type_ids, attention_mask, labels


def pretraining_batch(documents: list[list[list[int]]], size: int, tokenizer, max_tokens: int,
                      rng: random.Random, generator: torch.Generator):
    """``size`` masked sentence pairs from tokenised ``documents``, ready for
    ``BertForPreTraining``: (input_ids, token_type_ids, attention_mask, mlm_labels (B, T),
    nsp_labels (B,)). ``tokenizer`` gives the ids of [CLS], [SEP], [PAD] and [MASK]; its
    special tokens are never masked nor drawn as random replacements. ``rng`` draws the pairs,
    ``generator`` the masks, so a seeded run draws the same batches every time."""
    cls_id, sep_id, pad_id, mask_id = (
        tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]"))
    first_ordinary = len(tokenizer.special_tokens)  # ids below this are special tokens
    pairs = [sentence_pair(documents, max_tokens, rng) for _ in range(size)]
    input_ids, token_type_ids, attention_mask, nsp_labels = pack_pairs(pairs, cls_id, sep_id,
                                                                       pad_id)
    maskable = input_ids >= first_ordinary  # never [CLS], [SEP] or padding
    masked, mlm_labels = mask_tokens(input_ids, maskable, mask_id,
                                     (first_ordinary, tokenizer.vocab_size), generator)
    return masked, token_type_ids, attention_mask, mlm_labels, nsp_labels


def training_batch(documents: list[list[list[int]]], size: int, tokenizer, max_tokens: int,
                   generator: torch.Generator):
    """A ``pretraining_batch`` for the training loop: the pair sampler is seeded from
    ``generator``, so the loop's one generator (saved in its checkpoints) decides pairs and
    masks alike, and a resumed run draws the batches the uninterrupted one would have."""
    rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=generator)))
    return pretraining_batch(documents, size, tokenizer, max_tokens, rng, generator)


def validation_batch(documents: list[list[list[int]]], size: int, tokenizer, max_tokens: int,
                     seed: int = 0):
    """A fixed ``pretraining_batch`` drawn with ``seed``: every evaluation scores the same
    pairs and masks."""
    return pretraining_batch(documents, size, tokenizer, max_tokens, random.Random(seed),
                             torch.Generator().manual_seed(seed))


def pretraining_loss(model: BertForPreTraining, batch, use_nsp: bool = True) -> torch.Tensor:
    """MLM + NSP loss of a ``pretraining_batch`` (MLM alone without ``use_nsp``)."""
    ids, segments, mask, mlm_labels, nsp_labels = (
        t.to(device_of(model)) for t in batch)
    return model(ids, segments, mask, mlm_labels=mlm_labels,
                 nsp_labels=nsp_labels if use_nsp else None).loss


def wikitext2_documents(bpe_vocab: int, train_articles: list[list[str]] | None = None):
    """Chapter 5's pretraining text (and its grader's): a BPE tokenizer of ``bpe_vocab``
    entries trained on the sentences of ``train_articles`` (default: all of WikiText-2's
    training articles, ``ctxlib.data.wikitext2_sentences``), and the training and validation
    articles as lists of sentences of its token ids: (tokenizer, train documents, validation
    documents)."""
    from ctxlib.data import wikitext2_sentences
    from ctxlib.tokenizers import BPETokenizer

    if train_articles is None:
        train_articles = wikitext2_sentences("train")
    bpe = BPETokenizer.train("\n".join(s for a in train_articles for s in a),
                             vocab_size=bpe_vocab, progress_bar=False)
    return (bpe, [bpe.encode_batch(sentences) for sentences in train_articles],
            [bpe.encode_batch(sentences) for sentences in wikitext2_sentences("valid")])


@torch.no_grad()
def evaluate_pretraining(model: BertForPreTraining, batch, chunk: int = 64) -> dict[str, float]:
    """Validation MLM loss (the mean over chunks of ``chunk`` pairs) and NSP accuracy on a
    fixed ``pretraining_batch``; the model is put back in training mode."""
    model.eval()
    device = device_of(model)
    pairs = len(batch[0])
    mlm, nsp_correct = [], 0
    for start in range(0, pairs, chunk):
        ids, segments, mask, mlm_labels, nsp_labels = (
            t[start : start + chunk].to(device) for t in batch)
        out = model(ids, segments, mask, mlm_labels=mlm_labels, nsp_labels=nsp_labels)
        mlm.append(out.mlm_loss.item())
        nsp_correct += (out.nsp_logits.argmax(-1) == nsp_labels).sum().item()
    model.train()
    return {"mlm_loss": sum(mlm) / len(mlm), "nsp_accuracy": nsp_correct / pairs}


def masked_lm_floor(frequencies: torch.Tensor, batch, mask_id: int,
                    random_ids: tuple[int, int], chunk: int = 64) -> float:
    """The validation MLM loss of the best predictor that sees no context: only the input token
    at each chosen position, knowing the target frequencies and BERT's 80/10/10 masking.

    At a ``[MASK]`` it can only guess by frequency, ``p(t)``. At any other token ``v`` the
    target is ``v`` itself (kept, 10%) or anything (``v`` drawn at random, 10%, uniformly from
    ``range(*random_ids)``, V tokens), so by Bayes' rule it predicts
    ``p(t) (1[t = v] + 1/V) / (p(v) + 1/V)``: almost surely the token it sees. This floor
    is therefore below the frequency guess at every position. ``frequencies`` (vocab,) sums
    to 1; ``batch`` is a ``pretraining_batch``; the losses are averaged as
    ``evaluate_pretraining`` averages them (the mean over chunks of ``chunk`` pairs)."""
    if frequencies.dim() != 1 or not torch.isclose(frequencies.sum(), torch.tensor(1.0)):
        raise ValueError("frequencies must be one probability per token id, summing to 1.")
    if (frequencies <= 0).any():
        raise ValueError("every token needs a frequency above 0 (smooth the counts).")
    masked, labels = batch[0], batch[3]
    log_p = frequencies.double().log()
    n_random = random_ids[1] - random_ids[0]
    losses = []
    for start in range(0, len(masked), chunk):
        seen, target = masked[start : start + chunk], labels[start : start + chunk]
        chosen = target != IGNORE_INDEX
        seen, target = seen[chosen], target[chosen]
        kept = (seen == target).double()
        from_seen = (log_p[target] + torch.log(kept + 1 / n_random)
                     - torch.log(log_p[seen].exp() + 1 / n_random))
        log_q = torch.where(seen == mask_id, log_p[target], from_seen)
        losses.append(-log_q.mean().item())
    return sum(losses) / len(losses)


# --- Hugging Face weights -------------------------------------------------------------------


def config_from_huggingface(hf_config) -> BertConfig:
    if hf_config.hidden_act != "gelu":
        raise ValueError(f"only GELU BERTs are supported, not {hf_config.hidden_act!r}.")
    return BertConfig(
        vocab_size=hf_config.vocab_size, max_position=hf_config.max_position_embeddings,
        type_vocab_size=hf_config.type_vocab_size, n_layer=hf_config.num_hidden_layers,
        n_head=hf_config.num_attention_heads, d_model=hf_config.hidden_size,
        d_ff=hf_config.intermediate_size, dropout=hf_config.hidden_dropout_prob,
        layer_norm_eps=hf_config.layer_norm_eps,
    )


def _encoder_state(hf: dict, prefix: str) -> dict:
    """Hugging Face BertModel parameter names -> ours (query, key, value fuse into qkv)."""
    p = prefix
    state = {
        "embeddings.word.weight": hf[f"{p}embeddings.word_embeddings.weight"],
        "embeddings.position.weight": hf[f"{p}embeddings.position_embeddings.weight"],
        "embeddings.segment.weight": hf[f"{p}embeddings.token_type_embeddings.weight"],
        "embeddings.norm.weight": hf[f"{p}embeddings.LayerNorm.weight"],
        "embeddings.norm.bias": hf[f"{p}embeddings.LayerNorm.bias"],
        "pooler.weight": hf[f"{p}pooler.dense.weight"],
        "pooler.bias": hf[f"{p}pooler.dense.bias"],
    }
    i = 0
    while f"{p}encoder.layer.{i}.attention.self.query.weight" in hf:
        h, o = f"{p}encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            state[f"{o}attn.qkv.{kind}"] = torch.cat(
                [hf[f"{h}attention.self.{name}.{kind}"] for name in ("query", "key", "value")])
            state[f"{o}attn.out.{kind}"] = hf[f"{h}attention.output.dense.{kind}"]
            state[f"{o}ln1.{kind}"] = hf[f"{h}attention.output.LayerNorm.{kind}"]
            state[f"{o}ff.fc.{kind}"] = hf[f"{h}intermediate.dense.{kind}"]
            state[f"{o}ff.proj.{kind}"] = hf[f"{h}output.dense.{kind}"]
            state[f"{o}ln2.{kind}"] = hf[f"{h}output.LayerNorm.{kind}"]
        i += 1
    return state


def _init_weights(module: nn.Module) -> None:
    """BERT's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

