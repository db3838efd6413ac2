"""Chapter 7: the four pretraining objectives on equal terms.

ELMo's biLM, GPT's causal LM, BERT's masked LM (with and without next-sentence prediction)
and XLNet's permutation LM, each built from its own chapter's module, put on the same footing:

- the same text: WikiText-2's training sentences, in the same order;
- the same vocabulary: one byte-level BPE (the biLM reads each token's bytes with its
  character CNN and predicts tokens of the same vocabulary);
- the same width, and within 10% the same number of weights in the layers that mix context
  (4 Transformer blocks against 2 directions x 3 LSTM layers); token encoders and output
  layers are counted apart;
- the same tokens per training step and the same optimizer recipe (AdamW, warmup, cosine),
  each objective with its own learning rate, chosen on its own validation loss.

Each objective is one class (``BiLM``, ``CausalLM``, ``MaskedLMWithNSP``, ``MaskedLM``,
``PermutationLM``) that holds all of it: its model, batches, loss and validation, the layers
it reads a sequence through, how it scores a sentence, fills in a blank and continues a text.
Nothing here is a second implementation of a model: each class takes its model, batches and
loss from ``ctxlib.elmo``, ``ctxlib.gpt``, ``ctxlib.bert`` or ``ctxlib.xlnet`` (a test checks
this), and the functions below read them all the same way:

    text = shared_text(bpe_vocab=4000)
    causal = build("causal", text, Sizes())
    history = pretrain(causal, steps=600, lr=1e-3, warmup_steps=60, name="h2h_causal")
    layers = word_layers(causal, text.tokenizer, [["The", "cat", "sat"]])  # [(L+1, 3, D)]
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ctxlib import bert, elmo, gpt, xlnet
from ctxlib.batches import encode_words, lm_windows, pad_batch
from ctxlib.data import wikitext2_sentences
from ctxlib.pretrained import Pretrained
from ctxlib.probes import LayerProbe
from ctxlib.protocol import Arm, probe_arm
from ctxlib.runtime import checkpoint_path, device_of, seed_everything, take
from ctxlib.tokenizers import BPETokenizer
from ctxlib.train import History, TrainConfig, mean_tokens_per_step, train


@dataclass(frozen=True)
class Sizes:
    """The shape every contender shares. Four Transformer blocks of width d hold about 12 d^2
    weights each; an LSTM layer of width d holds 8 d^2, so three per direction, six in all,
    hold about as many as the four blocks."""

    d_model: int = 128
    n_layer: int = 4  # Transformer blocks
    n_head: int = 4
    bilm_layers: int = 3  # LSTM layers per direction
    context: int = 64  # tokens one training example reads (XLNet: two segments of half)
    batch: int = 16  # examples per step; BERT's pairs are shorter, so it gets more of them
    dropout: float = 0.1
    max_chars: int = 16  # the biLM's characters per token, begin and end marks included
    predict_every: int = 4  # XLNet predicts one token in this many (partial prediction)
    valid_batches: int = 10  # validation: this many fixed batches of 16 examples


class SharedText(NamedTuple):
    """WikiText-2 in one BPE vocabulary, as articles of sentences (BERT's pairs) and as one
    stream of the same sentences (everyone else's windows)."""

    tokenizer: BPETokenizer
    train_docs: list[list[list[int]]]  # articles -> sentences -> token ids
    valid_docs: list[list[list[int]]]
    train_ids: torch.Tensor  # (N,) every training sentence, one after another
    valid_ids: torch.Tensor  # (M,)


def shared_text(bpe_vocab: int | None = None, articles: int | None = None,
                tokenizer: BPETokenizer | None = None) -> SharedText:
    """Train the shared BPE vocabulary of ``bpe_vocab`` tokens on WikiText-2's training
    sentences (its first ``articles`` articles, if given; as many of the validation articles)
    and encode both; or encode them with a ``tokenizer`` trained before (a course
    checkpoint's)."""
    if (bpe_vocab is None) == (tokenizer is None):
        raise ValueError("give either bpe_vocab (to train the vocabulary) or tokenizer.")
    train_articles = take(wikitext2_sentences("train"), articles)
    valid_articles = take(wikitext2_sentences("valid"), articles)
    if tokenizer is None:
        tokenizer = BPETokenizer.train("\n".join(s for a in train_articles for s in a),
                                       vocab_size=bpe_vocab, progress_bar=False)
    train_docs = [tokenizer.encode_batch(a) for a in train_articles]
    valid_docs = [tokenizer.encode_batch(a) for a in valid_articles]

    def stream(docs):
        return torch.tensor([t for doc in docs for sentence in doc for t in sentence])

    return SharedText(tokenizer, train_docs, valid_docs, stream(train_docs), stream(valid_docs))


class Contender:
    """One objective, ready to train and to read: its chapter's model, its batches, loss and
    validation, the layers it reads a sequence through, and what it can do with a sentence
    (score it, fill in a blank, continue it). One subclass per objective; adding an objective
    means adding one class to ``CONTENDERS``. What the pretraining script needs to know about
    it (``kind``, ``valid_key``, ``valid_key_is``) are class attributes."""

    key: str  # its name in OBJECTIVES
    name: str  # what the chapter calls it
    kind: str  # its model class, as ctxlib.pretrained names it
    valid_key = "valid_loss"  # the validation loss evaluate() reports, nats per predicted token
    valid_key_is: str  # what that loss is, in words
    needs_left = False  # fill_in needs text left of the blank (it reads only the left)
    generates = True  # has a left-to-right distribution to sample from
    # Set by each subclass's __init__:
    model: nn.Module
    batch: int  # examples per step
    token_encoder: list[nn.Module]  # context-free: a token in, a vector out
    context_layers: list[nn.Module]  # what mixes the tokens of a sequence

    def __init__(self, text: SharedText, sizes: Sizes, token_order=None):
        if token_order is not None:
            raise ValueError("only the biLM numbers its tokens by rank: no token_order for "
                             f"{self.key!r}.")
        self.text, self.sizes = text, sizes

    def device(self) -> torch.device:
        return device_of(self.model)

    def vocab_size(self) -> int:
        """How many token ids it knows (the shared BPE vocabulary)."""
        return self.model.config.vocab_size

    def token_order(self) -> list[int] | None:
        """The order it numbers the tokens in, if not by id (a loader needs it)."""
        return None

    # Training: what ctxlib.train calls
    def batches(self, generator: torch.Generator) -> Any:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    def tokens_in(self, batch: Any) -> int:
        """Tokens (padding not counted) of one training batch."""
        raise NotImplementedError

    # Reading: ids and mask (B, T) on the model's device, in eval mode
    def layers(self, ids: torch.Tensor, mask: torch.Tensor,
               model: nn.Module | None = None) -> list[torch.Tensor]:
        """The input layer and every layer above it, each (B, T, D), of ``model`` (by default
        the contender's own; fine-tuning reads a copy of it)."""
        raise NotImplementedError

    def log_prob(self, ids: torch.Tensor) -> torch.Tensor:
        """The mean log-probability per token of one sentence (1, T), as it defines it."""
        raise NotImplementedError

    def blank_log_probs(self, left: list[int], right: list[int]) -> torch.Tensor:
        """log p (V,) of the token in a blank between ``left`` and ``right``."""
        raise NotImplementedError

    def next_token_logits(self, window: list[int]) -> torch.Tensor:
        """Logits (V,) of the token after ``window``."""
        raise NotImplementedError


class CausalLM(Contender):
    """GPT (chapter 4): predicts each token from the ones before it."""

    key, name, kind, valid_key_is = "causal", "causal LM (GPT)", "gpt", "loss"
    needs_left = True

    def __init__(self, text: SharedText, sizes: Sizes, token_order=None):
        super().__init__(text, sizes, token_order)
        self.model = gpt.GPT(gpt.GPTConfig(
            vocab_size=text.tokenizer.vocab_size, block_size=sizes.context,
            n_layer=sizes.n_layer, n_head=sizes.n_head, n_embd=sizes.d_model,
            dropout=sizes.dropout))
        self.batch = sizes.batch
        self.valid = gpt.validation_windows(text.valid_ids, _valid_examples(sizes), sizes.context)
        self.token_encoder = [self.model.wte, self.model.wpe]
        self.context_layers = [self.model.h, self.model.ln_f]

    def batches(self, generator):
        return lm_windows(self.text.train_ids, self.batch, self.sizes.context, generator)

    def loss(self, model, batch):
        return gpt.lm_loss(model, batch)

    def evaluate(self, model):
        return gpt.evaluate_lm(model, self.valid)

    def tokens_in(self, batch):
        return batch[0].numel()

    def layers(self, ids, mask, model=None):
        return (model or self.model)(ids, all_layers=True).hidden_states

    def log_prob(self, ids):  # log p(x_t | x_<t) for t >= 1: the first token has no context
        log_probs = self.model(ids).logits[0].log_softmax(-1)  # (T, V)
        return log_probs[:-1].gather(1, ids[0, 1:, None]).mean()

    def blank_log_probs(self, left, right):  # it reads only the left
        return self.next_token_logits(left).log_softmax(-1)

    def next_token_logits(self, window):
        return self.model(torch.tensor([window], device=self.device())).logits[0, -1]


def _pieces(tokenizer: BPETokenizer) -> list[bytes]:
    """Each token's bytes; a special token is spelled by its name."""
    return [piece or tokenizer.special_tokens[i].encode() for i, piece in
            enumerate(tokenizer.pieces)]


class BiLM(Contender):
    """ELMo's biLM (chapter 3): a forward and a backward LSTM LM over a character CNN that
    reads each token's bytes. The adaptive softmax wants ids sorted by frequency, so it numbers
    the same tokens by their rank in the training text (``by_rank``: rank -> token id)."""

    key, name, kind = "bilm", "biLM (ELMo)", "bilm"
    valid_key_is = "biLM loss (mean of both directions)"
    needs_left = True

    def __init__(self, text: SharedText, sizes: Sizes, token_order=None):
        super().__init__(text, sizes)
        V = text.tokenizer.vocab_size
        if token_order is None:
            counts = torch.bincount(text.train_ids, minlength=V)
            by_rank = counts.argsort(descending=True, stable=True)  # rank -> token id
        else:
            by_rank = torch.as_tensor(token_order)
            if sorted(by_rank.tolist()) != list(range(V)):
                raise ValueError(f"the biLM's token order must number each of the {V} tokens "
                                 "once.")
        self.by_rank = by_rank
        self.rank = torch.empty_like(by_rank)
        self.rank[by_rank] = torch.arange(V)  # token id -> rank
        self.spelled = elmo.spell_vocabulary(_pieces(text.tokenizer), sizes.max_chars)  # (V, C)
        config = elmo.ELMoConfig(vocab_size=V, max_chars=sizes.max_chars, dim=sizes.d_model,
                                 hidden=sizes.d_model, layers=sizes.bilm_layers,
                                 dropout=sizes.dropout,
                                 filters=((1, 32), (2, 32), (3, 64), (4, 128)),
                                 cutoffs=(V // 4,))
        self.model = elmo.BiLM(config)
        self.batch = sizes.batch
        self.train_ranks, self.spelled_by_rank = self.rank[text.train_ids], self.spelled[by_rank]
        self.windows = elmo.validation_windows(self.rank[text.valid_ids],
                                               sizes.context)[: _valid_examples(sizes)]
        self.token_encoder = [self.model.encoder]
        self.context_layers = [self.model.forward_lm, self.model.backward_lm]

    def vocab_size(self):  # one rank per id
        return len(self.rank)

    def token_order(self):
        return self.by_rank.tolist()

    def batches(self, generator):
        return elmo.lm_batch(self.train_ranks, self.spelled_by_rank, self.batch,
                             self.sizes.context, generator)

    def loss(self, model, batch):
        return elmo.lm_loss(model, batch)

    def evaluate(self, model):
        return elmo.evaluate_lm(model, self.windows, self.spelled_by_rank, 16)

    def tokens_in(self, batch):
        return batch[1].numel()

    def layers(self, ids, mask, model=None):  # padding must be words of no characters at all
        chars = self.spelled.to(ids.device)[ids] * mask[..., None]
        return (model or self.model)(chars).hidden_states

    def log_prob(self, ids):  # the mean of log p(x_t | x_<t) forward and log p(x_t | x_>t)
        rank, spelled = self.rank.to(ids.device), self.spelled.to(ids.device)
        forward, backward = self.model.lm_losses(spelled[ids], rank[ids])
        return -(forward + backward) / 2

    def blank_log_probs(self, left, right):
        """log p(x) proportional to p_forward(x | left) p_backward(x | right), by token id."""
        device = self.device()
        rank, spelled = self.rank.to(device), self.spelled.to(device)
        ids = torch.tensor([left + [left[-1]] + right], device=device)  # the blank: never read
        _, forward, backward, _ = self.model.directions(spelled[ids])
        scores = self.model.softmax.log_prob(forward[-1][0, len(left) - 1][None].float())[0]
        if right:  # (scores by rank)
            scores = scores + self.model.softmax.log_prob(
                backward[-1][0, len(left) + 1][None].float())[0]
        return scores.log_softmax(-1)[rank]  # by token id

    def next_token_logits(self, window):  # the forward LM
        return self.blank_log_probs(window, [])


class MaskedLM(Contender):
    """BERT without next-sentence prediction (chapter 5): predicts the masked 15% of the
    tokens of a pair of sentences from everything else."""

    key, name, kind = "mlm", "masked LM (BERT, no NSP)", "bert_pretraining"
    valid_key, valid_key_is = "mlm_loss", "masked-LM loss"
    generates = False
    use_nsp = False

    def __init__(self, text: SharedText, sizes: Sizes, token_order=None):
        super().__init__(text, sizes, token_order)
        tok = text.tokenizer
        self.model = bert.BertForPreTraining(bert.BertConfig(
            vocab_size=tok.vocab_size, max_position=sizes.context, n_layer=sizes.n_layer,
            n_head=sizes.n_head, d_model=sizes.d_model, dropout=sizes.dropout))
        self.max_tokens = sizes.context - 3  # room for [CLS] and two [SEP]s
        # A pair of sentences is often shorter than the context: BERT gets as many pairs per
        # step as carry the others' tokens (measured on 200 pairs drawn as training draws them).
        probe = bert.validation_batch(text.train_docs, 200, tok, self.max_tokens)
        self.batch = max(1, round(sizes.batch * sizes.context
                                  / probe[2].float().sum(1).mean().item()))
        self.valid = bert.validation_batch(text.valid_docs, _valid_examples(sizes), tok,
                                           self.max_tokens)
        self.cls_id, self.sep_id, self.mask_id = (tok.token_to_id(t)
                                                  for t in ("[CLS]", "[SEP]", "[MASK]"))
        self.token_encoder = [self.model.bert.embeddings]
        self.context_layers = [self.model.bert.blocks]

    def batches(self, generator):
        return bert.training_batch(self.text.train_docs, self.batch, self.text.tokenizer,
                                   self.max_tokens, generator)

    def loss(self, model, batch):
        return bert.pretraining_loss(model, batch, use_nsp=self.use_nsp)

    def evaluate(self, model):
        return bert.evaluate_pretraining(model, self.valid)

    def tokens_in(self, batch):
        return int(batch[2].sum())

    def layers(self, ids, mask, model=None):  # [CLS] sentence [SEP], as in pretraining
        B = len(ids)
        lengths = mask.sum(1)
        wrapped = F.pad(ids, (1, 1))
        wrapped[:, 0] = self.cls_id
        wrapped[torch.arange(B), lengths + 1] = self.sep_id
        wrapped_mask = F.pad(mask, (1, 1))
        wrapped_mask[:, 0] = 1
        wrapped_mask[torch.arange(B), lengths + 1] = 1
        out = (model or self.model).bert(wrapped, None, wrapped_mask, all_layers=True)
        return [h[:, 1:-1] for h in out.hidden_states]

    def masked_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """(T,) ids -> (T, V), row t the logits at t with x_t masked ([CLS] ... [SEP])."""
        T = len(ids)
        rows = ids.repeat(T, 1)
        rows[torch.arange(T), torch.arange(T)] = self.mask_id
        full = torch.cat([torch.full((T, 1), self.cls_id, device=ids.device), rows,
                          torch.full((T, 1), self.sep_id, device=ids.device)], dim=1)
        logits = self.model(full).logits  # (T, T + 2, V)
        return logits[torch.arange(T), torch.arange(T) + 1]

    def log_prob(self, ids):  # the pseudo-log-likelihood, one masked token at a time
        logits = self.masked_logits(ids[0])  # (T, V)
        return logits.log_softmax(-1).gather(1, ids[0, :, None]).mean()

    def blank_log_probs(self, left, right):
        ids = torch.tensor(left + [0] + right, device=self.device())
        return self.masked_logits(ids)[len(left)].log_softmax(-1)


class MaskedLMWithNSP(MaskedLM):
    """BERT as published (chapter 5): the masked LM, and next-sentence prediction."""

    key, name = "mlm_nsp", "masked LM + NSP (BERT)"
    use_nsp = True


class PermutationLM(Contender):
    """XLNet (chapter 6): predicts the last tokens of a random factorization order from the
    others, over two segments, the second reading the first as memory."""

    key, name, kind = "plm", "permutation LM (XLNet)", "xlnet_lm"
    valid_key_is = "permutation-LM loss"

    def __init__(self, text: SharedText, sizes: Sizes, token_order=None):
        super().__init__(text, sizes, token_order)
        self.seg_len = sizes.context // 2  # two segments, the second reading the first
        self.num_predict = self.seg_len // sizes.predict_every
        self.model = xlnet.XLNetLM(xlnet.XLNetConfig(
            vocab_size=text.tokenizer.vocab_size, n_layer=sizes.n_layer, n_head=sizes.n_head,
            d_model=sizes.d_model, dropout=sizes.dropout, mem_len=self.seg_len))
        self.batch = sizes.batch
        self.valid = xlnet.validation_batches(text.valid_ids, _valid_examples(sizes),
                                              self.seg_len, self.num_predict)
        self.token_encoder = [self.model.xlnet.word_embedding]
        self.context_layers = [self.model.xlnet.layers]

    def batches(self, generator):
        return xlnet.pretraining_batch(self.text.train_ids, self.batch, self.seg_len,
                                       self.num_predict, generator)

    def loss(self, model, batch):
        return xlnet.pretraining_loss(model, batch)

    def evaluate(self, model):
        return xlnet.evaluate_pretraining(model, self.valid)

    def tokens_in(self, batch):
        return sum(segment[0].numel() for segment in batch)

    def layers(self, ids, mask, model=None):
        return (model or self.model).xlnet(ids, attention_mask=mask, all_layers=True).hidden_states

    def log_prob(self, ids):  # log p(x_t | x_<t) in the left-to-right order, one of its orders
        T = ids.shape[1]
        perm_mask = xlnet.perm_mask_from_order(torch.arange(T), T - 1).to(ids.device)
        mapping = F.one_hot(torch.arange(1, T), T).float().to(ids.device)
        return -self.model(ids, perm_mask=perm_mask[None], target_mapping=mapping[None],
                           labels=ids[:, 1:]).loss

    def blank_logits(self, left: list[int], right: list[int]) -> torch.Tensor:
        """Logits (V,) for a placeholder between ``left`` and ``right``: the query stream sits
        at the blank, and no token, the blank's own content stream included, sees it."""
        device = self.device()
        ids = torch.tensor([left + [0] + right], device=device)
        T, blank = ids.shape[1], len(left)
        perm_mask = torch.zeros(1, T, T, device=device)
        perm_mask[:, :, blank] = 1  # nobody sees the blank
        mapping = F.one_hot(torch.tensor([[blank]]), T).float().to(device)
        return self.model(ids, perm_mask=perm_mask, target_mapping=mapping).logits[0, 0]

    def blank_log_probs(self, left, right):
        return self.blank_logits(left, right).log_softmax(-1)

    def next_token_logits(self, window):  # an unseen placeholder after the text
        return self.blank_logits(window, [])


# The contenders, in the order the chapter shows them: key -> class
CONTENDERS: dict[str, type[Contender]] = {
    cls.key: cls for cls in (BiLM, CausalLM, MaskedLMWithNSP, MaskedLM, PermutationLM)}
OBJECTIVES = {key: cls.name for key, cls in CONTENDERS.items()}  # key -> its name


def parameter_counts(contender: Contender) -> dict[str, int]:
    """Weights of the token encoder, of the context layers, and of the rest (output layers,
    heads), counted once each (a tied output matrix is the token embedding)."""
    def count(modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    total = sum(p.numel() for p in contender.model.parameters())
    encoder, context = count(contender.token_encoder), count(contender.context_layers)
    return {"token encoder": encoder, "context layers": context,
            "output and heads": total - encoder - context, "total": total}


def _on(device: torch.device, *tensors):
    return tuple(t.to(device) for t in tensors)


def _valid_examples(s: Sizes) -> int:
    """Validation examples: 16 per validation batch (fewer in a code-path test run, see
    ``ctxlib.take``)."""
    return len(take(range(16 * s.valid_batches), 16 * s.valid_batches))


def build(key: str, text: SharedText, sizes: Sizes, seed: int = 0,
          token_order: Sequence[int] | None = None) -> Contender:
    """The contender ``key`` (one of OBJECTIVES) at ``sizes``, initialised with ``seed``.
    ``token_order`` (the biLM only) numbers the tokens by rank, most frequent first; by
    default the ranks are counted in ``text``'s training stream."""
    if key not in CONTENDERS:
        raise ValueError(f"unknown objective {key!r}; choose one of {list(OBJECTIVES)}.")
    if sizes.context % 2 or sizes.context // 2 < sizes.predict_every:
        raise ValueError(f"context {sizes.context} must be even and hold two segments of at "
                         f"least predict_every={sizes.predict_every} tokens.")
    seed_everything(seed)
    return CONTENDERS[key](text, sizes, token_order)


def pretrain(contender: Contender, steps: int, lr: float, warmup_steps: int, name: str,
             eval_every: int = 0, seed: int = 0, progress: bool = True) -> History:
    """Train with the recipe every contender shares (``ctxlib.train``: AdamW with weight decay
    0.01, linear warmup then cosine decay, gradients clipped at 1), checkpointed as ``name``:
    run again with the same settings it resumes or returns the finished run, with other
    settings it starts afresh."""
    config = TrainConfig(steps=steps, lr=lr, warmup_steps=warmup_steps, weight_decay=0.01,
                         eval_every=eval_every, checkpoint_every=max(50, steps // 4),
                         checkpoint_path=checkpoint_path(name), seed=seed, progress=progress)
    return train(contender.model, contender.batches, contender.loss, config,
                 eval_fn=contender.evaluate,
                 settings={"objective": contender.key, "sizes": asdict(contender.sizes),
                           "batch": contender.batch})


def from_course(key: str, course: Pretrained, text: SharedText) -> Contender:
    """Contender ``key`` with the weights of its course checkpoint ``course``
    (``ctxlib.pretrained.load(f"h2h_{key}")``: the same model, pretrained longer by
    ``scripts/pretrain.py``), reading ``text``, which must use the checkpoint's vocabulary
    (``shared_text(tokenizer=course.tokenizer)``)."""
    if course.name != f"h2h_{key}":
        raise ValueError(f"{course.name!r} is not the course checkpoint of {key!r} "
                         f"(that is 'h2h_{key}').")
    if text.tokenizer.merges != course.tokenizer.merges:
        raise ValueError(f"{course.name!r} was pretrained with another vocabulary: encode the "
                         "text with shared_text(tokenizer=course.tokenizer).")
    contender = build(key, text, Sizes(**course.info["sizes"]),
                      token_order=course.info.get("token_order"))
    if contender.model.config != course.model.config:
        raise ValueError(f"{course.name!r} holds a model of another shape: "
                         f"{course.model.config} against {contender.model.config}.")
    contender.model.load_state_dict(course.model.state_dict())
    return contender


def tokens_per_step(contender: Contender, samples: int = 20) -> float:
    """The mean number of tokens in a training batch (padding not counted)."""
    return mean_tokens_per_step(contender.batches, contender.tokens_in, samples)


# --- Reading every layer ------------------------------------------------------------------------


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Run the block in eval mode (no dropout), then put the model back in the mode it was
    in, even if the block fails."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def vocab_size(contender: Contender) -> int:
    """How many token ids the contender knows (the shared BPE vocabulary)."""
    return contender.vocab_size()


def _check_ids(contender: Contender, ids: Sequence[int], what: str) -> list[int]:
    """``ids`` as a list, after checking that every id is in the vocabulary and that they fit
    the context the contender was trained on (room left for [CLS] and [SEP], as everywhere)."""
    ids = [int(i) for i in ids]
    size = vocab_size(contender)
    outside = [i for i in ids if not 0 <= i < size]
    if outside:
        raise ValueError(f"{what} holds the id {outside[0]}, outside the vocabulary of {size} "
                         "(ids from another tokenizer?).")
    limit = contender.sizes.context - 2
    if len(ids) > limit:
        raise ValueError(f"{what} has {len(ids)} tokens, more than the {limit} the "
                         f"{contender.name} was trained to read: cut it first.")
    return ids


@torch.no_grad()
def token_layers(contender: Contender, token_lists: Sequence[Sequence[int]],
                 batch_size: int = 64) -> list[torch.Tensor]:
    """Every layer's vector at every token: for each list of ids, a tensor (L+1, T_i, D) on
    the CPU (layer 0 is the token encoder's output). Lists must fit the context."""
    if not token_lists:
        raise ValueError("no token lists were given: there is nothing to read.")
    too_long = max(len(t) for t in token_lists)
    if too_long > contender.sizes.context - 2:
        raise ValueError(f"a sequence of {too_long} tokens is longer than the context allows "
                         f"({contender.sizes.context - 2}, room left for [CLS] and [SEP]): "
                         "cut it first (word_layers does).")
    if min(len(t) for t in token_lists) == 0:
        raise ValueError("an empty token list has no layers to read.")
    for tokens in token_lists:
        _check_ids(contender, tokens, "a token list")
    device = contender.device()
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    out: list[torch.Tensor | None] = [None] * len(token_lists)
    with _evaluating(contender.model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, mask = pad_batch([list(token_lists[i]) for i in rows], pad_id=0)
            stacked = torch.stack(contender.layers(ids.to(device), mask.to(device)), dim=1)
            for b, i in enumerate(rows):
                out[i] = stacked[b, :, : len(token_lists[i])].float().cpu()
    return out


def word_layers(contender: Contender, tokenizer: BPETokenizer,
                sentences: Sequence[Sequence[str]]) -> list[torch.Tensor]:
    """Every layer's vector for every word: for each sentence (a list of words), a tensor
    (L+1, W_i, D), a word's vector being the mean over its tokens (first, last or mean: no
    choice suits every objective; the mean favours none). Tokens past the context are cut,
    so a long sentence may keep fewer words than it has."""
    limit = contender.sizes.context - 2
    encoded = [encode_words(tokenizer, list(words)) for words in sentences]
    states = token_layers(contender, [ids[:limit] for ids, _ in encoded])
    words = []
    for (_, word_ids), layers in zip(encoded, states):
        index = torch.tensor(word_ids[:limit])
        sums = layers.new_zeros(layers.shape[0], int(index[-1]) + 1, layers.shape[2])
        sums.index_add_(1, index, layers)
        words.append(sums / torch.bincount(index)[None, :, None])
    return words


def sentence_layers(contender: Contender, tokenizer: BPETokenizer,
                    texts: Sequence[str]) -> list[torch.Tensor]:
    """Every layer's mean vector over a text's tokens: for each text, a tensor (L+1, D)."""
    limit = contender.sizes.context - 2
    states = token_layers(contender, [tokenizer.encode(t)[:limit] or [0] for t in texts])
    return [layers.mean(dim=1) for layers in states]


def layer_probe_arm(train_layers: Sequence[torch.Tensor], train_labels: Sequence[torch.Tensor],
                    dev_layers: Sequence[torch.Tensor], dev_labels: Sequence[torch.Tensor],
                    num_classes: int, layers: Sequence[int], l2s: Sequence[float] = (1e-3, 1e-1),
                    metric: Callable | None = None) -> Arm:
    """A linear probe on one of ``layers`` of frozen features (L+1, positions, D) per item; the
    layer and the weight penalty are both chosen on the held-out slice, so the score of the
    arm never rests on a layer picked by its dev score."""
    arms = {j: probe_arm([x[j] for x in train_layers], train_labels,
                         [x[j] for x in dev_layers], dev_labels, num_classes, l2s, metric)
            for j in layers}

    def fit(rows, seed, setting):
        j, l2 = setting
        return j, arms[j].fit(rows, seed, l2)

    def score(fitted, rows):
        j, probe = fitted
        return arms[j].score(probe, rows)

    return Arm(fit, score, tuple((j, l2) for j in layers for l2 in l2s))


class _FineTuning:
    """Fine-tuning with few labels, for text classification (see ``fine_tune_arm``). Every fit
    trains a copy of the contender's model, so its own weights are never touched."""

    def __init__(self, contender: Contender, train_ids: list[list[int]], train_y: torch.Tensor,
                 dev_ids: list[list[int]], dev_y: torch.Tensor, num_classes: int, steps: int,
                 batch: int):
        self.contender, self.steps, self.batch = contender, steps, batch
        self.train_ids, self.train_y, self.dev_ids, self.dev_y = train_ids, train_y, dev_ids, dev_y
        self.num_classes = num_classes
        self.width = token_layers(contender, train_ids[:1])[0].shape[-1]

    def fresh(self) -> nn.ModuleDict:
        """A copy of the contender's model and a new linear classifier, in one container."""
        head = LayerProbe(1, self.width, self.num_classes, layer=0)
        model = copy.deepcopy(self.contender.model)
        return nn.ModuleDict({"model": model, "head": head.to(device_of(model))})

    def logits(self, both: nn.ModuleDict, token_lists: list[list[int]]) -> torch.Tensor:
        """Class logits (B, classes) from the mean of the top layer's token vectors."""
        ids, mask = _on(device_of(both), *pad_batch(token_lists, pad_id=0))
        top = self.contender.layers(ids, mask, model=both["model"])[-1]  # (B, T, D)
        weights = mask[..., None].to(top.dtype)
        mean = (top * weights).sum(1) / weights.sum(1)  # (B, D): padding not counted
        return both["head"](mean[:, None])  # the probe reads (B, 1 layer, D)

    def fit(self, rows: list[int], seed: int, lr: float) -> dict[str, torch.Tensor]:
        """The tuned weights (model and classifier) after ``steps`` steps on training ``rows``."""
        seed_everything(seed)
        both = self.fresh()
        picked = torch.tensor(rows)
        size = min(self.batch, len(rows))

        def draw(generator):  # a batch is the rows it holds; train() puts them on the device
            return picked[torch.randint(len(rows), (size,), generator=generator)]

        def loss(model, chosen):
            chosen = chosen.tolist()
            targets = self.train_y[chosen].to(device_of(model))
            return F.cross_entropy(self.logits(model, [self.train_ids[i] for i in chosen]),
                                   targets)

        config = TrainConfig(steps=self.steps, lr=lr, warmup_steps=max(1, self.steps // 10),
                             weight_decay=0.01, seed=seed, progress=False)
        train(both, draw, loss, config)
        return {k: v.detach().clone() for k, v in both.state_dict().items()}

    @torch.no_grad()
    def score(self, tuned: dict[str, torch.Tensor], rows: list[int] | None) -> float:
        """Accuracy of ``tuned`` on the dev set (``rows=None``) or on training ``rows``."""
        ids, gold = (self.dev_ids, self.dev_y) if rows is None else (
            [self.train_ids[i] for i in rows], self.train_y[rows])
        both = self.fresh()
        both.load_state_dict(tuned)
        with _evaluating(both):
            guesses = torch.cat([self.logits(both, ids[i : i + 64]).argmax(-1).cpu()
                                 for i in range(0, len(ids), 64)])
        return (guesses == gold).float().mean().item()


def fine_tune_arm(contender: Contender, tokenizer: BPETokenizer, train_texts: Sequence[str],
                  train_labels: Sequence[int], dev_texts: Sequence[str],
                  dev_labels: Sequence[int], num_classes: int, steps: int = 100,
                  batch: int = 16, lrs: Sequence[float] = (1e-4, 1e-3)) -> Arm:
    """Fine-tuning with few labels, for text classification: the whole model and a linear
    classifier (``ctxlib.probes.LayerProbe``) on the mean of its top layer's token vectors
    train together with the shared recipe (``ctxlib.train``: AdamW, warmup, cosine decay),
    ``steps`` steps of ``batch`` texts; the learning rate is chosen from ``lrs`` on the
    held-out slice. Every fit starts from a copy of the contender's weights."""
    limit = contender.sizes.context - 2
    tuning = _FineTuning(
        contender, [tokenizer.encode(t)[:limit] or [0] for t in train_texts],
        torch.tensor(list(train_labels)), [tokenizer.encode(t)[:limit] or [0] for t in dev_texts],
        torch.tensor(list(dev_labels)), num_classes, steps, batch)
    return Arm(tuning.fit, tuning.score, tuple(lrs))


# --- What each can do: score, fill in, generate -------------------------------------------------


@torch.no_grad()
def sentence_log_prob(contender: Contender, ids: Sequence[int]) -> float:
    """The mean log-probability per token of a sentence, as each objective can define it:

    - causal LM: log p(x_t | x_<t) for t >= 1 (the first token has no context);
    - biLM: the mean of the forward LM's log p(x_t | x_<t) and the backward LM's
      log p(x_t | x_>t);
    - masked LM: the pseudo-log-likelihood (Salazar et al. 2020), log p(x_t | all other
      tokens) with x_t masked, one token at a time: not a probability of the sentence;
    - permutation LM: log p(x_t | x_<t) in the left-to-right factorization order, which is
      one of the orders it was trained on.
    """
    ids = torch.tensor([_check_ids(contender, ids, "the sentence")], device=contender.device())
    if ids.shape[1] < 2:
        raise ValueError("a sentence needs at least 2 tokens to be scored.")
    with _evaluating(contender.model):
        return float(contender.log_prob(ids))


@torch.no_grad()
def fill_in(contender: Contender, left: Sequence[int], right: Sequence[int],
            k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` likeliest tokens for a blank between ``left`` and ``right`` (token ids), with
    their probabilities, as each objective can guess: the masked LM and the permutation LM
    read both sides at once; the biLM multiplies its forward LM's guess from the left by its
    backward LM's guess from the right (and renormalises); the causal LM reads only the left."""
    left = _check_ids(contender, left, "the text left of the blank")
    right = _check_ids(contender, right, "the text right of the blank")
    _check_ids(contender, [*left, 0, *right], "the text with its blank")
    if not 1 <= k <= vocab_size(contender):
        raise ValueError(f"k must be between 1 and the vocabulary's {vocab_size(contender)}, "
                         f"got {k}.")
    if not left and contender.needs_left:
        raise ValueError(f"the {contender.name} needs at least one token left of the blank.")
    with _evaluating(contender.model):
        log_probs = contender.blank_log_probs(left, right)
    top = log_probs.float().exp().topk(k)
    return list(zip(top.indices.tolist(), top.values.tolist()))


@torch.no_grad()
def generate(contender: Contender, prompt: Sequence[int], new_tokens: int,
             generator: torch.Generator, top_k: int = 20) -> list[int]:
    """Continue ``prompt`` token by token, each sampled from the ``top_k`` likeliest: the
    causal LM as in chapter 4; the permutation LM by predicting an unseen placeholder after
    the text (the left-to-right order); the biLM with its forward LM. The masked LM has no
    order to generate in."""
    if not contender.generates:
        raise ValueError("a masked LM has no left-to-right distribution to sample from.")
    ids = [int(i) for i in prompt]
    if not ids:
        raise ValueError("give at least one token of prompt.")
    _check_ids(contender, ids[-(contender.sizes.context - 2):], "the prompt")
    if not 1 <= top_k <= vocab_size(contender):
        raise ValueError(f"top_k must be between 1 and the vocabulary's "
                         f"{vocab_size(contender)}, got {top_k}.")
    with _evaluating(contender.model):
        for _ in range(new_tokens):
            logits = contender.next_token_logits(ids[-(contender.sizes.context - 1):])
            top = logits.float().topk(top_k)
            pick = torch.multinomial(top.values.softmax(-1).cpu(), 1, generator=generator)
            ids.append(int(top.indices[pick]))
    return ids


def seconds_and_tokens(history: History, tokens_per_step: float) -> tuple[float, float]:
    """A run's wall time (seconds, summed over its steps) and training tokens per second."""
    seconds = sum(history.seconds)
    return seconds, (len(history.steps) * tokens_per_step / seconds if seconds else math.nan)
