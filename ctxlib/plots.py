"""Plots the chapters share: loss curves and attention heatmaps (matplotlib), and the course's
architecture diagrams (:func:`show_diagram`).

Importing this module sets the course's figure defaults (:func:`use_course_style`): figures as
wide as the book's page, fonts that stay legible at that width, and sharp images on high-DPI
screens. :func:`panels` lays out several plots at most three to a row, within the page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

PAGE_WIDTH = 7.0  # inches: the width of the book's text column at 96 dots per inch
MAX_COLUMNS = 3  # panels in a row; more would shrink their labels below legibility


def use_course_style() -> None:
    """Figure defaults for every chapter: page-wide, legible fonts, high-DPI inline images."""
    import matplotlib as mpl

    mpl.rcParams.update({
        "figure.figsize": (PAGE_WIDTH * 0.8, 3.4),
        "figure.dpi": 96,
        "savefig.dpi": 192,
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 9,
        "legend.framealpha": 0.85,
    })
    try:  # inside Jupyter: twice the pixels, shown at the same size (sharp on high-DPI screens)
        from IPython import get_ipython

        if get_ipython() is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("retina")
    except ImportError:
        pass


def panels(n: int, columns: int | None = None, height: float = 3.0):
    """A figure of ``n`` panels that fits the page: at most three to a row (four: two rows
    of two). Returns ``(fig, axes)``, with ``axes`` a flat list of ``n`` Axes."""
    import matplotlib.pyplot as plt

    if columns is None:
        columns = 2 if n == 4 else min(n, MAX_COLUMNS)
    columns = min(columns, MAX_COLUMNS, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PAGE_WIDTH, height * rows), squeeze=False,
                             layout="constrained")
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes[:n]


def _axes(ax, figsize=(6, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        width, height = figsize
        scale = min(1.0, PAGE_WIDTH / width)  # never wider than the page
        _, ax = plt.subplots(figsize=(width * scale, height * scale))
    return ax


use_course_style()


def _smooth(values: list[float], weight: float) -> np.ndarray:
    """Exponential moving average, the usual way to read a noisy training loss."""
    out, running = [], None
    for v in values:
        running = v if running is None else weight * running + (1 - weight) * v
        out.append(running)
    return np.array(out)


def plot_losses(history, ax=None, title: str | None = None, smooth: float = 0.9,
                log_scale: bool = False, eval_keys: list[str] | None = None):
    """Training loss (raw and smoothed) and evaluation curves of one run.

    ``history`` is a ``ctxlib.train.History`` or its ``to_dict()``: ``steps`` and ``loss``
    lists, and ``eval_steps`` with ``evals`` (name -> values). Evaluations whose name contains
    "loss" (or those in ``eval_keys``) are drawn on the same axes. Returns the Axes.
    """
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if "steps" not in history or "loss" not in history:
        raise ValueError("history needs 'steps' and 'loss' (a History or History.to_dict()).")
    ax = _axes(ax)
    steps, loss = history["steps"], history["loss"]
    ax.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=0.8)
    ax.plot(steps, _smooth(loss, smooth), color="tab:blue", label="train (smoothed)")
    evals = history.get("evals") or {}
    keys = eval_keys if eval_keys is not None else [k for k in evals if "loss" in k]
    for key in keys:
        ax.plot(history["eval_steps"], evals[key], "o-", label=key.replace("_", " "))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    if log_scale:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


DIAGRAMS = Path(__file__).parent / "figures"  # drawn by scripts/draw_diagrams.py


def show_diagram(name: str):
    """Display the architecture diagram ``name`` (e.g. ``"transformer_block"``), an SVG that
    ships with the package: a notebook opened on its own, as Colab opens it, still shows it."""
    from IPython.display import SVG

    path = DIAGRAMS / f"{name}.svg"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DIAGRAMS.glob("*.svg")))
        raise ValueError(f"no diagram called {name!r}; the diagrams are: {known}.")
    return SVG(filename=str(path))


def _as_array(weights) -> np.ndarray:
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().float().cpu().numpy()
    return np.asarray(weights)


def plot_attention(weights, x_tokens: list[str], y_tokens: list[str] | None = None, ax=None,
                   title: str | None = None, colorbar: bool = True):
    """Heatmap of attention weights (T_q, T_k): row i shows where query token i looks."""
    weights = _as_array(weights)
    y_tokens = x_tokens if y_tokens is None else y_tokens
    if weights.ndim != 2 or weights.shape != (len(y_tokens), len(x_tokens)):
        raise ValueError(f"weights of shape {weights.shape} do not match {len(y_tokens)} query "
                         f"and {len(x_tokens)} key tokens.")
    ax = _axes(ax, figsize=(0.35 * len(x_tokens) + 2, 0.35 * len(y_tokens) + 1))
    image = ax.imshow(weights, cmap="viridis", vmin=0, vmax=max(1e-9, weights.max()))
    ax.set_xticks(range(len(x_tokens)), x_tokens, rotation=90)
    ax.set_yticks(range(len(y_tokens)), y_tokens)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_attention_heads(weights, tokens: list[str], title: str | None = None,
                         columns: int = MAX_COLUMNS):
    """One heatmap per head, weights (H, T, T), at most three to a row. Returns the Figure."""
    weights = _as_array(weights)
    if weights.ndim != 3:
        raise ValueError(f"expected weights of shape (heads, T, T), got {weights.shape}.")
    heads = weights.shape[0]
    columns = min(columns, MAX_COLUMNS, heads)
    fig, axes = panels(heads, columns=columns, height=PAGE_WIDTH / columns + 0.4)
    fontsize = max(5, min(9, 200 / (len(tokens) * columns)))  # the tokens must fit the panel
    for h, ax in enumerate(axes):
        plot_attention(weights[h], tokens, ax=ax, title=f"head {h}", colorbar=False)
        ax.tick_params(labelsize=fontsize)
        if h % columns:
            ax.set_ylabel("")
        if h < heads - columns:
            ax.set_xlabel("")
    if title:
        fig.suptitle(title)
    return fig


def plot_next_token(probs, labels: list[str], ax=None, title: str | None = None, k: int = 15):
    """Bar chart of the ``k`` most likely next tokens; ``probs`` (V,), ``labels`` their names."""
    probs = _as_array(probs)
    if probs.ndim != 1 or len(probs) != len(labels):
        raise ValueError(f"probs of shape {probs.shape} do not match {len(labels)} labels.")
    top = np.argsort(-probs)[:k]
    ax = _axes(ax, figsize=(6, 3))
    ax.bar(range(len(top)), probs[top], color="tab:blue")
    ax.set_xticks(range(len(top)), [repr(labels[i])[1:-1] for i in top], rotation=90)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    return ax


def plot_stream_masks(perm_mask, order, tokens: list[str] | None = None, axes=None):
    """What each token of an XLNet factorization order may attend to, in both streams.

    ``perm_mask`` (T, T) with 1 where i may not attend to j (``ctxlib.xlnet`` convention) and
    ``order`` the positions in factorization order. Left: the content stream (a token also sees
    itself); right: the query stream (never itself). Rows are labelled "token (step)".
    Returns the two axes.
    """
    import matplotlib.pyplot as plt

    from ctxlib.xlnet import attention_masks

    perm_mask = torch.as_tensor(perm_mask)
    T = perm_mask.shape[0]
    content_blocked, query_blocked = attention_masks(1, T, 0, perm_mask=perm_mask[None])
    tokens = tokens or [str(t) for t in range(T)]
    step = {int(p): k for k, p in enumerate(_as_array(order))}
    rows = [f"{tokens[t]} ({step[t] + 1})" for t in range(T)]
    if axes is None:
        width = min(PAGE_WIDTH, 2 * (0.45 * T + 2))
        _, axes = plt.subplots(1, 2, figsize=(width, width / 2 + 0.6), layout="constrained")
    for ax, blocked, name in ((axes[0], content_blocked, "content stream h"),
                              (axes[1], query_blocked, "query stream g")):
        ax.imshow(_as_array(~blocked[0]), cmap="Blues", vmin=0, vmax=1.3)
        ax.set_xticks(range(T), tokens, rotation=90)
        ax.set_yticks(range(T), rows)
        ax.set_xlabel("may attend to")
        ax.set_title(name)
    axes[0].set_ylabel("token (step in the order)")
    return axes


def plot_learning_curves(curves, baselines: tuple[str, ...] = (), title_prefix: str = ""):
    """One panel per task of ``ctxlib.protocol`` curves: the score against the number of
    labelled items (log scale), each arm's mean over seeds with a band of ± one standard
    deviation and every seed as a dot; arms named in ``baselines`` and constant reference
    lines (a majority class) are drawn grey and dashed; one legend under the panels names
    them all. Returns the figure."""
    fig, axes = panels(len(curves), height=3.2)
    colours = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"])
    arm_colour: dict[str, str] = {}
    for ax, curve in zip(axes, curves):
        for arm in curve.scores:
            is_baseline = arm in baselines
            if not is_baseline and arm not in arm_colour:
                arm_colour[arm] = next(colours)
            colour = "0.45" if is_baseline else arm_colour[arm]
            means = np.array([curve.mean(arm, n) for n in curve.sizes])
            stds = np.array([curve.std(arm, n) for n in curve.sizes])
            ax.plot(curve.sizes, means, "--" if is_baseline else "o-", color=colour,
                    label=arm)
            if not is_baseline:
                ax.fill_between(curve.sizes, means - stds, means + stds, color=colour,
                                alpha=0.2, linewidth=0)
                for n in curve.sizes:
                    ax.plot([n] * len(curve.scores[arm][n]), curve.scores[arm][n], ".",
                            color=colour, alpha=0.5, markersize=4)
        for label, value in curve.lines.items():
            ax.axhline(value, color="0.45", linestyle=":", label=label)
        ax.set_xscale("log")
        ax.set_xticks(curve.sizes, [f"{n:,}" for n in curve.sizes])
        ax.minorticks_off()
        ax.set_xlabel("labelled training items")
        ax.set_ylabel(curve.metric)
        ax.set_title(f"{title_prefix}{curve.task}")
        ax.grid(alpha=0.3)
    # One legend for the figure, under the panels: inside a panel it covers the points.
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="outside lower center",
               ncols=min(len(entries), 4))
    return fig
