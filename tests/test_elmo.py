"""ELMo has no maintained reference implementation on current PyTorch, so these tests check the
properties that define it: each direction sees only its own side, padding changes nothing, each
direction learns its own targets, and the scalar mix is the paper's formula."""

import math

import pytest
import torch

from ctxlib.batches import IGNORE_INDEX
from ctxlib.elmo import (
    BOW_CHAR,
    EOW_CHAR,
    BiLM,
    CharVocab,
    ELMoConfig,
    ScalarMix,
    reverse_padded,
    shifted_targets,
)

CONFIG = ELMoConfig(vocab_size=30, max_chars=8, filters=((1, 8), (2, 8), (3, 16)), dim=16,
                    hidden=24, layers=2, dropout=0.0, cutoffs=(10,))
CHARS = CharVocab(CONFIG.max_chars)


@pytest.fixture(scope="module")
def bilm():
    torch.manual_seed(0)
    return BiLM(CONFIG).eval()


def random_chars(batch, time, seed=0):
    """Random real words: begin mark, 1-4 random bytes, end mark."""
    g = torch.Generator().manual_seed(seed)
    words = [["".join(chr(97 + int(c)) for c in torch.randint(0, 26, (int(n),), generator=g))
              for n in torch.randint(1, 5, (time,), generator=g)] for _ in range(batch)]
    return CHARS.sentences(words)


def test_layers_have_the_documented_shapes(bilm):
    layers = bilm(random_chars(3, 7)).hidden_states
    assert len(layers) == CONFIG.layers + 1
    for h in layers:
        assert h.shape == (3, 7, 2 * CONFIG.dim)
    x = layers[0]
    torch.testing.assert_close(x[..., : CONFIG.dim], x[..., CONFIG.dim :])  # [x; x]


def test_a_word_gets_the_same_token_encoding_anywhere(bilm):
    chars = CHARS.sentences([["the", "cat", "saw", "the", "dog"], ["unseenword", "the"]])
    x = bilm(chars).hidden_states[0]
    torch.testing.assert_close(x[0, 0], x[0, 3])
    torch.testing.assert_close(x[0, 0], x[1, 1])


def test_forward_states_never_see_later_words(bilm):
    a = random_chars(2, 9, seed=1)
    b = a.clone()
    t = 4
    b[:, t + 1 :] = random_chars(2, 9 - t - 1, seed=2)  # change every word after t
    _, fa, ba, _ = bilm.directions(a)
    _, fb, bb, _ = bilm.directions(b)
    for ha, hb in zip(fa, fb):
        torch.testing.assert_close(ha[:, : t + 1], hb[:, : t + 1], atol=0, rtol=0)
        assert not torch.allclose(ha[:, t + 1 :], hb[:, t + 1 :])  # the change is visible later
    assert not torch.allclose(ba[-1][:, : t + 1], bb[-1][:, : t + 1])  # ... and backwards


def test_backward_states_never_see_earlier_words(bilm):
    a = random_chars(2, 9, seed=3)
    b = a.clone()
    t = 4
    b[:, :t] = random_chars(2, t, seed=4)  # change every word before t
    _, fa, ba, _ = bilm.directions(a)
    _, fb, bb, _ = bilm.directions(b)
    for ha, hb in zip(ba, bb):
        torch.testing.assert_close(ha[:, t:], hb[:, t:], atol=0, rtol=0)
        assert not torch.allclose(ha[:, :t], hb[:, :t])
    assert not torch.allclose(fa[-1][:, t:], fb[-1][:, t:])


def test_padding_never_changes_real_words(bilm):
    short = ["a", "sentence", "of", "five", "words"]
    long = ["and", "a", "much", "longer", "one", "that", "pads", "the", "other"]
    alone = bilm(CHARS.sentences([short])).hidden_states
    batched = bilm(CHARS.sentences([short, long])).hidden_states
    for h_alone, h_batch in zip(alone, batched):
        torch.testing.assert_close(h_batch[0, : len(short)], h_alone[0], atol=1e-6, rtol=1e-5)
        assert h_batch[0, len(short) :].abs().max() == 0  # padding positions are zero


def test_reverse_padded_reverses_real_positions_only():
    x = torch.arange(10).reshape(2, 5)
    lengths = torch.tensor([3, 5])
    assert reverse_padded(x, lengths).tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    y = torch.randn(2, 5, 4)
    torch.testing.assert_close(reverse_padded(reverse_padded(y, lengths), lengths), y)


def test_targets_shift_one_word_in_each_direction():
    word_ids = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    forward, backward = shifted_targets(word_ids, mask)
    N = IGNORE_INDEX
    assert forward.tolist() == [[6, 7, N, N], [9, 10, 11, N]]
    assert backward.tolist() == [[N, 5, 6, N], [N, 8, 9, 10]]


def test_each_direction_learns_its_own_targets():
    """Words cycle 0, 1, ..., 9, 0, ...: the forward LM must learn 'k is followed by k+1' and
    the backward LM 'k is preceded by k-1'. Swapped or unshifted targets would fail."""
    torch.manual_seed(0)
    config = ELMoConfig(vocab_size=10, max_chars=5, filters=((1, 8), (2, 8)), dim=16, hidden=32,
                        layers=1, dropout=0.0, cutoffs=(5,))
    bilm = BiLM(config)
    names = [f"w{k}" for k in range(10)]
    chars = CharVocab(5)
    optimizer = torch.optim.Adam(bilm.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, 10, (8,), generator=g)
        word_ids = (starts[:, None] + torch.arange(6)) % 10  # (8, 6)
        char_ids = chars.sentences([[names[k] for k in row] for row in word_ids.tolist()])
        forward_loss, backward_loss = bilm.lm_losses(char_ids, word_ids)
        optimizer.zero_grad()
        (forward_loss + backward_loss).backward()
        optimizer.step()
    assert forward_loss < 0.1 and backward_loss < 0.1
    bilm.eval()
    word_ids = torch.tensor([[3, 4, 5, 6, 7]])
    _, forward, backward, _ = bilm.directions(chars.sentences([[names[k] for k in [3, 4, 5, 6, 7]]]))
    next_words = bilm.softmax.predict(forward[-1][0])
    previous_words = bilm.softmax.predict(backward[-1][0])
    assert next_words.tolist() == ((word_ids[0] + 1) % 10).tolist()
    assert previous_words.tolist() == ((word_ids[0] - 1) % 10).tolist()


def test_scalar_mix_is_the_formula():
    torch.manual_seed(0)
    mix = ScalarMix(3)
    with torch.no_grad():
        mix.scalars.copy_(torch.tensor([0.5, -1.0, 2.0]))
        mix.gamma.fill_(1.7)
    layers = [torch.randn(2, 4, 6) for _ in range(3)]
    s = torch.tensor([0.5, -1.0, 2.0])
    w = s.exp() / s.exp().sum()
    by_hand = 1.7 * (w[0] * layers[0] + w[1] * layers[1] + w[2] * layers[2])
    torch.testing.assert_close(mix(layers), by_hand)
    torch.testing.assert_close(mix(torch.stack(layers, dim=-2)), by_hand)  # stacked input
    torch.testing.assert_close(mix.weights().sum(), torch.tensor(1.0))
    assert (mix.weights() > 0).all()


def test_scalar_mix_with_layer_norm_normalises_each_layer():
    mix = ScalarMix(2, layer_norm=True)
    layers = [torch.randn(3, 8) * 10 + 5, torch.randn(3, 8)]
    normed = [(h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True)
                                                          + 1e-5) for h in layers]
    torch.testing.assert_close(mix(layers), 0.5 * normed[0] + 0.5 * normed[1])


def test_scalar_mix_learns():
    mix = ScalarMix(3)
    layers = [torch.randn(5, 4) for _ in range(3)]
    loss = (mix(layers) - layers[2]).pow(2).mean()
    loss.backward()
    assert mix.scalars.grad.abs().sum() > 0 and mix.gamma.grad is not None


def test_char_vocab_marks_and_truncates():
    chars = CharVocab(6)
    assert chars.word("ab") == [BOW_CHAR, ord("a") + 1, ord("b") + 1, EOW_CHAR, 0, 0]
    long = chars.word("abcdefgh")  # 8 bytes, room for 4
    assert long == [BOW_CHAR, *[ord(c) + 1 for c in "abcd"], EOW_CHAR]
    assert chars.word("é")[1:3] == [0xC3 + 1, 0xA9 + 1]  # UTF-8 bytes


def test_bad_input_gets_a_clear_error(bilm):
    good = random_chars(2, 5)
    with pytest.raises(ValueError, match="shape"):
        bilm(good[0])  # a missing batch dimension
    with pytest.raises(ValueError, match="shape"):
        bilm(good[..., :4])  # too few characters per word
    with pytest.raises(ValueError, match="character ids"):
        bilm(good.clone().fill_(CONFIG.char_vocab_size))
    with pytest.raises(TypeError, match="long"):
        bilm(good.float())
    empty = good.clone()
    empty[1] = 0
    with pytest.raises(ValueError, match="sentence 1 .* empty"):
        bilm(empty)
    holes = good.clone()
    holes[0, 2] = 0
    with pytest.raises(ValueError, match="after the real words"):
        bilm(holes)
    with pytest.raises(ValueError, match="no words"):
        bilm(good[:, :0])
    with pytest.raises(ValueError, match="must match"):
        bilm.lm_losses(good, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="word ids"):
        bilm.lm_losses(good, torch.full((2, 5), CONFIG.vocab_size))
    with pytest.raises(ValueError, match="at least one word"):
        CHARS.sentences([["fine"], []])
    with pytest.raises(ValueError, match="empty word"):
        CHARS.word("")
    with pytest.raises(ValueError, match="layers"):
        ScalarMix(3)([torch.zeros(2)] * 2)
    with pytest.raises(ValueError, match="cutoffs"):
        ELMoConfig(vocab_size=100, cutoffs=(200,))


def test_exercise_checks_accept_right_answers_and_reject_wrong_ones():
    from ctxlib.checks import ExerciseFailed, check_reverse_left_padded, check_scalar_mix

    def with_ctxlib(layers, s, gamma):
        mix = ScalarMix(len(layers))
        with torch.no_grad():
            mix.scalars.copy_(s)
            mix.gamma.copy_(gamma)
        return mix(layers)

    check_scalar_mix(with_ctxlib)
    with pytest.raises(ExerciseFailed, match="softmax"):
        check_scalar_mix(lambda layers, s, gamma: gamma * sum(w * h for w, h in zip(s, layers)))
    with pytest.raises(ExerciseFailed, match="gamma"):
        check_scalar_mix(lambda layers, s, g: sum(w * h for w, h in zip(torch.softmax(s, 0), layers)))

    def reverse_left_padded(x, lengths):  # ctxlib's right-padded reversal, seen in a mirror
        return reverse_padded(x.flip(1), lengths).flip(1)

    check_reverse_left_padded(reverse_left_padded)
    with pytest.raises(ExerciseFailed, match="padding"):
        check_reverse_left_padded(lambda x, lengths: x.flip(1))
    with pytest.raises(ExerciseFailed, match="left-padded"):
        check_reverse_left_padded(reverse_padded)  # right padding's answer


def test_one_word_sentences_are_a_clear_error_not_a_nan_loss(bilm):
    """A one-word sentence has no neighbour to predict: a batch of them has no target at all."""
    char_ids = CHARS.sentences([["alone"], ["single"]])
    with pytest.raises(ValueError, match="at least 2 words for a language-model target"):
        bilm.lm_losses(char_ids, torch.tensor([[3], [4]]))
    # one longer sentence in the batch is enough
    char_ids = CHARS.sentences([["alone"], ["two", "words"]])
    losses = bilm.lm_losses(char_ids, torch.tensor([[3, 0], [4, 5]]))
    assert all(torch.isfinite(loss) for loss in losses)


def test_an_lm_batch_spells_the_words_of_random_windows():
    from ctxlib.elmo import CharVocab, lm_batch, spell_vocabulary

    words = ["the", "play", "was", "performed", "in", "London"]
    spelled = spell_vocabulary(words, 10)
    stream = torch.arange(6).repeat(20)
    char_ids, word_ids = lm_batch(stream, spelled, 3, 5, torch.Generator().manual_seed(0))
    assert char_ids.shape == (3, 5, 10) and word_ids.shape == (3, 5)
    expected = CharVocab(10).sentences([[words[i] for i in row] for row in word_ids.tolist()])
    assert torch.equal(char_ids, expected)


def test_evaluate_lm_scores_every_validation_word_once_per_direction():
    from ctxlib.elmo import evaluate_lm, lm_loss, spell_vocabulary, validation_windows

    torch.manual_seed(0)
    words = [f"w{i}" for i in range(30)]
    model = BiLM(ELMoConfig(vocab_size=30, dim=8, hidden=8, max_chars=6,
                            filters=((1, 4), (2, 4)), cutoffs=(10,), dropout=0.0))
    spelled = spell_vocabulary(words, 6)
    windows = validation_windows(torch.randint(0, 30, (50,)), 6)
    assert windows.shape == (8, 6)
    result = evaluate_lm(model, windows, spelled, batch_size=8)  # one batch: the plain mean
    model.eval()  # what evaluate_lm scores: batch normalisation with its running statistics
    with torch.no_grad():
        forward, backward = model.lm_losses(spelled[windows], windows)
    assert result["forward_ppl"] == pytest.approx(math.exp(forward.item()), rel=1e-5)
    assert result["valid_loss"] == pytest.approx((forward.item() + backward.item()) / 2, rel=1e-5)
    model.eval()
    assert lm_loss(model, (spelled[windows], windows)).item() == pytest.approx(
        result["valid_loss"], rel=1e-5)
