import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from ctxlib.plots import plot_attention, plot_attention_heads, plot_losses
from ctxlib.train import History


def test_loss_plot_draws_train_and_eval_curves():
    history = History(steps=[1, 2, 3, 4], loss=[4.0, 3.0, 2.5, 2.0], lr=[1e-3] * 4,
                      seconds=[0.1] * 4, eval_steps=[2, 4],
                      evals={"valid_loss": [3.1, 2.2], "accuracy": [0.5, 0.6]})
    ax = plot_losses(history, title="run")
    labels = [line.get_label() for line in ax.get_lines()]
    assert "train (smoothed)" in labels and "valid loss" in labels and "accuracy" not in labels
    assert ax.get_title() == "run"
    with pytest.raises(ValueError, match="steps"):
        plot_losses({"loss": [1.0]})


def test_attention_plots_check_shapes():
    weights = torch.softmax(torch.randn(3, 5, 5), dim=-1)
    ax = plot_attention(weights[0], list("abcde"))
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcde")
    fig = plot_attention_heads(weights, list("abcde"), columns=2)
    assert sum(1 for a in fig.axes if a.images) == 3
    with pytest.raises(ValueError, match="do not match"):
        plot_attention(weights[0], list("abc"))


def test_next_token_plot_shows_the_most_likely_tokens():
    from ctxlib.plots import plot_next_token

    probs = torch.tensor([0.1, 0.6, 0.3])
    ax = plot_next_token(probs, ["a", "b", "c"], k=2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "c"]
    with pytest.raises(ValueError, match="do not match"):
        plot_next_token(probs, ["a"])


def test_stream_masks_plot_shows_the_query_stream_never_seeing_itself():
    from ctxlib.plots import plot_stream_masks
    from ctxlib.xlnet import perm_mask_from_order

    order = torch.tensor([2, 0, 3, 1])
    axes = plot_stream_masks(perm_mask_from_order(order, 4), order, list("abcd"))
    content, query = (ax.images[0].get_array() for ax in axes)
    assert content.diagonal().all() and not query.diagonal().any()
    assert content[0, 2] and not content[2, 0]  # a (step 2) sees c (step 1), not the reverse
    assert axes[0].get_yticklabels()[0].get_text() == "a (2)"
