"""Every model trains under ``torch.autocast`` in float16 and bfloat16: one forward pass, its loss
and a backward pass give a finite loss and finite gradients, padding included.

float16 ends at ±65504, so a mask value such as -1e30 cannot even be stored, and a row that is
padding only (no key to attend to) must not turn into NaN, which would reach every gradient.
Tiny random models on the CPU: each case takes a fraction of a second.
"""

import pytest
import torch

from ctxlib.batches import IGNORE_INDEX, pad_batch
from ctxlib.bert import BertConfig, BertForPreTraining
from ctxlib.elmo import BiLM, CharVocab, ELMoConfig
from ctxlib.gpt import GPT, GPTConfig
from ctxlib.xlnet import XLNetConfig, XLNetLM, permutation_batch

VOCAB = 53
DTYPES = pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)


def ids(shape, seed=0):
    return torch.randint(1, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def assert_trains_in(dtype, model, loss_fn):
    """Run ``loss_fn()`` under autocast, then backward; the loss and every gradient are finite."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=dtype):
        loss = loss_fn()
    assert torch.isfinite(loss), loss
    loss.backward()
    for name, param in model.named_parameters():
        if param.grad is not None:  # (parameters that the batch does not reach have none)
            assert torch.isfinite(param.grad).all(), name


@DTYPES
def test_gpt(dtype):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=16))
    x = ids((3, 12))  # GPT takes no attention mask: a plain batch
    assert_trains_in(dtype, model, lambda: model(x[:, :-1], targets=x[:, 1:]).loss)


@DTYPES
def test_bert_pretraining_with_padding_and_an_all_padding_row(dtype):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=VOCAB, max_position=16, n_layer=2,
                                          n_head=2, d_model=16, dropout=0.1))
    input_ids, mask = pad_batch([ids((10,), 1).tolist(), ids((6,), 2).tolist(), []], max_len=10)
    labels = torch.where(mask.bool(), input_ids, IGNORE_INDEX)  # predict every real token
    nsp = torch.tensor([0, 1, 0])
    assert_trains_in(dtype, model, lambda: model(input_ids, attention_mask=mask,
                                                 mlm_labels=labels, nsp_labels=nsp).loss)


@DTYPES
def test_elmo_bilm_with_padding(dtype):
    # (ELMo refuses an empty sentence, so there is no all-padding row to try)
    torch.manual_seed(0)
    config = ELMoConfig(vocab_size=VOCAB, max_chars=8, filters=((1, 8), (2, 8)), dim=16,
                        hidden=24, layers=2, dropout=0.1, cutoffs=(20,))
    model = BiLM(config)
    words = [["a", "padded", "sentence"], ["and", "a", "longer", "one", "than", "that"]]
    char_ids = CharVocab(config.max_chars).sentences(words)
    word_ids = ids((2, 6), 3)

    def loss():
        forward, backward = model.lm_losses(char_ids, word_ids)
        return (forward + backward) / 2

    assert_trains_in(dtype, model, loss)


@DTYPES
def test_xlnet_lm_with_padding_and_an_all_padding_row(dtype):
    torch.manual_seed(0)
    model = XLNetLM(XLNetConfig(vocab_size=VOCAB, n_layer=2, n_head=2, d_model=16, dropout=0.1))
    input_ids, mask = pad_batch([ids((8,), 4).tolist(), ids((5,), 5).tolist(), []],
                                max_len=8, side="left")
    perm_mask, target_mapping, labels = permutation_batch(input_ids, 3,
                                                          torch.Generator().manual_seed(0))
    # targets that fall on padding are not scored
    on_padding = (target_mapping * (1 - mask[:, None, :])).sum(dim=-1).bool()  # (B, N)
    labels = labels.masked_fill(on_padding, IGNORE_INDEX)
    assert_trains_in(dtype, model, lambda: model(input_ids, attention_mask=mask,
                                                 perm_mask=perm_mask,
                                                 target_mapping=target_mapping,
                                                 labels=labels).loss)
