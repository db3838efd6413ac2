"""Our GPT against Hugging Face's GPT-2 built from a small random config (no download)."""

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from ctxlib.gpt import (
    _CONV1D,
    GPT,
    GPTConfig,
    evaluate_lm,
    lm_loss,
    sample_next_token,
    validation_windows,
)

VOCAB, CONTEXT = 97, 32


def hf_gpt2(seed=0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_embd=48, n_layer=3, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        pad_token_id=0,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def pair():
    hf = hf_gpt2()
    return hf, GPT.from_huggingface(hf).eval()


def ids(batch=2, time=20, seed=1):
    return torch.randint(0, VOCAB, (batch, time), generator=torch.Generator().manual_seed(seed))


def test_logits_equal_huggingface(pair):
    hf, ours = pair
    x = ids()
    torch.testing.assert_close(ours(x).logits, hf(x).logits, atol=1e-5, rtol=0)


def test_export_to_huggingface_round_trips():
    torch.manual_seed(3)
    ours = GPT(GPTConfig(vocab_size=VOCAB, block_size=CONTEXT, n_layer=2, n_head=2, n_embd=32))
    hf = ours.to_huggingface()
    x = ids()
    torch.testing.assert_close(hf(x).logits, ours.eval()(x).logits, atol=1e-5, rtol=0)
    back = GPT.from_huggingface(hf)
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


def test_loss_and_gradients_equal_huggingface(pair):
    hf, ours = pair
    x = ids(time=CONTEXT)
    hf.zero_grad()
    ours.zero_grad()
    hf_loss = hf(x, labels=x).loss  # Hugging Face shifts the labels inside
    loss = ours(x[:, :-1], targets=x[:, 1:]).loss  # we pass next-token targets explicitly
    torch.testing.assert_close(loss, hf_loss, atol=1e-5, rtol=0)
    hf_loss.backward()
    loss.backward()
    hf_grads = dict(hf.named_parameters())
    for name, param in ours.named_parameters():
        hf_grad = hf_grads[f"transformer.{name}"].grad
        expected = hf_grad.t() if name.endswith(_CONV1D) else hf_grad  # Conv1D is transposed
        torch.testing.assert_close(param.grad, expected, atol=1e-5, rtol=1e-4, msg=name)


def test_ignored_targets_do_not_count(pair):
    _, ours = pair
    x = ids(batch=1, time=10)
    targets = x.roll(-1, dims=1)
    targets[0, 5:] = -100
    loss = ours(x, targets=targets).loss
    first_half = ours(x[:, :5], targets=targets[:, :5]).loss
    torch.testing.assert_close(loss, first_half)


def test_future_tokens_never_change_the_past(pair):
    _, ours = pair
    x = ids(batch=1, time=24)
    for t in (0, 7, 22):
        changed = x.clone()
        changed[0, t + 1 :] = (changed[0, t + 1 :] + 1) % VOCAB
        torch.testing.assert_close(ours(changed).logits[:, : t + 1], ours(x).logits[:, : t + 1],
                                   atol=0, rtol=0)
        assert not torch.allclose(ours(changed).logits[:, t + 1 :], ours(x).logits[:, t + 1 :])


def test_cache_gives_the_same_logits_as_a_full_pass(pair):
    _, ours = pair
    x = ids(time=12)
    full = ours(x).logits
    out = ours(x[:, :5], use_cache=True)
    steps = [out.logits]
    for t in range(5, 12):
        out = ours(x[:, t : t + 1], past=out.past, use_cache=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_greedy_generation_equals_huggingface_with_and_without_cache(pair):
    hf, ours = pair
    prompt = ids(batch=2, time=5)
    mask = torch.ones_like(prompt)
    expected = hf.generate(prompt, max_new_tokens=15, do_sample=False, attention_mask=mask)
    assert torch.equal(ours.generate(prompt, 15, temperature=0, use_cache=True), expected)
    assert torch.equal(ours.generate(prompt, 15, temperature=0, use_cache=False), expected)


def test_generation_past_the_context_slides_the_window(pair):
    _, ours = pair
    prompt = ids(batch=1, time=CONTEXT - 3)
    cached = ours.generate(prompt, 10, temperature=0, use_cache=True)
    plain = ours.generate(prompt, 10, temperature=0, use_cache=False)
    assert cached.shape == (1, CONTEXT + 7)
    assert torch.equal(cached, plain)


def test_sampling_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    top2 = {sample_next_token(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert top2 == {0, 1}
    probs = logits.softmax(-1)[0]  # 0.636, 0.234, 0.086, ...
    assert probs[0] < 0.7 < probs[0] + probs[1]
    nucleus = {sample_next_token(logits, top_p=0.7, generator=g).item() for _ in range(200)}
    assert nucleus == {0, 1}
    assert sample_next_token(logits, temperature=0).item() == 0
    cold = {sample_next_token(logits, temperature=0.05, generator=g).item() for _ in range(50)}
    assert cold == {0}


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(CONTEXT + 1, dtype=torch.long)[None], "longer than the context"),
        (torch.full((1, 4), VOCAB), "outside the vocabulary"),
        (torch.full((1, 4), -1), "outside the vocabulary"),
        (torch.zeros(4, dtype=torch.long), r"\(batch, time\)"),
        (torch.zeros(1, 4), "integer token ids"),
    ],
)
def test_bad_input_is_a_clear_error(pair, bad, message):
    with pytest.raises(ValueError, match=message):
        pair[1](bad)


def test_bad_config_and_sampling_arguments():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="top_p"):
        sample_next_token(torch.zeros(1, 3), top_p=1.5)
    with pytest.raises(ValueError, match="activation"):
        GPT.from_huggingface(hf_gpt2(activation_function="relu"))


def test_classifier_reads_the_last_real_token_whatever_the_padding(pair):
    from ctxlib.gpt import GPTForClassification

    _, ours = pair
    torch.manual_seed(0)
    classifier = GPTForClassification(ours, n_classes=2).eval()
    short, long = ids(batch=1, time=4, seed=2), ids(batch=1, time=9, seed=3)
    padded = torch.zeros(2, 9, dtype=torch.long)
    padded[0, :4], padded[1] = short[0], long[0]
    mask = (torch.arange(9) < torch.tensor([[4], [9]])).long()
    batch_logits = classifier(padded, mask).logits
    alone = classifier(short, torch.ones_like(short)).logits
    torch.testing.assert_close(batch_logits[:1], alone, atol=1e-5, rtol=0)
    padded[0, 4:] = 7  # whatever sits in the padding does not matter
    torch.testing.assert_close(classifier(padded, mask).logits, batch_logits, atol=1e-6, rtol=0)
    loss = classifier(padded, mask, torch.tensor([0, 1])).loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="at least one real token"):
        classifier(padded, torch.zeros_like(mask))


def test_filters_keep_exactly_the_expected_tokens():
    from ctxlib.gpt import top_k_logits, top_p_logits

    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])  # probabilities 0.636, 0.234, 0.086, ...
    kept = lambda filtered: (~torch.isinf(filtered[0])).nonzero().flatten().tolist()
    assert kept(top_k_logits(logits, 2)) == [0, 1]
    assert kept(top_p_logits(logits, 0.5)) == [0]
    assert kept(top_p_logits(logits, 0.8)) == [0, 1]
    assert kept(top_p_logits(logits, 0.9)) == [0, 1, 2]
    assert kept(top_p_logits(logits.flip(-1), 0.8)) == [3, 4]  # order of the vocabulary kept
    assert torch.equal(top_p_logits(logits, 1.0), logits)


def tiny_gpt(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=CONTEXT, n_layer=1, n_head=2, n_embd=16))


def test_a_loss_with_no_target_is_a_clear_error_not_nan(pair):
    _, ours = pair
    empty = torch.zeros(2, 0, dtype=torch.long)  # T = 0
    with pytest.raises(ValueError, match="targets are empty"):
        ours(empty, targets=empty)
    x = ids(time=6)
    with pytest.raises(ValueError, match="no position has a target: every one .* is -100"):
        ours(x, targets=torch.full_like(x, -100))


@pytest.mark.parametrize("bad", [VOCAB, -1, -7])
def test_targets_outside_the_vocabulary_are_a_clear_error(pair, bad):
    x = ids(time=6)
    targets = x.roll(-1, dims=1)
    targets[0, -1] = -100  # ignored: fine
    targets[1, 2] = bad
    with pytest.raises(ValueError, match=rf"must lie in \[0, {VOCAB}\) or be -100.*found {bad}"):
        pair[1](x, targets=targets)
    with pytest.raises(TypeError, match="torch.long"):
        pair[1](x, targets=targets.int())


def test_generate_from_an_empty_prompt_is_a_clear_error(pair):
    with pytest.raises(ValueError, match="prompt is empty"):
        pair[1].generate(torch.zeros(1, 0, dtype=torch.long), 3)


def test_generate_restores_training_mode_even_when_it_fails():
    model = tiny_gpt().train()
    with pytest.raises(ValueError, match="top_k"):
        model.generate(ids(batch=1, time=3), 2, top_k=0)  # fails inside the sampling loop
    assert model.training
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate(torch.tensor([[1, VOCAB]]), 2)  # fails in the first forward pass
    assert model.training
    model.generate(ids(batch=1, time=3), 2)
    assert model.training
    model.eval().generate(ids(batch=1, time=3), 2)
    assert not model.training


def test_classifier_refuses_left_padding():
    from ctxlib.batches import pad_batch
    from ctxlib.gpt import GPTForClassification

    classifier = GPTForClassification(tiny_gpt(), n_classes=2).eval()
    x, mask = pad_batch([[5, 6], [5, 6, 7, 8]], side="left")  # mask [[0, 0, 1, 1], [1, 1, 1, 1]]
    with pytest.raises(ValueError, match=r"pad on the right \(pad_batch\(\.\.\., side='right'\)\)"):
        classifier(x, mask)
    with pytest.raises(ValueError, match="pad on the right"):
        classifier(x, torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]))  # a hole in the middle
    x, mask = pad_batch([[5, 6], [5, 6, 7, 8]], side="right")
    assert classifier(x, mask).logits.shape == (2, 2)


def test_classifier_loss_checks_its_labels_and_targets():
    from ctxlib.gpt import GPTForClassification

    classifier = GPTForClassification(tiny_gpt(), n_classes=2).eval()
    x, mask = ids(batch=2, time=5), torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 2\)"):
        classifier(x, mask, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="every one of the 2 class labels is -100"):
        classifier(x, mask, torch.tensor([-100, -100]))
    # one real token per sequence: the auxiliary language-model loss has no target at all
    single = torch.tensor([[1, 0, 0, 0, 0]] * 2)
    with pytest.raises(ValueError, match="single real token.*lm_weight=0"):
        classifier(x, single, torch.tensor([0, 1]))
    assert torch.isfinite(classifier(x, single, torch.tensor([0, 1]), lm_weight=0).loss)


def test_evaluate_lm_scores_the_same_fixed_windows_in_eval_mode():
    torch.manual_seed(0)
    stream = torch.randint(0, 50, (2_000,))
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16,
                          dropout=0.5))
    windows = validation_windows(stream, 48, 16)
    assert len(windows) == 3 and windows[0][0].shape == (16, 16)
    again = validation_windows(stream, 48, 16)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(windows, again))
    assert torch.equal(windows[0][1][:, :-1], windows[0][0][:, 1:])  # y is x shifted by one

    model.train()
    score = evaluate_lm(model, windows)["valid_loss"]
    assert model.training, "evaluate_lm must put the model back in training mode"
    model.eval()
    with torch.no_grad():
        by_hand = sum(F.cross_entropy(model(x).logits.flatten(0, 1), y.flatten()).item()
                      for x, y in windows) / 3
    assert score == pytest.approx(by_hand, abs=1e-6)  # dropout was off: the same number
    assert lm_loss(model, windows[0]).item() == pytest.approx(
        F.cross_entropy(model(windows[0][0]).logits.flatten(0, 1), windows[0][1].flatten()).item(),
        abs=1e-6)
