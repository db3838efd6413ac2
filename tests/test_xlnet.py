"""Our XLNet against Hugging Face's, built from a small random config (no download), and the
property that defines the permutation objective."""

import pytest
import torch
import transformers

from ctxlib.batches import IGNORE_INDEX, pad_batch
from ctxlib.xlnet import (
    XLNet,
    XLNetConfig,
    XLNetForSequenceClassification,
    XLNetForTokenClassification,
    XLNetLM,
    load_encoder,
    perm_mask_from_order,
    permutation_batch,
    permutation_masks,
    relative_index,
)

VOCAB = 61


def hf_config(seed=0, **overrides):
    torch.manual_seed(seed)
    settings = {"vocab_size": VOCAB, "d_model": 32, "n_layer": 3, "n_head": 4, "d_inner": 64,
                "dropout": 0.0, "mem_len": 6, "clamp_len": -1, "num_labels": 3}
    settings.update(overrides)
    return transformers.XLNetConfig(**settings)


def pair(seed=0, T=9, B=2):
    hf = transformers.XLNetLMHeadModel(hf_config(seed)).eval()
    return hf, XLNetLM.from_huggingface(hf).eval(), torch.randint(
        0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def close(ours, theirs):
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@torch.no_grad()
def test_logits_equal_huggingface_plain_padded_and_two_segments():
    hf, ours, ids = pair()
    close(ours(ids).logits, hf(ids).logits)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    segments = torch.zeros_like(ids)
    segments[:, 5:] = 1
    close(ours(ids, segments, mask).logits,
          hf(ids, token_type_ids=segments, attention_mask=mask).logits)


@torch.no_grad()
def test_logits_equal_huggingface_with_perm_mask_and_target_mapping():
    hf, ours, ids = pair(seed=1)
    perm_mask, target_mapping, _ = permutation_batch(ids, 4, torch.Generator().manual_seed(3))
    segments = (torch.arange(ids.shape[1]) >= 4).long().expand_as(ids)
    got = ours(ids, segments, perm_mask=perm_mask, target_mapping=target_mapping).logits
    expected = hf(ids, token_type_ids=segments, perm_mask=perm_mask,
                  target_mapping=target_mapping).logits
    assert got.shape == (2, 4, VOCAB)
    close(got, expected)


@torch.no_grad()
def test_memory_carried_across_two_segments_equals_huggingface():
    hf, ours, ids = pair(seed=2, T=8)
    first_hf = hf(ids, use_mems=True)
    first = ours(ids)
    for theirs, mine in zip(first_hf.mems, first.mems, strict=True):
        close(mine, theirs.transpose(0, 1))  # the reference keeps memory time-first
        assert mine.shape == (2, 6, 32)  # mem_len = 6 of the 8 tokens
    nxt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(9))
    perm_mask, target_mapping, _ = permutation_batch(nxt, 2, torch.Generator().manual_seed(4))
    segments = torch.ones_like(nxt)  # memory counts as segment 0: a real segment difference
    got = ours(nxt, segments, perm_mask=perm_mask, target_mapping=target_mapping, mems=first.mems)
    expected = hf(nxt, token_type_ids=segments, perm_mask=perm_mask,
                  target_mapping=target_mapping, mems=first_hf.mems, use_mems=True)
    close(got.logits, expected.logits)
    for theirs, mine in zip(expected.mems, got.mems, strict=True):
        close(mine, theirs.transpose(0, 1))


@torch.no_grad()
def test_clamped_distances_equal_huggingface():
    hf = transformers.XLNetLMHeadModel(hf_config(seed=3, clamp_len=2)).eval()
    for layer in hf.transformer.layer:  # make positions matter more than at initialisation
        layer.rel_attn.r.mul_(30)
    ours = XLNetLM.from_huggingface(hf).eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    close(ours(ids).logits, hf(ids).logits)
    unclamped = transformers.XLNetLMHeadModel(hf_config(seed=3)).eval()
    unclamped.load_state_dict(hf.state_dict())
    # clamping changed the logits by far more than the tolerance of the comparison above
    assert (unclamped(ids).logits - ours(ids).logits).abs().max() > 1e-4


def test_loss_and_gradients_equal_huggingface():
    hf, ours, ids = pair(seed=4)
    perm_mask, target_mapping, labels = permutation_batch(ids, 3, torch.Generator().manual_seed(0))
    labels[0, 1] = IGNORE_INDEX
    expected = hf(ids, perm_mask=perm_mask, target_mapping=target_mapping, labels=labels).loss
    got = ours(ids, perm_mask=perm_mask, target_mapping=target_mapping, labels=labels).loss
    close(got, expected)
    expected.backward()
    got.backward()
    close(ours.xlnet.word_embedding.weight.grad, hf.transformer.word_embedding.weight.grad)
    close(ours.xlnet.mask_emb.grad, hf.transformer.mask_emb.grad.reshape(-1))


@torch.no_grad()
def test_heads_equal_huggingface():
    config = hf_config(seed=5)
    hf = transformers.XLNetForSequenceClassification(config).eval()
    ours = XLNetForSequenceClassification.from_huggingface(hf).eval()
    ids, mask = pad_batch([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0, side="left")
    close(ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits)
    hf = transformers.XLNetForTokenClassification(config).eval()
    ours = XLNetForTokenClassification.from_huggingface(hf).eval()
    close(ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits)


def test_relative_index_is_the_reference_relative_shift():
    """The reference turns scores against every distance into scores against every key by a
    reshape ("relative shift"); our index must pick the same entries."""
    T, M, B = 5, 3, 1
    K, P = M + T, M + 2 * T
    by_distance = torch.randn(B, 1, T, P)
    shifted = transformers.models.xlnet.modeling_xlnet.XLNetRelativeAttention.rel_shift_bnij(
        by_distance, klen=K)
    index = relative_index(torch.arange(T)[None], T, K)
    torch.testing.assert_close(by_distance.gather(-1, index), shifted, atol=0, rtol=0)


def test_left_padding_changes_nothing_for_real_tokens():
    """Relative positions: padding in front moves a sentence but no distance between its tokens,
    and padding is never attended to, so the real tokens' states are exactly those unpadded."""
    model = XLNet(XLNetConfig(vocab_size=VOCAB, n_layer=2, d_model=32, dropout=0.0)).eval()
    sentence = [4, 8, 15, 16, 23]
    ids, mask = pad_batch([sentence, sentence + [42, 7, 9]], pad_id=0, side="left")
    with torch.no_grad():
        alone = model(torch.tensor([sentence])).last_hidden_state
        batched = model(ids, attention_mask=mask).last_hidden_state
    close(batched[0, 3:], alone[0])


def test_permutation_masks_follow_the_order():
    """With every token a target, token i may see exactly the tokens before it in the order
    (for the order 0, 1, ..., T-1 that is a causal mask); with context, the context is seen by
    all and sees no target."""
    T = 6
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        order = torch.randperm(T, generator=g)
        rank = torch.empty(T, dtype=torch.long)
        rank[order] = torch.arange(T)
        expected = (rank[:, None] <= rank[None, :]).float()  # j not before i in the order
        torch.testing.assert_close(perm_mask_from_order(order, T), expected)
    perm_mask, order = permutation_masks(T, 2, g)
    context = torch.ones(T, dtype=torch.bool)
    context[order] = False
    assert perm_mask[:, context].sum() == 0  # everybody sees the context
    assert perm_mask[context][:, order].all()  # the context sees no target
    assert perm_mask[order[1], order[0]] == 0 and perm_mask[order[0], order[1]] == 1


def test_the_left_to_right_order_gives_a_causal_mask():
    T = 5
    causal = torch.ones(T, T).triu()  # i may not see j >= i (the content stream sees itself)
    torch.testing.assert_close(perm_mask_from_order(torch.arange(T), T), causal)
    with pytest.raises(ValueError, match="each position"):
        perm_mask_from_order(torch.tensor([0, 1, 1]), 2)


def test_spans_and_partial_prediction_counts():
    g = torch.Generator().manual_seed(1)
    for max_span in (1, 3):
        _, targets = permutation_masks(24, 6, g, max_span=max_span)
        assert len(targets) == 6 and len(set(targets.tolist())) == 6
    with pytest.raises(ValueError, match="num_predict"):
        permutation_masks(5, 5, g)  # no context left


def test_every_row_of_a_permutation_batch_is_the_partial_prediction_mask_of_its_order():
    """Built for the whole batch at once, each row still holds: its targets are the last N of
    a permutation (read back from target_mapping), the labels are their tokens, and the mask
    lets a target see the context and the earlier targets only, the context see no target."""
    B, T, N = 32, 20, 4
    g = torch.Generator().manual_seed(3)
    for max_span in (1, 3):
        ids = torch.randint(0, VOCAB, (B, T), generator=g)
        perm_mask, mapping, labels = permutation_batch(ids, N, g, max_span=max_span)
        assert perm_mask.shape == (B, T, T) and mapping.shape == (B, N, T)
        for b in range(B):
            assert torch.equal(mapping[b].sum(-1), torch.ones(N))  # one position per target
            targets = mapping[b].argmax(-1)
            assert len(set(targets.tolist())) == N
            assert torch.equal(labels[b], ids[b, targets])
            rank = torch.full((T,), -1)
            rank[targets] = torch.arange(N)
            for i in range(T):
                for j in range(T):
                    sees = rank[j] < 0 or (rank[i] >= 0 and rank[j] < rank[i])
                    assert perm_mask[b, i, j] == (0 if sees else 1), (b, i, j)


def test_a_permutation_batch_draws_what_one_order_per_sequence_draws():
    """The batch is built at once, but draws the same orders as sampling them sequence by
    sequence (so a run's batches, and its checkpoints, are what they were)."""
    ids = torch.randint(0, VOCAB, (8, 16), generator=torch.Generator().manual_seed(0))
    for max_span in (1, 2):
        batched = permutation_batch(ids, 3, torch.Generator().manual_seed(5), max_span)
        g = torch.Generator().manual_seed(5)
        rows = [permutation_masks(16, 3, g, max_span) for _ in range(len(ids))]
        assert torch.equal(batched[0], torch.stack([mask for mask, _ in rows]))
        targets = torch.stack([t for _, t in rows])
        assert torch.equal(batched[2], ids.gather(1, targets))
        assert torch.equal(batched[1].argmax(-1), targets)


@torch.no_grad()
def test_a_target_with_nothing_to_see_averages_over_everything_as_in_the_reference():
    """Why the sampler keeps context: with every token predicted and no memory, the first target
    may attend to nothing, and the finite mask value turns that into a uniform average over all
    keys, its own token included, exactly as the reference computes it."""
    hf, model, ids = pair(seed=6, T=6, B=1)
    order = torch.arange(6)
    perm_mask = perm_mask_from_order(order, 6)[None]
    first = torch.eye(6)[None, :1]  # the first target of the order: position 0
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % VOCAB
    before = model(ids, perm_mask=perm_mask, target_mapping=first).logits
    after = model(changed, perm_mask=perm_mask, target_mapping=first).logits
    close(before, hf(ids, perm_mask=perm_mask, target_mapping=first).logits)
    assert (before - after).abs().max() > 1e-7


@torch.no_grad()
def test_a_prediction_never_sees_its_own_token_nor_later_ones_in_the_order():
    """The defining property: the prediction at step k of the order is unchanged when the
    target's own token or any token after step k changes, and does change with earlier ones."""
    model = XLNetLM(XLNetConfig(vocab_size=VOCAB, n_layer=2, d_model=32, dropout=0.0,
                                mem_len=4)).eval()
    T, N = 10, 5
    ids = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(0))
    perm_mask, target_mapping, _ = permutation_batch(ids, N, torch.Generator().manual_seed(1))
    order = target_mapping[0].argmax(-1)  # target positions in the order of prediction
    memory = model(ids).mems  # a memory too, which every prediction may see

    def predictions(x):
        return model(x, perm_mask=perm_mask, target_mapping=target_mapping, mems=memory).logits[0]

    base = predictions(ids)
    for k in range(N):
        changed = ids.clone()
        changed[0, order[k:]] = (changed[0, order[k:]] + 1) % VOCAB  # itself and later ones
        close(predictions(changed)[k], base[k])
        if k > 0:
            changed = ids.clone()
            changed[0, order[k - 1]] = (changed[0, order[k - 1]] + 1) % VOCAB
            assert (predictions(changed)[k] - base[k]).abs().max() > 1e-6


def test_memory_is_detached_and_kept_to_mem_len():
    model = XLNetLM(XLNetConfig(vocab_size=VOCAB, n_layer=2, d_model=32, mem_len=4))
    out = model(torch.randint(0, VOCAB, (2, 3)))
    assert [m.shape for m in out.mems] == [(2, 3, 32)] * 2
    out = model(torch.randint(0, VOCAB, (2, 3)), mems=out.mems)
    assert [m.shape for m in out.mems] == [(2, 4, 32)] * 2  # 3 old + 3 new, newest 4 kept
    assert not any(m.requires_grad for m in out.mems)
    assert XLNetLM(XLNetConfig(vocab_size=VOCAB, d_model=32)).forward(
        torch.zeros(1, 2, dtype=torch.long)).mems is None  # mem_len 0: no memory


def test_load_encoder_copies_the_pretrained_weights():
    config = XLNetConfig(vocab_size=VOCAB, n_layer=1, d_model=32)
    pretrained = XLNetLM(config)
    task = load_encoder(XLNetForSequenceClassification(config, 2), pretrained)
    torch.testing.assert_close(task.xlnet.word_embedding.weight,
                               pretrained.xlnet.word_embedding.weight)


def test_bad_input_is_a_clear_error():
    model = XLNetLM(XLNetConfig(vocab_size=VOCAB, n_layer=2, d_model=32, mem_len=3))
    ids = torch.randint(0, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="perm_mask"):
        model(ids, perm_mask=torch.zeros(2, 5, 4))
    with pytest.raises(ValueError, match="target_mapping"):
        model(ids, target_mapping=torch.zeros(2, 1, 6))
    with pytest.raises(ValueError, match="single 1"):
        model(ids, target_mapping=torch.ones(2, 1, 5))
    with pytest.raises(ValueError, match="another width"):
        other = XLNetLM(XLNetConfig(vocab_size=VOCAB, n_layer=2, d_model=16, n_head=2, mem_len=3))
        model(ids, mems=other(ids).mems)
    with pytest.raises(ValueError, match="layers"):
        model(ids, mems=model(ids).mems[:1])
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((1, 3), VOCAB))
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="pad on the left"):
        classifier = XLNetForSequenceClassification(model.config, 2)
        classifier(ids, attention_mask=torch.tensor([[1, 1, 1, 1, 0]] * 2))
    with pytest.raises(ValueError, match="bi_data"):
        XLNetLM.from_huggingface(transformers.XLNetLMHeadModel(hf_config(bi_data=True)))


def test_causal_relative_shift_check_accepts_the_zero_pad_trick_and_rejects_others():
    """Exercise 6.2: Transformer-XL's shift (zero column, two views) passes; XLNet's
    bidirectional shift, the scores left as they are, and a shift off by one fail."""
    from ctxlib.checks import ExerciseFailed, check_causal_relative_shift

    def shift(scores):
        B, H, T, K = scores.shape
        padded = torch.cat([scores.new_zeros(B, H, T, 1), scores], dim=-1)  # (B, H, T, K+1)
        return padded.view(B, H, K + 1, T)[:, :, 1:].reshape(B, H, T, K)

    def off_by_one(scores):
        return shift(scores).roll(1, dims=-1)

    check_causal_relative_shift(shift)
    for wrong in (lambda scores: scores, off_by_one,
                  lambda scores: scores.flip(-1)):
        with pytest.raises(ExerciseFailed, match="column T - 1 - i"):
            check_causal_relative_shift(wrong)


def test_lm_loss_checks_its_labels():
    """Every label ignored would make the loss a mean over nothing (NaN); a label outside the
    vocabulary would fail deep inside the loss."""
    _, model, ids = pair(seed=2)
    perm_mask, target_mapping, labels = permutation_batch(ids, 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="every one of the 6 labels is -100"):
        model(ids, perm_mask=perm_mask, target_mapping=target_mapping,
              labels=torch.full_like(labels, IGNORE_INDEX))
    labels[1, 2] = VOCAB
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, {VOCAB}\) or be -100"):
        model(ids, perm_mask=perm_mask, target_mapping=target_mapping, labels=labels)


def test_a_pretraining_batch_is_two_consecutive_segments_each_with_its_own_order():
    from ctxlib.xlnet import pretraining_batch

    stream = torch.arange(1000)  # each token's id is its position: windows are easy to read
    generator = torch.Generator().manual_seed(0)
    first, second = pretraining_batch(stream, 4, 8, 2, generator)
    assert torch.equal(second[0], first[0] + 8)  # the second segment follows the first
    for ids, perm_mask, target_mapping, labels in (first, second):
        assert perm_mask.shape == (4, 8, 8) and target_mapping.shape == (4, 2, 8)
        # the labels are the tokens at the positions the target mapping points to
        assert torch.equal(labels, (target_mapping * ids[:, None].float()).sum(-1).long())
    assert not torch.equal(first[1], second[1])  # a fresh order per segment


def test_pretraining_loss_reads_the_second_segment_with_the_first_as_memory():
    from ctxlib.xlnet import pretraining_batch, pretraining_loss

    torch.manual_seed(0)
    model = XLNetLM(XLNetConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, dropout=0.0,
                                mem_len=8)).eval()
    batch = pretraining_batch(torch.randint(0, 50, (200,)), 2, 8, 2,
                              torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = pretraining_loss(model, batch)
        out = model(*batch[0][:1], perm_mask=batch[0][1], target_mapping=batch[0][2],
                    labels=batch[0][3])
        second = model(batch[1][0], perm_mask=batch[1][1], target_mapping=batch[1][2],
                       labels=batch[1][3], mems=out.mems)
    torch.testing.assert_close(loss, (out.loss + second.loss) / 2)
