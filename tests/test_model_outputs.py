"""Every model's forward returns the one named output (``ctxlib.layers.ModelOutput``), whatever
its arguments: ``logits``, ``loss`` exactly when targets or labels are given, the top layer as
``last_hidden_state``, every layer as ``hidden_states`` exactly when asked for, and each model's
extras. No forward returns a bare tensor or a tuple whose meaning depends on the arguments."""

import pytest
import torch

from ctxlib.bert import (
    Bert,
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from ctxlib.elmo import BiLM, CharVocab, ELMoConfig
from ctxlib.gpt import GPT, GPTConfig, GPTForClassification
from ctxlib.layers import ModelOutput
from ctxlib.xlnet import (
    XLNet,
    XLNetConfig,
    XLNetForSequenceClassification,
    XLNetForTokenClassification,
    XLNetLM,
    permutation_batch,
)

B, T, V, C, LAYERS = 2, 6, 50, 16, 2


def ids(vocab=V):
    return torch.randint(1, vocab, (B, T), generator=torch.Generator().manual_seed(0))


def named(out, logits=None, loss=False, layers=None, width=C):
    """Check ``out`` is a ModelOutput, not a tuple, with logits of shape ``logits`` (or none),
    a scalar loss exactly when ``loss``, and ``layers`` hidden states (or none)."""
    assert isinstance(out, ModelOutput) and not isinstance(out, tuple)
    with pytest.raises(TypeError):
        out[0]  # named only: nothing is picked by position
    if logits is None:
        assert out.logits is None
    else:
        assert out.logits.shape == logits
    assert (out.loss is not None) == loss
    if loss:
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    if layers is None:
        assert out.hidden_states is None
    else:
        assert len(out.hidden_states) == layers
        assert all(h.shape[-1] == width for h in out.hidden_states)
        assert out.hidden_states[-1] is out.last_hidden_state
    assert out.last_hidden_state.shape[-1] == width
    return out


def test_gpt_in_every_call_form():
    model = GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=LAYERS, n_head=2, n_embd=C))
    x = ids()
    plain = named(model(x), logits=(B, T, V))
    assert plain.past is None
    named(model(x, targets=ids()), logits=(B, T, V), loss=True)
    cached = named(model(x, use_cache=True), logits=(B, T, V))
    assert len(cached.past) == LAYERS
    step = named(model(x[:, :1], past=cached.past, use_cache=True), logits=(B, 1, V))
    assert step.past[0][0].shape[2] == T + 1
    everything = named(model(x, targets=ids(), use_cache=True, all_layers=True),
                       logits=(B, T, V), loss=True, layers=LAYERS + 1)
    assert torch.equal(everything.logits, plain.logits)


def test_gpt_classifier_with_and_without_labels():
    model = GPTForClassification(
        GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=LAYERS, n_head=2, n_embd=C)), 3)
    mask = torch.ones(B, T, dtype=torch.long)
    out = named(model(ids(), mask), logits=(B, 3))
    assert out.lm_logits.shape == (B, T, V)
    named(model(ids(), mask, labels=torch.tensor([0, 2])), logits=(B, 3), loss=True)


def bert_config():
    return BertConfig(vocab_size=V, max_position=16, n_layer=LAYERS, n_head=2, d_model=C)


def test_bert_encoder_and_pretraining_heads():
    encoder = Bert(bert_config())
    out = named(encoder(ids()))  # an encoder has no logits
    assert out.pooled.shape == (B, C)
    named(encoder(ids(), all_layers=True), layers=LAYERS + 1)

    model = BertForPreTraining(bert_config())
    plain = named(model(ids()), logits=(B, T, V))
    assert plain.nsp_logits.shape == (B, 2) and plain.mlm_loss is plain.nsp_loss is None
    labels = torch.full((B, T), -100)
    labels[:, 2] = 7
    masked = named(model(ids(), mlm_labels=labels), logits=(B, V), loss=True)
    assert torch.equal(masked.loss, masked.mlm_loss) and masked.nsp_loss is None
    both = named(model(ids(), mlm_labels=labels, nsp_labels=torch.tensor([0, 1])),
                 logits=(B, V), loss=True)
    torch.testing.assert_close(both.loss, both.mlm_loss + both.nsp_loss)
    nsp = named(model(ids(), nsp_labels=torch.tensor([0, 1])), logits=(B, T, V), loss=True)
    assert torch.equal(nsp.loss, nsp.nsp_loss) and nsp.mlm_loss is None


def test_bert_task_heads():
    named(BertForSequenceClassification(bert_config(), 3)(ids()), logits=(B, 3))
    named(BertForTokenClassification(bert_config(), 5)(ids()), logits=(B, T, 5))
    span = named(BertForQuestionAnswering(bert_config())(ids()))
    assert span.start_logits.shape == span.end_logits.shape == (B, T)


def test_bilm_layers_and_losses():
    config = ELMoConfig(vocab_size=V, max_chars=10, filters=((1, 8), (2, 8)), dim=8, hidden=8,
                        layers=LAYERS, cutoffs=(20,))
    model = BiLM(config)
    chars = CharVocab(10).sentences([["the", "cat", "sat"], ["a", "dog"]])
    out = named(model(chars), layers=LAYERS + 1, width=16)
    assert out.forward_loss is None
    word_ids = torch.tensor([[3, 4, 5], [6, 7, 0]])
    with_loss = named(model(chars, word_ids), loss=True, layers=LAYERS + 1, width=16)
    model.eval()  # the same function for both (no dropout)
    forward_loss, backward_loss = model.lm_losses(chars, word_ids)
    out = model(chars, word_ids)
    assert torch.equal(out.forward_loss, forward_loss)
    assert torch.equal(out.backward_loss, backward_loss)
    torch.testing.assert_close(out.loss, (forward_loss + backward_loss) / 2)
    assert with_loss.loss.dim() == 0


def xlnet_config(mem_len=0):
    return XLNetConfig(vocab_size=V, n_layer=LAYERS, n_head=2, d_model=C, mem_len=mem_len)


def test_xlnet_encoder_and_lm():
    x = ids()
    encoder = XLNet(xlnet_config())
    out = named(encoder(x))
    assert out.mems is None and out.last_hidden_state.shape == (B, T, C)
    named(encoder(x, all_layers=True), layers=LAYERS + 1)

    model = XLNetLM(xlnet_config(mem_len=4))
    plain = named(model(x), logits=(B, T, V))
    assert len(plain.mems) == LAYERS
    perm_mask, target_mapping, labels = permutation_batch(
        x, num_predict=2, generator=torch.Generator().manual_seed(0))
    targets = named(model(x, perm_mask=perm_mask, target_mapping=target_mapping),
                    logits=(B, 2, V))
    assert targets.last_hidden_state.shape == (B, 2, C)  # the query stream at the targets
    named(model(x, perm_mask=perm_mask, target_mapping=target_mapping, labels=labels,
                mems=plain.mems), logits=(B, 2, V), loss=True)


def test_xlnet_task_heads():
    named(XLNetForSequenceClassification(xlnet_config(), 3)(ids()), logits=(B, 3))
    named(XLNetForTokenClassification(xlnet_config(), 5)(ids()), logits=(B, T, 5))
