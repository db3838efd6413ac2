"""One protocol for "what does pretraining buy?": learning curves over the number of labels.

A single number from a single seed cannot say whether pretraining helps: the difference between
two runs is often smaller than the difference between two seeds of one run, and pretraining
pays most where labels are few (Howard and Ruder 2018, figure 3). So every chapter asks the
question the same way:

- an **arm** is one way of turning labelled training items into a score on the dev set: a
  linear probe on a pretrained model's frozen features, the same probe on the same model at
  random initialisation, a simple baseline, fine-tuning...;
- each arm is trained on ``n`` labelled items for several ``n`` (the learning curve), each
  ``n`` with several seeds (a different sample of items and a different initialisation), and
  the table gives the mean and the standard deviation over seeds;
- an arm's hyper-parameter (a learning rate, say) is chosen per arm and per ``n`` on a
  held-out slice of the *training* data, never on the dev set that is reported.

``learning_curve`` runs it and returns a :class:`Curve`; ``print_table`` (an HTML table in a
notebook) and
``ctxlib.plots.plot_learning_curves`` show it; ``save_results`` writes the per-seed scores to
a JSON file (``results/NN_name.json`` in the repository for the book's runs), so that a
reader, an instructor and a test can read them without parsing a notebook.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ctxlib.runtime import code_path_test, current_budget, describe_device, progress


@dataclass
class Arm:
    """One way to get a score from labelled items.

    ``fit(rows, seed, setting)`` trains on the training items ``rows`` (indices into the task's
    training pool) and returns a predictor, which must depend on those three alone (seed every
    random draw from ``seed``: a curve reuses the fit it made while choosing the setting);
    ``score(predictor, rows)`` scores it on training items ``rows`` (the held-out slice) or,
    with ``rows=None``, on the dev set. ``grid`` holds the candidate settings (for example
    learning rates); one candidate means no choice.
    """

    fit: Callable[[list[int], int, Any], Any]
    score: Callable[[Any, list[int] | None], float]
    grid: Sequence[Any] = (None,)


@dataclass
class Curve:
    """The scores of every arm at every number of labels, one per seed."""

    task: str
    metric: str
    sizes: list[int]
    seeds: list[int]
    scores: dict[str, dict[int, list[float]]]  # arm -> n -> [score of each seed]
    chosen: dict[str, dict[int, Any]] = field(default_factory=dict)  # arm -> n -> setting
    lines: dict[str, float] = field(default_factory=dict)  # constant references (majority)

    def mean(self, arm: str, n: int) -> float:
        return statistics.fmean(self.scores[arm][n])

    def std(self, arm: str, n: int) -> float:
        """Sample standard deviation over seeds (0 with a single seed)."""
        values = self.scores[arm][n]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def mean_sd(self, arm: str, n: int) -> str:
        """The score at ``n`` labels as every table shows it: "mean ± sd" over seeds."""
        return f"{self.mean(arm, n):.3f} ± {self.std(arm, n):.3f}"

    def gain(self, better: str, than: str, n: int) -> tuple[float, str]:
        """Mean difference ``better - than`` at ``n`` labels, and how it reads against twice
        the larger of the two arms' seed standard deviations (the course's bar):
        ``"better"`` beyond it, ``"worse"`` beyond it the other way, else ``"within"``.
        One seed has no spread to measure against: its difference is always "within"."""
        difference = self.mean(better, n) - self.mean(than, n)
        if len(self.scores[better][n]) < 2 or len(self.scores[than][n]) < 2:
            return difference, "within"
        bar = 2 * max(self.std(better, n), self.std(than, n))
        if difference > bar:
            return difference, "better"
        if difference < -bar:
            return difference, "worse"
        return difference, "within"


# How print_table marks a verdict of Curve.gain in the one-row-per-arm layout.
MARKS = {"better": "▲", "worse": "▼", "within": "·"}
MARKS_LEGEND = (f"({MARKS['better']}: better beyond twice the larger spread; "
                f"{MARKS['worse']}: worse beyond it; {MARKS['within']}: within it)")


def split_pool(pool_size: int, held_out: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Shuffle ``range(pool_size)`` once and cut it into (held-out rows, rows to label)."""
    if held_out < 0:
        raise ValueError(f"held_out must be 0 or more items, got {held_out}.")
    if held_out >= pool_size:
        raise ValueError(f"a held-out slice of {held_out} leaves nothing of a pool of "
                         f"{pool_size} items to train on.")
    rows = list(range(pool_size))
    random.Random(seed).shuffle(rows)
    return sorted(rows[:held_out]), rows[held_out:]


def learning_curve(task: str, arms: dict[str, Arm], pool_size: int, sizes: Sequence[int],
                   seeds: Sequence[int] = (0, 1, 2), held_out: int = 200,
                   metric: str = "accuracy", lines: dict[str, float] | None = None,
                   choose_at: int | None = None) -> Curve:
    """Score every arm with ``n`` labelled items for each ``n`` in ``sizes``, once per seed.

    The pool's items are split once into a held-out slice (``held_out`` items, for choosing
    each arm's setting) and the items to label; seed ``s`` labels its own random sample of
    ``n`` of those. Each arm's setting is chosen at every ``n``, or, to save time where a fit
    is expensive, once at ``n = choose_at`` and used at every ``n``. Sizes larger than what
    is left are dropped, with a note. A score that is NaN or infinite is an error naming the
    arm, size and seed (a silent NaN would win or lose a comparison at random).
    """
    _check_design(arms, sizes, seeds)
    if code_path_test():
        # A code-path test (a gpu budget's models, one step each, on a CPU): tiny pools, one
        # seed, one size and each arm's first setting: every fit runs the same code.
        seeds = list(seeds)[:1]
        held_out = min(held_out, pool_size // 4)
        sizes = [min(min(sizes), pool_size - held_out)]
        choose_at = None if choose_at is None else sizes[0]
        arms = {name: replace(arm, grid=tuple(arm.grid)[:1]) for name, arm in arms.items()}
    held, labelable = split_pool(pool_size, held_out)
    usable = [n for n in sizes if n <= len(labelable)]
    if len(usable) < len(sizes):
        print(f"{task}: only {len(labelable)} items to label; sizes "
              f"{[n for n in sizes if n > len(labelable)]} dropped.")
    if not usable:
        raise ValueError(f"{task}: no size in {list(sizes)} fits {len(labelable)} items.")
    scores = {name: {n: [] for n in usable} for name in arms}
    chosen: dict[str, dict[int, Any]] = {name: {} for name in arms}
    if choose_at is not None and choose_at not in usable:
        raise ValueError(f"choose_at={choose_at} is not one of the sizes {usable}.")
    choices = len(usable) if choose_at is None else 1
    runs = sum(choices * len(arm.grid) * (len(arm.grid) > 1) + len(usable) * len(seeds)
               for arm in arms.values())
    bar = progress(total=runs, desc=task, leave=False)

    def choose(name: str, arm: Arm, n: int) -> tuple[Any, Any]:
        """The setting that scores best on the held-out slice, trained on the first seed's
        sample of ``n`` items (ties: the first listed), and that fit's predictor (None when
        there was nothing to choose): the curve's own fit for the first seed at ``n``."""
        if len(arm.grid) == 1:
            return arm.grid[0], None
        rows = sample(labelable, n, seeds[0])
        best = None
        for candidate in arm.grid:
            predictor = arm.fit(rows, seeds[0], candidate)
            score = _finite(arm.score(predictor, held), task, name, n, seeds[0],
                            f"on the held-out slice with setting {candidate!r}")
            bar.update()
            if best is None or score > best[0]:
                best = (score, candidate, predictor)
        return best[1], best[2]

    for name, arm in arms.items():
        if choose_at is not None:
            once, fitted = choose(name, arm, choose_at)
        for n in usable:
            if choose_at is None:
                setting, fitted = choose(name, arm, n)
            else:
                setting = once
            chosen[name][n] = setting
            for seed in seeds:
                # A fit depends only on its rows, seed and setting: the choice already made
                # this one, so it is scored rather than trained again.
                reuse = (fitted is not None and seed == seeds[0]
                         and (choose_at is None or n == choose_at))
                predictor = fitted if reuse else arm.fit(sample(labelable, n, seed), seed,
                                                         setting)
                scores[name][n].append(_finite(arm.score(predictor, None), task, name, n,
                                               seed, "on the dev set"))
                bar.update()
    bar.close()
    return Curve(task, metric, list(usable), list(seeds), scores, chosen, dict(lines or {}))


def _check_design(arms: dict[str, Arm], sizes: Sequence[int], seeds: Sequence[int]) -> None:
    """Refuse a curve that could not be read right: nothing to run, or a size or seed twice
    (its scores would count twice and shrink the spread)."""
    for what, values in (("arms", list(arms)), ("sizes", list(sizes)),
                         ("seeds", list(seeds))):
        if not values:
            raise ValueError(f"a learning curve needs {what}; none were given.")
        twice = sorted({v for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"{what} {twice} are given twice: each must be given once.")


def _finite(score: float, task: str, arm: str, n: int, seed: int, where: str) -> float:
    """``score`` as a float; an error naming the arm, size and seed if it is NaN or infinite."""
    value = float(score)
    if not math.isfinite(value):
        raise ValueError(f"{task}: arm {arm!r} scored {value} {where}, with {n} labels and "
                         f"seed {seed}. Check its fit (a diverged training run?) and score.")
    return value


def merge_curves(curves: Sequence[Curve]) -> Curve:
    """One curve holding the arms of several curves of the same task, sizes and seeds (run
    separately, say one model at a time, to keep one model's features in memory at once)."""
    first = curves[0]
    if any((c.task, c.sizes, c.seeds) != (first.task, first.sizes, first.seeds) for c in curves):
        raise ValueError("only curves of the same task, sizes and seeds can be merged.")
    merged = Curve(first.task, first.metric, list(first.sizes), list(first.seeds), {}, {}, {})
    for c in curves:
        merged.scores.update(c.scores)
        merged.chosen.update(c.chosen)
        merged.lines.update(c.lines)
    return merged


def sample(rows: list[int], n: int, seed: int) -> list[int]:
    """``n`` of ``rows``, drawn without replacement by ``seed``: each seed labels other items."""
    return sorted(random.Random(1000 + seed).sample(rows, n))


@dataclass
class Table:
    """Rows of text cells under a title, with notes below: shown in a notebook as an HTML
    table, which wraps to the page, and as aligned text anywhere else (or when saved)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    left_columns: int = 0  # how many leading columns hold names (left-aligned), not numbers

    def text(self) -> str:
        widths = [max(len(row[k]) for row in [self.header, *self.rows]) + 2
                  for k in range(len(self.header))]

        def line(cells):
            return "".join(
                (cell.ljust(w) if k < self.left_columns else cell.rjust(w))
                for k, (cell, w) in enumerate(zip(cells, widths))).rstrip()

        return "\n".join([self.title, line(self.header), *map(line, self.rows), *self.notes])

    def html(self) -> str:
        from html import escape

        def cells(tag, row):
            return "".join(
                f'<{tag} style="text-align:{"left" if k < self.left_columns else "right"}">'
                f"{escape(cell)}</{tag}>" for k, cell in enumerate(row))

        body = "".join(f"<tr>{cells('td', row)}</tr>" for row in self.rows)
        notes = "".join(f"<br>{escape(note.strip())}" for note in self.notes)
        return (f"<table style=\"font-size:0.85em\"><caption>{escape(self.title)}</caption>"
                f"<thead><tr>{cells('th', self.header)}</tr></thead><tbody>{body}</tbody>"
                f"</table><p style=\"font-size:0.85em\">{notes.removeprefix('<br>')}</p>")

    def show(self) -> None:
        """An HTML table in a notebook's kernel; the text elsewhere (a script, a test)."""
        try:
            from IPython import get_ipython
        except ImportError:
            get_ipython = None
        shell = get_ipython() if get_ipython else None
        if shell is not None and getattr(shell, "kernel", None) is not None:
            from IPython.display import display

            display({"text/plain": self.text(), "text/html": self.html()}, raw=True)
        else:
            print(self.text())


def print_table(curve: Curve, compare: tuple[str, str] | Sequence[tuple[str, str]] = (),
                by_arm: bool = False) -> None:
    """One row per number of labels: each arm's mean ± standard deviation over seeds, and,
    with ``compare=(a, b)`` (or several such pairs), the gain of ``a`` over ``b`` and how it
    reads against the 2-sd bar (better, worse or within, see ``Curve.gain``). With
    ``by_arm=True``, one row per arm instead (for many arms), and one row per comparison.
    Shown as an HTML table in a notebook (see :class:`Table`)."""
    pairs = [compare] if compare and isinstance(compare[0], str) else list(compare)
    (_table_by_arm(curve, pairs) if by_arm else _table_by_size(curve, pairs)).show()


def _table_by_size(curve: Curve, pairs: Sequence[tuple[str, str]]) -> Table:
    names = list(curve.scores)
    gains = [f"gain {k + 1}" if len(pairs) > 1 else "gain" for k in range(len(pairs))]
    rows = []
    for n in curve.sizes:
        row = [f"{n:,}", *(curve.mean_sd(a, n) for a in names)]
        for pair in pairs:
            difference, verdict = curve.gain(*pair, n)
            row.append(f"{difference:+.3f}  {verdict:<6}")
        rows.append(row)
    notes = [f"{'':>8}{gain}: {a} minus {b}" for gain, (a, b) in zip(gains, pairs)
             if len(pairs) > 1]
    notes += [f"{'':>8}{label}: {value:.3f}" for label, value in curve.lines.items()]
    return Table(f"{curve.task} ({curve.metric}, {len(curve.seeds)} seeds)",
                 ["labels", *names, *(f"{g}  vs 2 sd" for g in gains)], rows, notes)


def _gain_label(a: str, b: str) -> str:
    """"x: gain over random init" for the pair (x, "x, random init"), else "a minus b"."""
    return f"{a}: gain over{b[len(a) + 1:]}" if b.startswith(f"{a},") else f"{a} minus {b}"


def _table_by_arm(curve: Curve, pairs: Sequence[tuple[str, str]]) -> Table:
    rows = [[arm, *(curve.mean_sd(arm, n) for n in curve.sizes)] for arm in curve.scores]
    for a, b in pairs:
        gains = [curve.gain(a, b, n) for n in curve.sizes]
        rows.append([_gain_label(a, b), *(f"{d:+.3f} {MARKS[verdict]}" for d, verdict in gains)])
    notes = [MARKS_LEGEND] if pairs else []
    notes += [f"{label}: {value:.3f}" for label, value in curve.lines.items()]
    return Table(f"{curve.task} ({curve.metric}, {len(curve.seeds)} seeds), by number of labels",
                 ["", *(f"{n:,}" for n in curve.sizes)], rows, notes, left_columns=1)


def results_path(name: str) -> Path:
    """Where a notebook writes its protocol's numbers: ``<CTXLIB_RESULTS>/<name>.json``.

    The script that runs the book's notebooks sets ``CTXLIB_RESULTS`` to the repository's
    ``results/`` folder; anywhere else the file goes to ``results/<budget>/`` in the current
    directory, so that a quick run never overwrites the book's numbers.
    """
    folder = os.environ.get("CTXLIB_RESULTS")
    path = Path(folder) if folder else Path.cwd() / "results" / current_budget()[0]
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{name}.json"


def save_results(name: str, curves: Sequence[Curve], **facts: Any) -> Path:
    """Write the curves (per-seed scores, chosen settings, reference lines) to JSON, with the
    budget and device that produced them and any other ``facts`` worth keeping. Says where,
    relative to the current directory (a stored notebook output shows no machine's paths),
    and returns the path."""
    tasks = [c.task for c in curves]
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        raise ValueError(f"two curves of the task(s) {twice}: one would overwrite the other. "
                         "Give them different task names, or merge_curves them.")
    record = {"chapter": name, "budget": current_budget()[0], "device": describe_device(),
              "torch": torch.__version__, **facts,
              "tasks": {c.task: {k: v for k, v in asdict(c).items() if k != "task"}
                        for c in curves}}
    try:  # standard JSON only: NaN and Infinity are not JSON, and other readers refuse them
        text = json.dumps(record, indent=1, default=str, allow_nan=False)
    except ValueError:
        raise ValueError(f"{name}: a number to save is NaN or infinite (a reference line, or "
                         "a fact); results files hold finite numbers only.") from None
    path = results_path(name)
    path.write_text(text + "\n")
    print(f"numbers written to {os.path.relpath(path)}")
    return path


def load_results(path: str | Path) -> list[Curve]:
    """The curves a ``save_results`` file holds (JSON keys are strings: sizes become ints)."""
    try:
        record = json.loads(Path(path).read_text())
        curves = []
        for task, c in record["tasks"].items():
            scores = {arm: {int(n): v for n, v in by_n.items()}
                      for arm, by_n in c["scores"].items()}
            chosen = {arm: {int(n): v for n, v in by_n.items()}
                      for arm, by_n in c["chosen"].items()}
            curves.append(Curve(task, c["metric"], c["sizes"], c["seeds"], scores, chosen,
                                c["lines"]))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is not a results file written by save_results (damaged or "
                         f"cut short? {type(error).__name__}: {error}).") from None
    return curves


# --- Arms built from frozen features ----------------------------------------------------------


def probe_arm(train_features: Sequence[torch.Tensor], train_labels: Sequence[torch.Tensor],
              dev_features: Sequence[torch.Tensor], dev_labels: Sequence[torch.Tensor],
              num_classes: int, l2s: Sequence[float] = (1e-3, 1e-2, 1e-1),
              metric: Callable[[list[torch.Tensor], list[torch.Tensor]], float] | None = None
              ) -> Arm:
    """A linear probe on frozen features, scored by accuracy over all labelled positions, or
    by ``metric(predicted, gold)``, two lists with one (positions,) tensor of label ids per
    item (entity F1 needs whole sentences, not positions).

    Items are sentences: ``train_features[i]`` is a (positions, D) tensor (one position per
    word for tagging, one per sentence for classification) and ``train_labels[i]`` its
    (positions,) labels. The probe is logistic regression fitted to convergence
    (:func:`ctxlib.probes.fit_linear_probe`); its weight penalty is the setting chosen on the
    held-out slice. The fit is convex, so the seeds differ only in the items they label.
    """
    from ctxlib.probes import fit_linear_probe

    def stack(features, labels, rows):
        return (torch.cat([features[r] for r in rows])[:, None].float(),
                torch.cat([labels[r] for r in rows]))

    dev = stack(dev_features, dev_labels, range(len(dev_features)))  # scored once per fit

    def fit(rows, seed, l2):
        return fit_linear_probe(*stack(train_features, train_labels, rows), num_classes, l2=l2)

    def score(probe, rows):
        x, y = dev if rows is None else stack(train_features, train_labels, rows)
        predicted = probe.predict(x)
        if metric is None:
            return (predicted == y).float().mean().item()
        gold = dev_labels if rows is None else [train_labels[r] for r in rows]
        return metric(list(predicted.split([len(g) for g in gold])), list(gold))

    return Arm(fit, score, tuple(l2s))


def most_frequent_arm(train_items: Sequence[Sequence[Any]], train_labels: Sequence[Sequence[Any]],
                      dev_items: Sequence[Sequence[Any]], dev_labels: Sequence[Sequence[Any]],
                      metric: Callable[[list[list[Any]], list[list[Any]]], float] | None = None
                      ) -> Arm:
    """The lookup baseline: each item (a word, say) gets the label it had most often in the
    labelled rows; unseen items get the most frequent label overall. Items are given per row
    (a sentence's words and tags). Scored by accuracy over all items, or by
    ``metric(predicted rows, gold rows)``."""
    from collections import Counter, defaultdict

    def fit(rows, seed, setting):
        by_item, overall = defaultdict(Counter), Counter()
        for r in rows:
            for item, label in zip(train_items[r], train_labels[r]):
                by_item[item][label] += 1
                overall[label] += 1
        fallback = overall.most_common(1)[0][0]
        return {k: c.most_common(1)[0][0] for k, c in by_item.items()}, fallback

    def score(table, rows):
        lookup, fallback = table
        items, labels = ((dev_items, dev_labels) if rows is None
                         else ([train_items[r] for r in rows], [train_labels[r] for r in rows]))
        if metric is not None:
            return metric([[lookup.get(i, fallback) for i in row] for row in items],
                          [list(ys) for ys in labels])
        pairs = [(lookup.get(i, fallback), y) for row, ys in zip(items, labels)
                 for i, y in zip(row, ys)]
        return sum(p == y for p, y in pairs) / len(pairs)

    return Arm(fit, score)
