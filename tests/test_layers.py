"""ctxlib.layers against PyTorch's own implementations, after copying weights."""

import pytest
import torch
import torch.nn.functional as F

from ctxlib.layers import (
    MultiHeadAttention,
    TransformerBlock,
    attention,
    causal_mask,
    combine_masks,
    padding_mask,
)

B, T, C, H = 2, 7, 16, 4


@pytest.fixture
def x():
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def attention_mask():
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0  # the second sentence has 4 real tokens and 3 of padding
    return mask


def qkv(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, T, C // H, generator=g) for _ in range(3)]


def test_attention_equals_the_fused_kernel(attention_mask):
    q, k, v = qkv()
    for mask in [None, padding_mask(attention_mask), causal_mask(T),
                 combine_masks(padding_mask(attention_mask), causal_mask(T))]:
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out, weights = attention(q, k, v, mask)
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T))
        if mask is not None:
            assert (weights[~mask.expand_as(weights)] == 0).all()


def test_masks():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert padding_mask(torch.tensor([[1, 1, 0]])).shape == (1, 1, 1, 3)
    assert combine_masks(None, None) is None
    with pytest.raises(ValueError, match="no key to attend to"):
        attention(*qkv(), mask=torch.zeros(T, T, dtype=torch.bool))


def copy_into_torch(ours: MultiHeadAttention) -> torch.nn.MultiheadAttention:
    reference = torch.nn.MultiheadAttention(C, H, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(ours.qkv.weight)
        reference.in_proj_bias.copy_(ours.qkv.bias)
        reference.out_proj.weight.copy_(ours.out.weight)
        reference.out_proj.bias.copy_(ours.out.bias)
    return reference


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_equals_torch(x, attention_mask, causal):
    torch.manual_seed(0)
    ours = MultiHeadAttention(C, H, causal=causal).eval()
    reference = copy_into_torch(ours).eval()
    pad = attention_mask == 0
    expected, _ = reference(x, x, x, key_padding_mask=pad, need_weights=False,
                            attn_mask=~causal_mask(T) if causal else None)
    fused = ours(x, attention_mask)
    by_hand, weights = ours(x, attention_mask, return_weights=True)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(by_hand, fused, atol=1e-5, rtol=1e-4)
    assert weights.shape == (B, H, T, T) and (weights[1, :, :, 4:] == 0).all()


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_equals_torch_encoder_layer(x, attention_mask, norm_first):
    torch.manual_seed(0)
    ours = TransformerBlock(C, H, d_ff=32, norm_first=norm_first).eval()
    reference = torch.nn.TransformerEncoderLayer(C, H, 32, dropout=0.0, activation="gelu",
                                                 batch_first=True, norm_first=norm_first).eval()
    with torch.no_grad():
        reference.self_attn.in_proj_weight.copy_(ours.attn.qkv.weight)
        reference.self_attn.in_proj_bias.copy_(ours.attn.qkv.bias)
        reference.self_attn.out_proj.weight.copy_(ours.attn.out.weight)
        reference.self_attn.out_proj.bias.copy_(ours.attn.out.bias)
        for mine, theirs in [(ours.ff.fc, reference.linear1), (ours.ff.proj, reference.linear2),
                             (ours.ln1, reference.norm1), (ours.ln2, reference.norm2)]:
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    expected = reference(x, src_key_padding_mask=attention_mask == 0)
    real = attention_mask.bool()  # PyTorch's fast path zeroes padded outputs: compare real ones
    torch.testing.assert_close(ours(x, attention_mask)[real], expected[real], atol=1e-5, rtol=1e-4)


def test_causal_block_never_looks_ahead(x):
    block = TransformerBlock(C, H, causal=True).eval()
    for t in range(T - 1):
        changed = x.clone()
        changed[:, t + 1 :] += torch.randn_like(changed[:, t + 1 :])
        torch.testing.assert_close(block(changed)[:, : t + 1], block(x)[:, : t + 1])


def test_bad_input_is_a_clear_error(x):
    mha = MultiHeadAttention(C, H)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match=r"shape \(batch, time"):
        mha(x[0])
    with pytest.raises(ValueError, match="does not match d_model"):
        mha(x[..., :8])
    with pytest.raises(ValueError, match="attention_mask"):
        mha(x, torch.ones(B, T + 1))
    with pytest.raises(ValueError, match="unknown activation"):
        TransformerBlock(C, H, activation="swish")


def test_an_all_padding_row_gives_finite_outputs_and_gradients(x):
    """No query of an all-padding row has a key to attend to. The fused kernel and the
    hand-written path must agree, give no NaN (neither forward nor backward), and leave the
    other rows exactly as they are without that row."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(C, H, causal=False).eval()
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1] = 0  # the second row is padding only
    x = x.clone().requires_grad_()
    fused = mha(x, mask)
    by_hand, weights = mha(x, mask, return_weights=True)
    assert torch.isfinite(fused).all() and torch.isfinite(weights).all()
    torch.testing.assert_close(by_hand, fused, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused[:1], mha(x[:1], mask[:1]), atol=1e-6, rtol=0)
    fused.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters())
    causal = MultiHeadAttention(C, H, causal=True).eval()
    left_padded = torch.ones(B, T, dtype=torch.long)
    left_padded[1, :3] = 0  # causal + left padding: the first queries of row 1 see no key
    assert torch.isfinite(causal(x, left_padded)).all()
    assert torch.isfinite(causal(x, left_padded, return_weights=True)[1]).all()
