"""The exercises' checks: the reference passes, a stub and plausible wrong answers fail with a
hint, and a check never says "Correct!" for a typed answer."""

import functools
import math

import pytest
import torch

from ctxlib import checks
from ctxlib.batches import IGNORE_INDEX
from ctxlib.checks import ExerciseFailed
from ctxlib.gpt import top_p_logits
from ctxlib.train import TrainConfig, train
from tests.test_train import batches, fresh_model, loss_fn

CONFIG = TrainConfig(steps=6, lr=0.05, progress=False)

# --- Exercises whose answer is a function: the reference passes, a stub and plausible wrong
# answers fail with a hint. ------------------------------------------------------------------


def stub(*args):
    raise NotImplementedError()


def test_a_stub_fails_every_function_check():
    for check in (checks.check_min_p, checks.check_typical, checks.check_whole_word_mask,
                  checks.check_stream_masks, checks.check_first_bad_block,
                  checks.check_merge_pair_from_the_right, checks.check_softmax_skipgram_loss,
                  checks.check_window_mask, checks.check_repeat_kv):
        with pytest.raises(NotImplementedError):
            check(stub)


def min_p(logits, ratio):
    probs = logits.softmax(-1)
    return logits.masked_fill(probs < ratio * probs.max(-1, keepdim=True).values, float("-inf"))


def typical(logits, mass):
    log_probs = logits.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1, keepdim=True)
    order = (-log_probs - entropy).abs().argsort(-1)
    probs = log_probs.exp().gather(-1, order)
    drop = torch.zeros_like(probs, dtype=torch.bool).scatter(
        -1, order, probs.cumsum(-1) - probs >= mass)
    return logits.masked_fill(drop, float("-inf"))


def test_min_p_check(capsys):
    checks.check_min_p(min_p)
    # the same rule written on logits: log(ratio) added to the largest logit
    checks.check_min_p(lambda z, r: z.masked_fill(
        z < z.max(-1, keepdim=True).values + math.log(r), float("-inf")))
    assert capsys.readouterr().out.count("Correct!") == 2
    wrong = {  # ratio times the largest logit; top-p in disguise
        "ratio times the largest logit": lambda z, r: z.masked_fill(
            z < r * z.max(-1, keepdim=True).values, float("-inf")),
        "top-p": lambda z, r: top_p_logits(z, r),
    }
    for answer in wrong.values():
        with pytest.raises(ExerciseFailed, match="most likely token"):
            checks.check_min_p(answer)


def test_typical_check(capsys):
    checks.check_typical(typical)
    assert "Correct!" in capsys.readouterr().out
    for answer in (lambda z, m: top_p_logits(z, m),  # ranked by probability, not typicality
                   lambda z, m: typical(z, 1 - m),  # the mass the wrong way round
                   lambda z, m: z):  # nothing filtered
        with pytest.raises(ExerciseFailed, match="entropy"):
            checks.check_typical(answer)


def whole_words(ids, word_ids, mask_id, vocab_size, generator, per_token=False):
    n_words = int(word_ids.max()) + 1
    if per_token:  # the plausible mistake: choose tokens, as in exercise 5.1's first version
        chosen = torch.rand(ids.shape, generator=generator) < 0.15
    else:
        chosen_word = torch.rand(ids.shape[0], n_words, generator=generator) < 0.15
        chosen = chosen_word.gather(1, word_ids.clamp(min=0))
    chosen &= word_ids >= 0
    action = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(6, vocab_size, ids.shape, generator=generator)
    masked = torch.where(chosen & (action < 0.8), mask_id, ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, torch.where(chosen, ids, IGNORE_INDEX)


def test_whole_word_mask_check(capsys):
    checks.check_whole_word_mask(whole_words)
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="chosen only in part"):
        checks.check_whole_word_mask(functools.partial(whole_words, per_token=True))
    with pytest.raises(ExerciseFailed, match="80% \\[MASK\\]"):  # every chosen token [MASK]
        checks.check_whole_word_mask(lambda ids, w, m, v, g: (
            torch.where(whole_words(ids, w, m, v, g)[1] != IGNORE_INDEX, m, ids),
            whole_words(ids, w, m, v, torch.Generator().manual_seed(0))[1]))
    with pytest.raises(ExerciseFailed, match="generator"):  # the global random state
        checks.check_whole_word_mask(lambda ids, w, m, v, g: whole_words(
            ids, w, m, v, torch.Generator().manual_seed(int(torch.randint(0, 99, (1,))))))
    with pytest.raises(ExerciseFailed, match="special token"):
        checks.check_whole_word_mask(lambda ids, w, m, v, g: whole_words(
            ids, w.clamp(min=0), m, v, g))


def streams(rank, num_predict, mem_len):
    T = len(rank)
    is_target = rank >= T - num_predict
    content = ~is_target[None, :] | (rank[None, :] <= rank[:, None])
    query = ~is_target[None, :] | (rank[None, :] < rank[:, None])
    memory = torch.ones(T, mem_len, dtype=torch.bool)
    return torch.cat([memory, content], 1), torch.cat([memory, query], 1)


def test_stream_masks_check(capsys):
    checks.check_stream_masks(streams)
    assert "Correct!" in capsys.readouterr().out
    wrong = {
        "the query stream sees itself": lambda r, n, m: (streams(r, n, m)[0],) * 2,
        "rank read as an order": lambda r, n, m: streams(r.argsort(), n, m),
        "perm_mask's convention": lambda r, n, m: tuple(~s for s in streams(r, n, m)),
        "memory left out": lambda r, n, m: tuple(s[:, m:] for s in streams(r, n, m)),
    }
    for answer in wrong.values():
        with pytest.raises(ExerciseFailed):
            checks.check_stream_masks(answer)


def nsp_runs(monkeypatch, use_nsp=(True, False), accuracies=(0.61, 0.63), same_tune=False):
    monkeypatch.setenv("CTXLIB_BUDGET", "smoke")
    runs = {}
    for name, flag, score in zip(("with_nsp", "without_nsp"), use_nsp, accuracies):
        pre = train(fresh_model(), batches, loss_fn, CONFIG, device="cpu",
                    settings={"batch": 4, "use_nsp": flag})
        tune = train(fresh_model(), batches, loss_fn, CONFIG, device="cpu",
                     eval_fn=lambda model, score=score: {"accuracy": score},
                     settings={"pretrained_with_nsp": flag})
        runs[name] = (pre, tune)
    if same_tune:
        runs["without_nsp"] = (runs["without_nsp"][0], runs["with_nsp"][1])
    return runs


def test_nsp_ablation_check_reads_the_runs(monkeypatch, capsys):
    checks.check_nsp_ablation(nsp_runs(monkeypatch))
    assert "0.610 with NSP, 0.630 without (-2.0 points" in capsys.readouterr().out
    for typed in ({"with_nsp": 0.61, "without_nsp": 0.63},
                  {"with_nsp": (0.61, 0.7), "without_nsp": (0.63, 0.7)}):
        with pytest.raises(ExerciseFailed, match="not typed numbers"):
            checks.check_nsp_ablation(typed)
    with pytest.raises(ExerciseFailed, match="use_nsp=False"):  # NSP on in both
        checks.check_nsp_ablation(nsp_runs(monkeypatch, use_nsp=(True, True)))
    with pytest.raises(ExerciseFailed, match="same run"):
        checks.check_nsp_ablation(nsp_runs(monkeypatch, same_tune=True))
    runs = nsp_runs(monkeypatch)
    runs["with_nsp"] = runs["with_nsp"][::-1]  # the pair the wrong way round
    with pytest.raises(ExerciseFailed):
        checks.check_nsp_ablation(runs)


def span_mask(maskable, rate, max_span, generator):
    chosen = torch.zeros_like(maskable)
    for b in range(len(maskable)):
        positions = maskable[b].nonzero().flatten()
        wanted, taken = max(1, round(rate * len(positions))), 0
        while taken < wanted:
            length = int(torch.randint(1, max_span + 1, (1,), generator=generator))
            start = int(torch.randint(0, len(positions), (1,), generator=generator))
            for p in positions[start : start + length].tolist():
                if taken < wanted and not chosen[b, p]:
                    chosen[b, p] = True
                    taken += 1
    return chosen


def test_span_mask_check(capsys):
    checks.check_span_mask(span_mask)
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(NotImplementedError):
        checks.check_span_mask(stub)

    def single_positions(maskable, rate, max_span, generator):
        return span_mask(maskable, rate, 1, generator)

    def ignores_maskable(maskable, rate, max_span, generator):
        return span_mask(torch.ones_like(maskable), rate, max_span, generator)

    def own_randomness(maskable, rate, max_span, generator):
        return span_mask(maskable, rate, max_span, torch.Generator().manual_seed(0))

    def too_many(maskable, rate, max_span, generator):
        return span_mask(maskable, rate * 1.5, max_span, generator)

    for answer in (single_positions, ignores_maskable, own_randomness, too_many):
        with pytest.raises(ExerciseFailed):
            checks.check_span_mask(answer)


def test_a_warning_or_progress_bar_from_the_students_code_stays_off_stderr(capsys):
    """Graders give a check cell that writes to stderr no points (nbgrader does): a correct
    answer that warns, or shows a progress bar, on the way must still earn them."""
    import sys
    import warnings

    from tqdm.auto import tqdm

    def noisy_window_mask(T, window):
        warnings.warn("the student's code warns about something harmless")
        print("a line on stderr", file=sys.stderr)
        for _ in tqdm(range(3), desc="thinking"):
            pass
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        return (j <= i) & (i - j < window)

    def shown_on_stderr(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = shown_on_stderr  # as a notebook shows a warning, when raised
        checks.check_window_mask(noisy_window_mask)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "Correct!" in captured.out and "harmless" in captured.out
    assert "a line on stderr" in captured.out and "thinking" in captured.out
    # and a wrong answer still fails, whatever it prints
    with pytest.raises(ExerciseFailed):
        checks.check_window_mask(lambda T, window: torch.ones(T, T, dtype=torch.bool))


def first_bad_block(path, block_digests, block_size):
    import hashlib

    with open(path, "rb") as file:
        for i, expected in enumerate(block_digests):
            if hashlib.sha256(file.read(block_size)).hexdigest() != expected:
                return i
        return len(block_digests) if file.read(1) else None


def test_first_bad_block_check(capsys):
    checks.check_first_bad_block(first_bad_block)
    assert "Correct!" in capsys.readouterr().out
    # a whole-file comparison says something is wrong, not where
    def somewhere(path, digests, size):
        return None if first_bad_block(path, digests, size) is None else 0
    with pytest.raises(ExerciseFailed, match="one bit flipped"):
        checks.check_first_bad_block(somewhere)
    # forgetting bytes past the last block
    def ignores_the_tail(path, digests, size):
        return first_bad_block(path, digests, size) if path.stat().st_size <= len(
            digests) * size else None
    with pytest.raises(ExerciseFailed, match="bytes appended"):
        checks.check_first_bad_block(ignores_the_tail)


def test_will_resume_check(capsys):
    right = dict(enumerate([True, True, True, True, False, False, False, False]))
    checks.check_will_resume(right)
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="situations 1"):
        checks.check_will_resume({**right, 1: False})  # the device is not part of a run
    with pytest.raises(ExerciseFailed, match="no answer for situation 7"):
        checks.check_will_resume({k: v for k, v in right.items() if k != 7})


def test_merge_pair_from_the_right_check(capsys):
    def from_the_right(symbols, pair, new_id):
        merged, i = [], len(symbols) - 1
        while i >= 0:
            if i > 0 and (symbols[i - 1], symbols[i]) == pair:
                merged.append(new_id)
                i -= 2
            else:
                merged.append(symbols[i])
                i -= 1
        return merged[::-1]

    checks.check_merge_pair_from_the_right(from_the_right)
    assert "Correct!" in capsys.readouterr().out

    from ctxlib.tokenizers import _merge  # the tokenizer's own merge, left to right

    with pytest.raises(ExerciseFailed, match="occurrences overlap"):
        checks.check_merge_pair_from_the_right(_merge)


def test_softmax_skipgram_loss_check(capsys):
    checks.check_softmax_skipgram_loss(
        lambda center, context, output: torch.nn.functional.cross_entropy(center @ output.T,
                                                                          context))
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="not the sum"):
        checks.check_softmax_skipgram_loss(
            lambda center, context, output: torch.nn.functional.cross_entropy(
                center @ output.T, context, reduction="sum"))


def test_window_mask_check(capsys):
    def window_mask(T, window):
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        return (j <= i) & (i - j < window)

    checks.check_window_mask(window_mask)
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="not all earlier ones"):
        checks.check_window_mask(lambda T, window: torch.ones(T, T, dtype=torch.bool).tril())
    with pytest.raises(ExerciseFailed, match="rows are queries"):
        checks.check_window_mask(lambda T, window: window_mask(T, window).T)


def test_repeat_kv_check(capsys):
    checks.check_repeat_kv(lambda x, n_rep: x.repeat_interleave(n_rep, dim=1))
    assert "Correct!" in capsys.readouterr().out
    with pytest.raises(ExerciseFailed, match="repeat each head in place"):
        checks.check_repeat_kv(lambda x, n_rep: x.repeat(1, n_rep, 1, 1))
