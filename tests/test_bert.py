"""Our BERT against Hugging Face's, built from a small random config (no download), and the
pretraining data: masking rates, special tokens never masked, the loss over chosen positions."""

import random

import pytest
import torch
from transformers import BertConfig as HFBertConfig
from transformers import BertForPreTraining as HFBertForPreTraining
from transformers import BertModel as HFBertModel

from ctxlib.batches import IGNORE_INDEX
from ctxlib.bert import (
    Bert,
    BertConfig,
    BertForPreTraining,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    evaluate_pretraining,
    load_encoder,
    mask_tokens,
    masked_lm_floor,
    pack_pairs,
    pretraining_batch,
    pretraining_loss,
    sentence_pair,
    training_batch,
    validation_batch,
)
from ctxlib.tokenizers import BPETokenizer

VOCAB, POSITIONS = 99, 40


def hf_config(seed=0):
    torch.manual_seed(seed)
    return HFBertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=POSITIONS,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def batch(seed=1):
    """Two sequences, two segments, the second padded after 13 tokens."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (2, 20), generator=g)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 8:] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 13:] = 0
    return input_ids, token_type_ids, attention_mask


def test_encoder_equals_huggingface_with_padding_and_two_segments():
    hf = HFBertModel(hf_config()).eval()
    ours = Bert.from_huggingface(hf).eval()
    ids, segments, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=mask)
        out = ours(ids, segments, mask)
    hidden, pooled = out.last_hidden_state, out.pooled
    real = mask.bool()
    torch.testing.assert_close(hidden[real], expected.last_hidden_state[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled, expected.pooler_output, atol=1e-5, rtol=0)


def test_pretraining_heads_equal_huggingface():
    hf = HFBertForPreTraining(hf_config(seed=2)).eval()
    ours = BertForPreTraining.from_huggingface(hf).eval()
    ids, segments, mask = batch(seed=3)
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=mask)
        out = ours(ids, segments, mask)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], expected.prediction_logits[real], atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(out.nsp_logits, expected.seq_relationship_logits, atol=1e-5, rtol=0)


def test_pretraining_loss_equals_huggingface_and_counts_chosen_positions_only():
    hf = HFBertForPreTraining(hf_config(seed=4)).eval()
    ours = BertForPreTraining.from_huggingface(hf).eval()
    ids, segments, mask = batch(seed=5)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, [2, 5, 9]] = ids[0, [2, 5, 9]]
    labels[1, [1, 11]] = ids[1, [1, 11]]
    nsp = torch.tensor([0, 1])
    with torch.no_grad():
        expected = hf(input_ids=ids, token_type_ids=segments, attention_mask=mask, labels=labels,
                      next_sentence_label=nsp)
        out = ours(ids, segments, mask, mlm_labels=labels, nsp_labels=nsp)
        full = ours(ids, segments, mask)
    torch.testing.assert_close(out.loss, expected.loss, atol=1e-5, rtol=0)
    # The MLM loss by hand: the mean over the 5 chosen positions, and nothing else.
    log_probs = full.logits.log_softmax(-1)
    chosen = labels != IGNORE_INDEX
    by_hand = -log_probs[chosen].gather(1, labels[chosen][:, None]).mean()
    torch.testing.assert_close(out.mlm_loss, by_hand, atol=1e-5, rtol=0)
    all_positions = -log_probs.gather(2, ids[..., None]).mean()
    assert not torch.allclose(out.mlm_loss, all_positions, atol=1e-3)  # a loss over all differs


def test_padding_never_changes_real_tokens():
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=VOCAB, max_position=POSITIONS, n_layer=2, n_head=2,
                            d_model=32, dropout=0.0)).eval()
    ids = torch.randint(6, VOCAB, (1, 9))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 5)], dim=1).long()
    with torch.no_grad():
        alone, batched = model(ids), model(padded, attention_mask=mask)
    alone, pooled_alone = alone.last_hidden_state, alone.pooled
    batched, pooled_batched = batched.last_hidden_state, batched.pooled
    torch.testing.assert_close(batched[:, :9], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(pooled_batched, pooled_alone, atol=1e-5, rtol=0)


def test_bidirectional_every_position_sees_the_future():
    torch.manual_seed(0)
    model = Bert(BertConfig(vocab_size=VOCAB, max_position=POSITIONS, n_layer=1, n_head=2,
                            d_model=32, dropout=0.0)).eval()
    ids = torch.randint(6, VOCAB, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % VOCAB
    with torch.no_grad():
        a = model(ids).last_hidden_state
        b = model(changed).last_hidden_state
    assert not torch.allclose(a[0, 0], b[0, 0])  # unlike GPT, position 0 sees the last token


def test_heads_have_the_documented_shapes_and_load_the_encoder():
    config = BertConfig(vocab_size=VOCAB, max_position=POSITIONS, n_layer=1, n_head=2, d_model=32)
    pretrained = BertForPreTraining(config)
    ids, segments, mask = batch()
    assert BertForSequenceClassification(config, 3)(ids, segments, mask).logits.shape == (2, 3)
    assert BertForTokenClassification(config, 5)(ids, segments, mask).logits.shape == (2, 20, 5)
    span = BertForQuestionAnswering(config)(ids, segments, mask)
    start, end = span.start_logits, span.end_logits
    assert start.shape == end.shape == (2, 20)
    task = load_encoder(BertForSequenceClassification(config, 2), pretrained)
    for (name, a), b in zip(task.bert.state_dict().items(), pretrained.bert.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_input_gets_a_clear_error():
    model = Bert(BertConfig(vocab_size=VOCAB, max_position=POSITIONS, n_layer=1, n_head=2, d_model=32))
    ids, segments, mask = batch()
    with pytest.raises(ValueError, match="position table"):
        model(torch.zeros(1, POSITIONS + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((1, 4), VOCAB))
    with pytest.raises(ValueError, match="token_type_ids .* must match"):
        model(ids, segments[:, :5], mask)
    with pytest.raises(ValueError, match="attention_mask .* must match"):
        model(ids, segments, mask[:1])
    with pytest.raises(ValueError, match="segment ids"):
        model(ids, segments + 1, mask)
    with pytest.raises(ValueError, match=r"\(batch, time\)"):
        model(ids[0])
    with pytest.raises(TypeError, match="long"):
        model(ids.float())


def test_masking_rates_on_a_large_sample():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 500), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # [CLS]
    maskable[:, -50:] = False  # padding
    masked, labels = mask_tokens(ids, maskable, mask_id=4, random_ids=(10, 1000), generator=g)
    chosen = labels != IGNORE_INDEX
    assert not chosen[~maskable].any()  # special tokens and padding never chosen
    assert torch.equal(labels[chosen], ids[chosen])
    assert chosen[maskable].float().mean().item() == pytest.approx(0.15, abs=0.003)
    became_mask = (masked[chosen] == 4).float().mean().item()
    kept = (masked[chosen] == ids[chosen]).float().mean().item()
    assert became_mask == pytest.approx(0.8, abs=0.01)
    # 10% kept on purpose, plus the random draws that happen to hit the original token.
    assert kept == pytest.approx(0.1 + 0.1 / 990, abs=0.01)
    assert 1 - became_mask - kept == pytest.approx(0.1, abs=0.01)
    assert torch.equal(masked[~chosen], ids[~chosen])  # unchosen positions untouched


def test_sentence_pairs_follow_or_come_from_elsewhere():
    # Document d's sentences hold ids 100*d + i, so the origin of every token is known.
    documents = [[[100 * d + 10 * s + i for i in range(3)] for s in range(6)] for d in range(5)]
    rng = random.Random(0)
    labels = []
    for _ in range(400):
        a, b, label = sentence_pair(documents, max_tokens=12, rng=rng)
        labels.append(label)
        assert len(a) + len(b) <= 12 and a and b
        same_doc = a[0] // 100 == b[0] // 100
        if label == 0:
            assert same_doc and b[0] == a[-1] + 8  # B starts with the sentence after A's last
        else:
            assert not same_doc
    assert sum(labels) / len(labels) == pytest.approx(0.5, abs=0.08)


def test_pack_pairs_builds_cls_a_sep_b_sep_with_segments():
    input_ids, segments, mask, labels = pack_pairs([([7, 8], [9], 0), ([7], [8, 9, 10], 1)],
                                                   cls_id=2, sep_id=3, pad_id=0)
    assert input_ids.tolist() == [[2, 7, 8, 3, 9, 3, 0], [2, 7, 3, 8, 9, 10, 3]]
    assert segments.tolist() == [[0, 0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1, 1]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 0], [1] * 7]
    assert labels.tolist() == [0, 1]


def test_pretraining_batch_masks_only_ordinary_tokens_of_cls_a_sep_b_sep_pairs():
    bpe = BPETokenizer.train("the cat sat on the mat . the dog ate the log . " * 30, 280)
    sentences = ["the cat sat on the mat .", "the dog ate the log .", "the mat sat ."] * 4
    docs = [bpe.encode_batch(sentences) for _ in range(3)]
    cls_id, sep_id, pad_id, mask_id = (bpe.token_to_id(t)
                                       for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]"))
    ids, segments, attention, mlm_labels, nsp_labels = pretraining_batch(
        docs, 64, bpe, 20, random.Random(0), torch.Generator().manual_seed(0))
    assert ids.shape == segments.shape == attention.shape == mlm_labels.shape
    assert nsp_labels.shape == (64,) and set(nsp_labels.tolist()) == {0, 1}
    assert (ids[:, 0] == cls_id).all() and (attention.sum(1) <= 23).all()
    chosen = mlm_labels != IGNORE_INDEX
    special = len(bpe.special_tokens)
    assert chosen.any() and (mlm_labels[chosen] >= special).all()  # never a special token
    assert not (chosen & (attention == 0)).any()  # never padding
    assert ((ids == mask_id) <= chosen).all()  # [MASK] only where chosen
    unchanged = ids.clone()
    unchanged[chosen] = mlm_labels[chosen]
    assert ((unchanged == sep_id).sum(1) == 2).all() and (unchanged[attention == 0] == pad_id).all()
    # the same seeds give the same batch: a resumed run draws what an uninterrupted one would
    again = pretraining_batch(docs, 64, bpe, 20, random.Random(0), torch.Generator().manual_seed(0))
    assert torch.equal(again[0], ids) and torch.equal(again[3], mlm_labels)
    assert all(torch.equal(a, b) for a, b in zip(validation_batch(docs, 64, bpe, 20), again))
    # the training loop's generator seeds the pair sampler too: one generator, one stream
    first, second = (training_batch(docs, 64, bpe, 20, torch.Generator().manual_seed(7))
                     for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = training_batch(docs, 64, bpe, 20, torch.Generator().manual_seed(8))
    assert not torch.equal(other[4], first[4])  # other pairs (another seed)
    model = BertForPreTraining(BertConfig(vocab_size=bpe.vocab_size, n_layer=1, n_head=2,
                                          d_model=16, max_position=32, dropout=0.0))
    out = model(ids, segments, attention, mlm_labels=mlm_labels, nsp_labels=nsp_labels)
    batch = (ids, segments, attention, mlm_labels, nsp_labels)
    assert pretraining_loss(model, batch).item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert pretraining_loss(model, batch, use_nsp=False).item() == pytest.approx(
        out.mlm_loss.item(), rel=1e-5)
    scores = evaluate_pretraining(model, batch, chunk=64)
    assert scores["mlm_loss"] == pytest.approx(out.mlm_loss.item(), rel=1e-5)
    expected = (out.nsp_logits.argmax(-1) == nsp_labels).float().mean().item()
    assert scores["nsp_accuracy"] == pytest.approx(expected)
    assert model.training  # put back in training mode


def test_pretraining_loss_checks_its_labels():
    """No masked position would make the MLM loss a mean over nothing (NaN); a label outside the
    vocabulary or an NSP label other than 0/1 would fail deep inside the loss."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=VOCAB, max_position=POSITIONS, n_layer=1,
                                          n_head=2, d_model=32, dropout=0.0))
    ids, segments, mask = batch()
    nsp = torch.tensor([0, 1])
    nothing_chosen = torch.full_like(ids, IGNORE_INDEX)
    with pytest.raises(ValueError, match="every one of the 40 mlm_labels is -100.*masking"):
        model(ids, segments, mask, mlm_labels=nothing_chosen, nsp_labels=nsp)
    labels = nothing_chosen.clone()
    labels[0, 3] = VOCAB
    with pytest.raises(ValueError, match=rf"mlm_labels must lie in \[0, {VOCAB}\)"):
        model(ids, segments, mask, mlm_labels=labels, nsp_labels=nsp)
    labels[0, 3] = ids[0, 3]
    with pytest.raises(ValueError, match=r"nsp_labels must lie in \[0, 2\)"):
        model(ids, segments, mask, mlm_labels=labels, nsp_labels=torch.tensor([0, 2]))
    assert torch.isfinite(model(ids, segments, mask, mlm_labels=labels, nsp_labels=nsp).loss)


def test_an_all_padding_row_changes_nothing_and_makes_no_nan():
    """A batch may hold a row that is padding only; no query of that row has a key to attend
    to. The other rows must not change, and nothing may become NaN (not even in that row,
    whose NaN would reach every gradient through the loss's backward pass)."""
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=VOCAB, max_position=POSITIONS, n_layer=2,
                                          n_head=2, d_model=32, dropout=0.0))
    ids, segments, mask = batch()
    padded = torch.cat([ids, torch.zeros_like(ids[:1])])
    padded_mask = torch.cat([mask, torch.zeros_like(mask[:1])])
    out = model.bert(padded, torch.cat([segments, segments[:1]]), padded_mask)
    hidden, pooled = out.last_hidden_state, out.pooled
    expected = model.bert(ids, segments, mask).last_hidden_state
    assert torch.isfinite(hidden).all() and torch.isfinite(pooled).all()
    real = mask.bool()
    torch.testing.assert_close(hidden[:2][real], expected[real], atol=1e-5, rtol=0)
    weights = model.bert.attention_weights(padded, attention_mask=padded_mask)
    assert all(torch.isfinite(w).all() for w in weights)


def test_the_masked_lm_floor_is_the_best_context_free_loss():
    """The floor's closed form equals what the best context-free predictor measures on a large
    sample masked by mask_tokens itself: the conditional entropy of the target given the input
    token, counted from the sample. It sits below the frequency guess, by BERT's 20%."""
    mask_id, random_ids = 2, (3, 10)  # 3 special ids, 7 ordinary tokens
    frequencies = torch.tensor([1e-6] * 3 + [0.4, 0.2, 0.15, 0.1, 0.08, 0.05, 0.02])
    frequencies = frequencies / frequencies.sum()
    generator = torch.Generator().manual_seed(0)
    ids = torch.multinomial(frequencies, 400 * 1000, replacement=True, generator=generator)
    ids = ids.view(400, 1000).clamp(min=3)
    masked, labels = mask_tokens(ids, ids >= 3, mask_id, random_ids, generator, rate=0.5)
    batch = (masked, None, None, labels)
    floor = masked_lm_floor(frequencies, batch, mask_id, random_ids, chunk=len(ids))

    chosen = labels != IGNORE_INDEX
    seen, target = masked[chosen], labels[chosen]
    pair_counts = torch.zeros(10, 10).index_put_((seen, target), torch.ones(len(seen)),
                                                 accumulate=True)
    posterior = pair_counts / pair_counts.sum(1, keepdim=True).clamp(min=1)
    measured = -posterior[seen, target].log().mean().item()
    assert floor == pytest.approx(measured, abs=0.005)

    by_frequency = -frequencies[target].log().mean().item()
    assert floor < by_frequency - 0.05
    with pytest.raises(ValueError, match="summing to 1"):
        masked_lm_floor(frequencies * 2, batch, mask_id, random_ids)
