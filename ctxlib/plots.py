"""Plots the chapters share: loss curves and attention heatmaps (matplotlib)."""

from __future__ import annotations

import numpy as np
import torch


def _axes(ax, figsize=(6, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


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


def plot_attention_heads(weights, tokens: list[str], title: str | None = None, columns: int = 4):
    """One heatmap per head, weights (H, T, T). Returns the Figure."""
    import matplotlib.pyplot as plt

    weights = _as_array(weights)
    if weights.ndim != 3:
        raise ValueError(f"expected weights of shape (heads, T, T), got {weights.shape}.")
    heads = weights.shape[0]
    columns = min(columns, heads)
    rows = -(-heads // columns)
    size = 0.25 * len(tokens) + 1.5
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h < heads:
            plot_attention(weights[h], tokens, ax=ax, title=f"head {h}", colorbar=False)
        else:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
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
        _, axes = plt.subplots(1, 2, figsize=(2 * (0.45 * T + 2), 0.45 * T + 1.2))
    for ax, blocked, name in ((axes[0], content_blocked, "content stream h"),
                              (axes[1], query_blocked, "query stream g")):
        ax.imshow(_as_array(~blocked[0]), cmap="Blues", vmin=0, vmax=1.3)
        ax.set_xticks(range(T), tokens, rotation=90)
        ax.set_yticks(range(T), rows)
        ax.set_xlabel("may attend to")
        ax.set_title(name)
    axes[0].set_ylabel("token (step in the order)")
    return axes
