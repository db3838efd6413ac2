"""Exercise checkers: each prints a pass, or a hint that helps without giving the answer away.

A checker raises :class:`ExerciseFailed` (an ``AssertionError``) when the answer is wrong, so a
failing check cell shows up red in the notebook and in graders such as nbgrader, and prints
``Correct!`` plus a short remark when it is right. Checkers are grouped by chapter below.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys

import torch


class ExerciseFailed(AssertionError):
    """The answer does not pass the check; the message is a hint."""


# The standard error of the cell a check runs in (see graded and _not_graded).
_CELL_STDERR: contextvars.ContextVar = contextvars.ContextVar("cell_stderr", default=None)


def graded(check):
    """Run ``check`` with standard error shown on standard output.

    Graders read any output on stderr as "no credit" (nbgrader gives such a test cell no
    points), so a warning or a progress bar from the student's code would cost a correct
    answer its points. Only "Not graded" (``_not_graded``) still goes to stderr, on purpose.
    """

    @functools.wraps(check)
    def run(*args, **kwargs):
        token = _CELL_STDERR.set(sys.stderr)
        try:
            with contextlib.redirect_stderr(sys.stdout):
                return check(*args, **kwargs)
        finally:
            _CELL_STDERR.reset(token)

    return run


def _fail(hint: str) -> None:
    raise ExerciseFailed(f"Not yet. Hint: {hint}")


def _passed(remark: str = "") -> None:
    print("Correct!" + (f" {remark}" if remark else ""))


def _expect_tensor(value, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        _fail(f"{name} should be a torch.Tensor, got {type(value).__name__}.")
    if shape is not None and tuple(value.shape) != tuple(shape):
        _fail(f"{name} should have shape {tuple(shape)}, got {tuple(value.shape)}.")
    return value


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5) -> bool:
    return torch.allclose(actual.detach().float(), expected.detach().float(), atol=atol, rtol=1e-4)


# --- Chapter 0: setup --------------------------------------------------------------------


@graded
def check_first_bad_block(first_bad_block) -> None:
    """Exercise 0.1: ``first_bad_block(path, block_digests, block_size)`` finds the first block
    of a file whose SHA-256 differs from the intact file's (a block cut off counts; bytes past
    the last block count as one more block), or None when every block matches."""
    import hashlib
    import shutil
    import tempfile
    from pathlib import Path

    from ctxlib import data

    intact = data.fetch("tinyshakespeare").read_bytes()
    size = 1 << 16
    digests = [hashlib.sha256(intact[i : i + size]).hexdigest()
               for i in range(0, len(intact), size)]
    flipped = bytearray(intact)
    flipped[300_000] ^= 1  # one bit, in block 4
    three = digests[:3]  # a file of exactly three blocks
    cases = {"the intact file": (intact, digests, None),
             "a copy with one bit flipped at byte 300,000": (bytes(flipped), digests,
                                                              300_000 // size),
             "a download cut at byte 500,000": (intact[:500_000], digests, 500_000 // size),
             "a download cut at a block boundary": (intact[: 3 * size], digests, 3),
             "a file of three blocks with bytes appended": (intact[: 3 * size] + b"more",
                                                             three, 3)}
    folder = Path(tempfile.mkdtemp())
    try:
        for what, (content, block_digests, expected) in cases.items():
            path = folder / "input.txt"
            path.write_bytes(content)
            got = first_bad_block(path, block_digests, size)
            if got != expected:
                hint = {None: "an intact file has no bad block: return None.",
                        3: "a block cut off, or bytes past the last block, are damage too: "
                           "after the last block, try to read one more byte."}.get(
                    expected, "hash each block_size bytes in turn, and compare block i's "
                              "hexdigest with block_digests[i]; a block cut short differs.")
                _fail(f"for {what} you returned {got!r}, not {expected!r}: {hint}")
    finally:
        shutil.rmtree(folder)
    _passed("only the damaged block needs fetching again.")


@graded
def check_pick_steps(pick_steps) -> None:
    """Exercise 0.2: ``pick_steps()`` follows CTXLIB_BUDGET."""
    import os

    expected = {"smoke": 10, "cpu": 100, "gpu": 1000}
    saved = os.environ.get("CTXLIB_BUDGET")
    try:
        for name, steps in expected.items():
            os.environ["CTXLIB_BUDGET"] = name
            got = pick_steps()
            if got != steps:
                _fail(f"under the {name!r} budget pick_steps() returned {got!r}, not {steps}.")
    finally:
        if saved is None:
            os.environ.pop("CTXLIB_BUDGET", None)
        else:
            os.environ["CTXLIB_BUDGET"] = saved
    _passed()


# Exercise 0.3's situations, each the one change between two calls of train(...).
RESUME_SITUATIONS = (
    "the runtime was reset and the same cell runs again, the checkpoint kept on Drive",
    "the same call on a GPU runtime, after a run begun on the CPU",
    "eval_every=50 instead of 100",
    "seed_everything(7) instead of seed_everything(0) before the model is built",
    "settings=dict(batch=64) instead of settings=dict(batch=32)",
    "a model of width 64 instead of 32",
    "steps=2000 instead of 1000, to train longer",
    "two processes with torchrun instead of one",
)


@graded
def check_will_resume(will_resume) -> None:
    """Exercise 0.3: for each situation, does the second call resume the first run?"""
    if not isinstance(will_resume, dict):
        _fail("will_resume should be a dict from each situation to True (resumes) or False.")
    missing = [k for k in range(len(RESUME_SITUATIONS)) if k not in will_resume]
    if missing:
        _fail(f"will_resume has no answer for situation {', '.join(map(str, missing))} "
              "(its keys are the situations' numbers, 0 to 7).")
    # What the run's identity holds decides: train's configuration but for bookkeeping, the
    # model's configuration and shapes, the settings and the number of processes; not the
    # device, the weights before the first step, or how the run is watched.
    resumes = [True, True, True, True, False, False, False, False]
    wrong = [k for k, answer in enumerate(resumes) if bool(will_resume[k]) != answer]
    if wrong:
        _fail(f"{len(wrong)} of {len(resumes)} answers are off (situations "
              f"{', '.join(map(str, wrong))}). Ask of each: does it change what the run "
              "computes from its checkpoint on, or only where and how it is run and watched?")
    _passed("a run resumes wherever it is run; what it computes decides whether it is the "
            "same run.")


# --- Chapter 1: from static to contextual -------------------------------------------------


@graded
def check_merge_pair_from_the_right(merge_pair_from_the_right) -> None:
    """Exercise 1.1: ``merge_pair_from_the_right(symbols, pair, new_id)`` merges each
    occurrence, scanning right to left."""
    cases = [
        (([1, 2, 1, 2, 3], (1, 2), 9), [9, 9, 3]),
        (([1, 1, 1], (1, 1), 9), [1, 9]),
        (([1, 1, 1, 1], (1, 1), 9), [9, 9]),
        (([1, 1, 1, 1, 1], (1, 1), 9), [1, 9, 9]),
        (([3, 1, 2], (1, 2), 7), [3, 7]),
        (([2, 1], (1, 2), 7), [2, 1]),
        (([5], (5, 5), 7), [5]),
        (([], (1, 2), 7), []),
    ]
    for (symbols, pair, new_id), expected in cases:
        got = merge_pair_from_the_right(list(symbols), pair, new_id)
        if list(got) != expected:
            hint = "start at the end; after a merge, skip both symbols of the pair"
            if symbols in ([1, 1, 1], [1, 1, 1, 1, 1]):
                hint = ("occurrences overlap here: from the right, the last two symbols merge "
                        "first, and the one before them is left alone")
            _fail(f"merge_pair_from_the_right({symbols}, {pair}, {new_id}) gave {list(got)}: "
                  f"{hint}.")
    _passed("[1, 1, 1] gives [1, 9] from the right and [9, 1] from the left: training and "
            "encoding must scan the same way.")


@graded
def check_softmax_skipgram_loss(loss_fn) -> None:
    """Exercise 1.2: the full-softmax skip-gram loss that negative sampling approximates."""
    g = torch.Generator().manual_seed(0)
    center, output = torch.randn(6, 4, generator=g), torch.randn(10, 4, generator=g)
    context = torch.tensor([0, 3, 9, 3, 1, 7])
    got = _expect_tensor(loss_fn(center, context, output), "the loss", ())
    scores = center @ output.T  # (P, V): every word of the vocabulary, scored
    expected = -(scores.log_softmax(-1)[torch.arange(6), context]).mean()
    if not _close(got, expected):
        if _close(got, -(scores.softmax(-1)[torch.arange(6), context]).log().sum()):
            _fail("average over the P pairs, not the sum.")
        _fail("score every word of the vocabulary (center @ output.T, shape (P, V)), take the "
              "log-softmax over the vocabulary, and average -log p(context word) over pairs.")
    _passed("one score per word of the vocabulary: negative sampling replaces those V with K+1.")


@graded
def check_oov_rate(rate) -> None:
    """Exercise 1.3: share of WikiText-2 validation tokens missing from the train vocabulary."""
    from ctxlib import data
    from ctxlib.static import Vocab

    vocab = Vocab.from_text(data.load_wikitext2("train"), min_count=5)
    tokens = data.load_wikitext2("valid").split()
    expected = sum(t not in vocab for t in tokens) / len(tokens)
    if not isinstance(rate, float) or not 0 <= rate <= 1:
        _fail("give the rate as a float between 0 and 1.")
    if abs(rate - expected) > 1e-6:
        _fail("count whitespace-separated tokens of the validation text (every occurrence, not "
              "distinct words) that are not in Vocab.from_text(train_text, min_count=5).")
    _passed(f"{rate:.1%} of validation tokens would be unknown to a word-level model.")


# --- Chapter 2: attention and the Transformer block ---------------------------------------


@graded
def check_window_mask(make_window_mask) -> None:
    """Exercise 2.1: ``make_window_mask(T, window)`` is (T, T) bool, True where query i may see
    key j: j <= i and i - j < window."""
    for T, window in ((1, 1), (5, 1), (5, 2), (6, 3), (4, 10)):
        mask = _expect_tensor(make_window_mask(T, window), f"make_window_mask({T}, {window})",
                              (T, T))
        if mask.dtype != torch.bool:
            _fail(f"the mask should be boolean (True = may attend), got dtype {mask.dtype}.")
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        expected = (j <= i) & (i - j < window)
        if torch.equal(mask, expected):
            continue
        if torch.equal(mask, expected.T):
            _fail("rows are queries and columns keys: query i sees keys i - window + 1 .. i.")
        if torch.equal(mask, j <= i):
            _fail(f"with window={window}, query i sees only the last {window} positions, "
                  "itself included, not all earlier ones.")
        _fail(f"make_window_mask({T}, {window}) is off: query i may see key j when j <= i "
              "and i - j < window (itself counts as one).")
    _passed("with window >= T it is the causal mask; with a window, a layer's reach is "
            "window - 1 tokens back, and stacked layers reach further.")


@graded
def check_repeat_kv(repeat_kv) -> None:
    """Exercise 2.2: ``repeat_kv(x, n_rep)`` from (B, H_kv, T, D) to (B, H_kv * n_rep, T, D),
    each key/value head repeated for the n_rep query heads of its group, in order."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g)
    got = _expect_tensor(repeat_kv(x, 2), "repeat_kv(x, 2)", (2, 6, 5, 4))
    expected = torch.stack([x, x], dim=2).flatten(1, 2)  # heads 0, 0, 1, 1, 2, 2
    if not torch.equal(got, expected):
        if torch.equal(got, torch.cat([x, x], dim=1)):
            _fail("query heads 0 and 1 share key head 0: repeat each head in place "
                  "(0, 0, 1, 1, 2, 2), not the whole stack (0, 1, 2, 0, 1, 2).")
        _fail("head h of the output is key/value head h // n_rep of the input.")
    if not torch.equal(_expect_tensor(repeat_kv(x, 1), "repeat_kv(x, 1)", (2, 3, 5, 4)), x):
        _fail("with n_rep=1 every query head has its own key head: return x unchanged.")
    _passed("three key/value heads serve six query heads: half the KV cache.")


@graded
def check_equivariance_test(is_permutation_equivariant) -> None:
    """Exercise 2.3: a test that tells permutation-equivariant layers from the others."""
    from ctxlib.layers import TransformerBlock

    torch.manual_seed(0)
    block = TransformerBlock(8, 2).eval()
    x = torch.randn(1, 6, 8)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    positions = torch.randn(1, 6, 8)

    def block_with_positions(inputs):
        return block(inputs + positions)

    if is_permutation_equivariant(block, x, perm) is not True:
        _fail("a block without positions is equivariant: block(x[:, perm]) == block(x)[:, perm] "
              "(compare with torch.allclose).")
    if is_permutation_equivariant(block_with_positions, x, perm) is not False:
        _fail("adding position embeddings breaks equivariance: your test should say False here.")
    _passed("without positions, a Transformer sees a bag of tokens: hence position embeddings.")


def _not_graded(reason: str) -> None:
    """A target check that does not apply to this run: say so, and never say "Correct!".

    On standard error, which graders read as "no credit" (nbgrader gives a test cell that
    writes to stderr no points), while the notebook still runs on.
    """
    print(f"Not graded: {reason}", file=_CELL_STDERR.get() or sys.stderr)


@graded
def check_gpu_exercise(exercise, path=None) -> None:
    """A GPU exercise, graded from the checkpoint its run wrote (see :mod:`ctxlib.handin`):
    its weights are scored again here, so the points never come from a number or a History.

    ``exercise`` is the exercise's name ("4.4"); ``path`` overrides where the checkpoint is
    looked for (``checkpoints/gpu/<file>.pt``). Without the file, under a budget other than
    gpu, the check says what to hand in and that it is not graded.
    """
    from pathlib import Path

    from ctxlib import handin
    from ctxlib.runtime import current_budget

    spec = exercise if isinstance(exercise, handin.GpuExercise) else handin.EXERCISES[exercise]
    where = Path(path) if path is not None else spec.handed_in()
    if not where.exists() and current_budget()[0] != "gpu":
        _not_graded(f"exercise {spec.name} is graded from the checkpoint of its gpu run, and "
                    f"there is none at {where}. Run the notebook on a GPU and hand in "
                    f"checkpoints/gpu/{spec.file}.pt beside it.")
        return
    try:
        blob = handin.read_handin(where)
        capped = handin.run_record(blob).get("capped_by")
        if capped is not None:  # a code-path test's run (CTXLIB_MAX_STEPS)
            _not_graded(f"this run was capped at {capped} steps by CTXLIB_MAX_STEPS.")
            return
        changed = handin.check_run(blob, spec)
        score = spec.rescore(blob)
    except handin.HandInProblem as problem:
        _fail(str(problem))
    shown = f"{spec.score_name} {score:.3f}, scored again from the weights handed in"
    reached = score >= spec.target if spec.higher_is_better else score <= spec.target
    if not reached:
        side = "below" if spec.higher_is_better else "above"
        _fail(f"{shown}, is {side} the target {spec.target}; the run changed "
              f"{', '.join(changed)}. Try another change, or train longer.")
    _passed(f"{shown} (target {spec.target}); the run changed {', '.join(changed)}.")


# --- Chapter 4: GPT ----------------------------------------------------------------------------


def _check_filter(fn, reference, arguments, name: str, hint: str) -> None:
    g = torch.Generator().manual_seed(0)
    rows = (torch.randn(3, 50, generator=g), 3 * torch.randn(4, 30, generator=g),
            torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]]))
    for logits in rows:
        for argument in arguments:
            got = _expect_tensor(fn(logits.clone(), argument), f"{name}(logits, {argument})",
                                 tuple(logits.shape))
            expected = reference(logits, argument)
            if not torch.equal(torch.isinf(got), torch.isinf(expected)):
                _fail(hint)
            kept = ~torch.isinf(expected)
            if not torch.equal(got[kept], logits[kept]):
                _fail("the logits you keep must stay unchanged; only the others become -inf.")
    _passed()


def _min_p_reference(logits: torch.Tensor, ratio: float) -> torch.Tensor:
    probs = logits.softmax(-1)
    too_unlikely = probs < ratio * probs.max(-1, keepdim=True).values
    return logits.masked_fill(too_unlikely, float("-inf"))


def _typical_reference(logits: torch.Tensor, mass: float) -> torch.Tensor:
    log_probs = logits.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1, keepdim=True)
    gap = (-log_probs - entropy).abs()  # how far each token's surprise is from the average
    _, order = gap.sort(dim=-1, stable=True)
    probs = log_probs.exp().gather(-1, order)
    drop_sorted = probs.cumsum(-1) - probs >= mass
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@graded
def check_min_p(min_p_filter) -> None:
    """Exercise 4.1: min-p keeps the tokens at least ``ratio`` times as likely as the top one."""
    _check_filter(min_p_filter, _min_p_reference, (0.05, 0.2, 0.5, 1.0), "min_p_filter",
                  "compare each token's probability (softmax of the logits) with ratio times "
                  "the probability of the most likely token in its row; keep it if it is at "
                  "least that, set it to float('-inf') otherwise (in logits: ratio multiplies "
                  "probabilities, so it adds log(ratio) to the largest logit).")


@graded
def check_typical(typical_filter) -> None:
    """Exercise 4.2: locally typical filtering, a nucleus over tokens ranked by typicality."""
    _check_filter(typical_filter, _typical_reference, (0.2, 0.5, 0.9), "typical_filter",
                  "rank the tokens by |-log p - H|, H the entropy of the row's distribution "
                  "(smallest first, not most likely first), then keep tokens while the total "
                  "probability of the tokens ranked before them is still below mass, as "
                  "top-p does.")


@graded
def check_perplexity(perplexity, loss: float) -> None:
    """Exercise 4.3: perplexity is exp(mean negative log-likelihood per token, in nats)."""
    import math

    if not isinstance(perplexity, float):
        _fail("give the perplexity as a Python float.")
    if abs(perplexity - math.exp(loss)) > 1e-6 * math.exp(loss):
        if abs(perplexity - 2**loss) < 1e-6 * 2**loss:
            _fail("the loss is in nats (natural log): use math.exp, not 2 **.")
        _fail("perplexity = exp(average cross-entropy per token).")
    _passed(f"as uncertain as a uniform choice among {perplexity:.0f} tokens.")


# --- Chapter 3: ELMo ---------------------------------------------------------------------


@graded
def check_scalar_mix(scalar_mix) -> None:
    """Exercise 3.1: ``scalar_mix(layers, s, gamma)`` computes γ · Σ_j softmax(s)_j · h_j."""
    g = torch.Generator().manual_seed(3)
    layers = [torch.randn(2, 5, 6, generator=g) for _ in range(3)]
    s, gamma = torch.tensor([0.3, -1.2, 2.0]), torch.tensor(1.5)
    weights = torch.softmax(s, dim=0)
    expected = gamma * sum(w * h for w, h in zip(weights, layers))
    got = _expect_tensor(scalar_mix(layers, s, gamma), "scalar_mix(...)", tuple(expected.shape))
    if _close(got, gamma * sum(w * h for w, h in zip(s, layers))):
        _fail("the weights are softmax(s), not s itself: they must be positive and sum to one.")
    if _close(got, expected / gamma):
        _fail("γ scales the whole mixed vector; multiply by gamma.")
    if not _close(got, expected):
        _fail("weight each layer by softmax(s)_j, add the weighted layers, then multiply by γ.")
    _passed("this is equation (1) of the ELMo paper.")


@graded
def check_reverse_left_padded(reverse) -> None:
    """Exercise 3.2: ``reverse(x, lengths)`` reverses each row's real positions, which sit at
    the end of a left-padded batch; the padding stays at the front."""
    x = torch.arange(12).reshape(3, 4)
    lengths = torch.tensor([4, 2, 1])
    expected = torch.tensor([[3, 2, 1, 0], [4, 5, 7, 6], [8, 9, 10, 11]])
    for features in (False, True):  # (B, T), then (B, T, C)
        data = torch.stack([x, -x], dim=-1) if features else x
        want = torch.stack([expected, -expected], dim=-1) if features else expected
        got = _expect_tensor(reverse(data.clone(), lengths), "reverse(x, lengths)",
                             tuple(data.shape))
        if torch.equal(got, data.flip(1)):
            _fail("x.flip(1) also moves the padding to the end: reverse only the last "
                  "lengths[b] positions of row b.")
        if not torch.equal(got, want):
            _fail("in a left-padded row of length T, the real positions are the last "
                  "lengths[b]: position t >= T - lengths[b] should hold x[b, 2T - lengths[b] - 1 "
                  "- t] (along every feature); the padding keeps its place and values.")
    _passed("a left-padded batch, as XLNet's classifier reads them, read right to left.")


# --- Chapter 5: BERT ---------------------------------------------------------------------


def _words_of(word_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) word index per token, -1 outside words -> (B, T) id unique over the batch."""
    rows = torch.arange(word_ids.shape[0])[:, None] * (int(word_ids.max()) + 1)
    return torch.where(word_ids >= 0, rows + word_ids, -1)


@graded
def check_whole_word_mask(whole_word_mask) -> None:
    """Exercise 5.1: ``whole_word_mask(input_ids, word_ids, mask_id, vocab_size, generator)``
    chooses 15% of the words, every token of a chosen word, then 80-10-10 per token."""
    from ctxlib.batches import IGNORE_INDEX

    g = torch.Generator().manual_seed(5)
    B, T = 200, 200
    ids = torch.randint(10, 500, (B, T), generator=g)
    word_length = torch.randint(1, 5, (B, T), generator=g)  # words of 1 to 4 tokens
    starts = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):  # word boundaries: a new word every word_length[b, t] tokens
        t, word = 0, 0
        while t < T:
            starts[b, t : t + int(word_length[b, t])] = word
            t, word = t + int(word_length[b, t]), word + 1
    special = torch.rand(B, T, generator=g) < 0.05
    word_ids = torch.where(special, -1, starts)
    word_ids[:, 0] = -1  # [CLS]

    def run(seed):
        result = whole_word_mask(ids.clone(), word_ids.clone(), 4, 500,
                                 torch.Generator().manual_seed(seed))
        if not isinstance(result, tuple) or len(result) != 2:
            _fail("return two tensors: the masked input_ids and the labels.")
        return tuple(_expect_tensor(t, name, (B, T)) for t, name in
                     zip(result, ("masked input_ids", "labels")))

    masked, labels = run(0)
    chosen = labels != IGNORE_INDEX
    if chosen[word_ids < 0].any():
        _fail("a position whose word_ids is -1 (a special token or padding) was chosen.")
    if not torch.equal(labels[chosen], ids[chosen]):
        _fail("the label of a chosen position is its ORIGINAL token id; IGNORE_INDEX elsewhere.")
    words = _words_of(word_ids)
    in_word = words >= 0
    _, word_index = torch.unique(words[in_word], return_inverse=True)
    tokens_per_word = torch.bincount(word_index)
    chosen_per_word = torch.bincount(word_index, weights=chosen[in_word].float())
    if ((chosen_per_word > 0) & (chosen_per_word < tokens_per_word)).any():
        _fail("some word was chosen only in part: when a word is chosen, every one of its "
              "tokens becomes a target (draw one number per word, then spread it to the "
              "word's tokens, for example with gather).")
    rate = (chosen_per_word > 0).float().mean().item()
    if abs(rate - 0.15) > 0.015:
        _fail(f"{rate:.1%} of the words were chosen; choose 15% of the words (not of the "
              "tokens).")
    if not torch.equal(masked[~chosen], ids[~chosen]):
        _fail("positions that were not chosen must keep their token.")
    as_mask = (masked[chosen] == 4).float().mean().item()
    kept = (masked[chosen] == ids[chosen]).float().mean().item()
    if abs(as_mask - 0.8) > 0.03 or abs(kept - 0.1) > 0.03:
        _fail(f"of the chosen tokens, {as_mask:.0%} became [MASK] and {kept:.0%} kept their "
              "token; use 80% [MASK], 10% a random token, 10% unchanged, decided per token.")
    replaced = chosen & (masked != 4) & (masked != ids)
    if ((masked[replaced] < 6) | (masked[replaced] >= 500)).any():
        _fail("a random replacement must be an ordinary token: an id in range(6, vocab_size).")
    again = run(0)
    if not (torch.equal(again[0], masked) and torch.equal(again[1], labels)):
        _fail("draw every random number from `generator`: the same generator seed must give "
              "the same masking.")
    _passed("whole words chosen, 15% of them; 80% [MASK], 10% random, 10% unchanged.")


def _learning_settings(history) -> dict:
    """A run's training configuration without the fields that do not change what it learns."""
    from ctxlib.train import TrainConfig

    return {k: v for k, v in history.run.get("config", {}).items()
            if k not in TrainConfig.BOOKKEEPING}


@graded
def check_nsp_ablation(nsp_runs) -> None:
    """Exercise 5.2: read the NSP ablation from the runs themselves.

    ``nsp_runs = {"with_nsp": (pretraining, finetuning), "without_nsp": (...)}``, each a pair
    of the :class:`ctxlib.train.History` objects ``train`` returned: the pretraining run (with
    ``settings`` recording ``use_nsp``) and the SST-2 fine-tuning run whose evaluation recorded
    the dev ``accuracy``.
    """
    if not isinstance(nsp_runs, dict) or set(nsp_runs) != {"with_nsp", "without_nsp"}:
        _fail('give a dict with the keys "with_nsp" and "without_nsp".')
    for name, runs in nsp_runs.items():
        if not (isinstance(runs, tuple) and len(runs) == 2
                and all(hasattr(r, "run") and (r.run or {}).get("id") for r in runs)):
            _fail(f"{name} should be a pair (pretraining History, fine-tuning History), both "
                  "as train(...) returned them: the check reads the runs, not typed numbers.")
    (pre_on, tune_on), (pre_off, tune_off) = nsp_runs["with_nsp"], nsp_runs["without_nsp"]
    for name, pre, wanted in (("with_nsp", pre_on, True), ("without_nsp", pre_off, False)):
        recorded = pre.run.get("settings", {}).get("use_nsp")
        if recorded is not wanted:
            _fail(f"the pretraining run of {name} should record use_nsp={wanted} in its "
                  f"settings (train(..., settings=dict(..., use_nsp={wanted}))); it records "
                  f"{recorded!r}.")
        steps = pre.run.get("config", {}).get("steps")
        if not pre.steps or pre.steps[-1] != steps:
            _fail(f"the pretraining run of {name} did not finish its {steps} steps.")
    if (_learning_settings(pre_on) != _learning_settings(pre_off)
            or pre_on.run["settings"].get("batch") != pre_off.run["settings"].get("batch")):
        _fail("pretrain both BERTs with the same training configuration and batch: only the "
              "NSP loss may differ.")
    accuracies = {}
    for name, tune in (("with_nsp", tune_on), ("without_nsp", tune_off)):
        if not tune.evals.get("accuracy"):
            _fail(f"the fine-tuning run of {name} recorded no dev 'accuracy': fine-tune with "
                  "finetune(..., evaluate=True), which scores the dev set at the end.")
        accuracies[name] = tune.evals["accuracy"][-1]
    if tune_on.run["id"] == tune_off.run["id"]:
        _fail("the two fine-tuning runs are the same run: fine-tune each pretrained model.")
    if _learning_settings(tune_on) != _learning_settings(tune_off):
        _fail("fine-tune both models with the same settings.")
    difference = accuracies["with_nsp"] - accuracies["without_nsp"]
    _passed(f"SST-2 dev accuracy {accuracies['with_nsp']:.3f} with NSP, "
            f"{accuracies['without_nsp']:.3f} without ({100 * difference:+.1f} points at this "
            "budget); compare with the spread between fine-tuning seeds before concluding.")


# --- Chapter 6: XLNet --------------------------------------------------------------------


@graded
def check_stream_masks(stream_masks) -> None:
    """Exercise 6.1: ``stream_masks(rank, num_predict, mem_len)`` gives the two streams' masks,
    (T, mem_len + T) booleans, True = may attend, from the step at which each position comes."""
    from ctxlib.xlnet import attention_masks, perm_mask_from_order

    g = torch.Generator().manual_seed(6)
    for T, num_predict, M in ((5, 5, 0), (8, 3, 0), (12, 4, 3), (7, 1, 2)):
        rank = torch.randperm(T, generator=g)  # rank[t]: the step at which position t comes
        blocked = perm_mask_from_order(rank.argsort(), num_predict)[None]
        content_blocked, query_blocked = attention_masks(1, T, M, perm_mask=blocked)
        result = stream_masks(rank.clone(), num_predict, M)
        if not isinstance(result, tuple) or len(result) != 2:
            _fail("return two tensors: the content stream's mask and the query stream's.")
        for got, expected_blocked, stream in zip(result, (content_blocked, query_blocked),
                                                 ("content", "query")):
            got = _expect_tensor(got, f"the {stream} stream's mask", (T, M + T))
            if got.dtype != torch.bool:
                _fail(f"the {stream} stream's mask should be a bool tensor (True = may attend).")
            expected = ~expected_blocked[0]
            if torch.equal(got, ~expected):
                _fail("True means MAY attend here (the opposite of perm_mask's 1).")
            wrong = (got != expected).nonzero()
            if len(wrong):
                i, j = wrong[0].tolist()
                where = (f"memory slot {j}" if j < M else f"position {j - M}")
                rule = ("memory is seen by every position" if j < M else
                        "context positions are seen by all; a target is seen only by the "
                        "positions that come after it in the order" +
                        (", and by itself" if stream == "content" else
                         " (a target's query stream never sees its own token)"))
                _fail(f"with rank {rank.tolist()}, {num_predict} predicted and {M} memory "
                      f"slots, may position {i} attend to {where} in the {stream} stream? "
                      f"It should be {bool(expected[i, j])}: {rule}.")
    _passed("memory and context for everyone; each target only after its turn in the order.")


@graded
def check_causal_relative_shift(causal_relative_shift) -> None:
    """Exercise 6.2: Transformer-XL's shift. ``causal_relative_shift(scores)`` turns scores
    against the distances K - 1 .. 0 (B, H, T, K) into scores against the keys (B, H, T, K);
    only the keys a query may see (key j <= M + i, M = K - T of memory) are compared."""
    g = torch.Generator().manual_seed(6)
    for T, M in ((4, 0), (5, 3), (1, 2)):
        K = M + T
        scores = torch.randn(2, 3, T, K, generator=g)
        got = _expect_tensor(causal_relative_shift(scores.clone()), "the shifted scores",
                             (2, 3, T, K))
        query, key = torch.arange(T)[:, None], torch.arange(K)[None, :]
        visible = key <= M + query  # (T, K): the past, memory included, and itself
        column = (T - 1 - query + key).clamp(max=K - 1)  # of distance M + i - j
        expected = scores.gather(-1, column.expand(2, 3, T, K))
        if not torch.equal(got[..., visible], expected[..., visible]):
            _fail(f"with T={T} queries and K={K} keys, entry [i, j] (j <= M + i) must come "
                  "from column T - 1 - i + j. Pad one column of zeros on the left, view "
                  "(T, K + 1) as (K + 1, T), drop the first row, view the rest as (T, K).")
    _passed("the zero column and two views pick, for every query and visible key, the score "
            "of their distance.")


# --- Chapter 7: head to head ---------------------------------------------------------------------


def _runs(row: torch.Tensor) -> list[int]:
    """Lengths of the runs of consecutive True in a 1-D bool tensor."""
    lengths, current = [], 0
    for value in row.tolist() + [False]:
        if value:
            current += 1
        elif current:
            lengths.append(current)
            current = 0
    return lengths


@graded
def check_span_mask(span_mask) -> None:
    """Exercise 7.1: ``span_mask(maskable, rate, max_span, generator)`` chooses, in each row of
    ``maskable`` (B, T) bool, round(rate x its maskable positions) of them (at least one), in
    spans of 1..max_span consecutive positions, drawn with ``generator``."""
    g = torch.Generator().manual_seed(7)
    maskable = torch.ones(64, 128, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] and [SEP]
    maskable[::2, 100:] = False  # padding in half the rows
    chosen = span_mask(maskable, 0.15, 5, g)
    chosen = _expect_tensor(chosen, "the chosen positions", tuple(maskable.shape))
    if chosen.dtype != torch.bool:
        _fail(f"return a bool tensor (True = chosen), got {chosen.dtype}.")
    if (chosen & ~maskable).any():
        _fail("a chosen position is not maskable ([CLS], [SEP] or padding): choose among the "
              "True positions of `maskable` only.")
    wanted = (0.15 * maskable.sum(1)).round().clamp(min=1)
    if not torch.equal(chosen.sum(1), wanted.long()):
        row = int((chosen.sum(1) != wanted.long()).nonzero()[0])
        _fail(f"row {row} has {int(maskable[row].sum())} maskable positions, so "
              f"{int(wanted[row])} should be chosen, not {int(chosen[row].sum())}: stop adding "
              "spans once the row has enough (cut the last span short).")
    runs = [n for row in chosen for n in _runs(row)]
    if sum(runs) / len(runs) < 1.5:
        _fail(f"the chosen positions come in runs of {sum(runs) / len(runs):.2f} on average: "
              "choose spans of consecutive positions (a random length in 1..max_span, then a "
              "start), not single positions.")
    again = span_mask(maskable, 0.15, 5, torch.Generator().manual_seed(7))
    other = span_mask(maskable, 0.15, 5, torch.Generator().manual_seed(8))
    if not torch.equal(again, chosen) or torch.equal(other, chosen):
        _fail("draw every random number from `generator`: the same seed must give the same "
              "spans, another seed other spans.")
    _passed(f"spans of {sum(runs) / len(runs):.2f} positions on average, 15% of each row.")


# --- Chapter 8: published weights ----------------------------------------------------------------


def check_published_finetune(path=None) -> None:
    """Exercise 8.1, graded from its hand-in (see ``ctxlib.handin.rescore_finetune``): the
    dev accuracy is computed again from the classifier and its inputs, against the dev
    labels of this machine's copy of SST-2."""
    from pathlib import Path

    from ctxlib import handin
    from ctxlib.data import load_sst2
    from ctxlib.runtime import checkpoint_path

    where = Path(path or checkpoint_path(handin.FINETUNE_FILE, budget="gpu"))
    if not where.exists():
        _not_graded(f"exercise 8.1 is graded from the file its cells write, and there is none "
                    f"at {where}. Run them with the published weights on a GPU and hand in "
                    f"{where.name} beside the notebook.")
        return
    labels = [label for _, label in load_sst2("dev")]
    try:
        blob = handin.read_finetune(where)
        if blob.get("capped_by") is not None:  # a code-path test's run (CTXLIB_MAX_STEPS)
            _not_graded(f"this run was capped at {blob['capped_by']} steps by "
                        "CTXLIB_MAX_STEPS.")
            return
        if blob.get("budget") != "gpu":  # BERT-base's features on a CPU: a smoke or cpu run
            _not_graded(f"the target {handin.FINETUNE_TARGET} is for the gpu budget, and this "
                        f"file was written under the {blob.get('budget')} budget: run the "
                        "exercise's cells with CTXLIB_BUDGET=gpu on a GPU.")
            return
        score = handin.rescore_finetune(blob, labels, len(load_sst2("train")))
    except handin.HandInProblem as problem:
        _fail(str(problem))
    shown = f"dev accuracy {score:.3f}, computed again from the file handed in"
    if score < handin.FINETUNE_TARGET:
        _fail(f"{shown}, is below the target {handin.FINETUNE_TARGET}: try another learning "
              "rate or more passes over the 1,000 sentences.")
    _passed(f"{shown} (target {handin.FINETUNE_TARGET}).")
