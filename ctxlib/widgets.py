"""Interactive explorers (ipywidgets). Each has a static counterpart in ``ctxlib.plots``:
widgets need a running kernel, so the book shows the static plot next to them."""

from __future__ import annotations

from collections.abc import Callable


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as error:  # pragma: no cover - ipywidgets is a dependency of ctxlib
        raise ImportError("the explorers need ipywidgets: pip install ipywidgets") from error
    return ipywidgets


def attention_explorer(weights_fn: Callable, text: str, n_layers: int, n_heads: int):
    """Type a sentence, pick a layer and a head, and see where each token attends.

    ``weights_fn(text) -> (tokens, weights)`` with ``weights`` of shape (layers, heads, T, T).
    Returns the widget (display it, or let it be the last value of a cell).
    """
    import matplotlib.pyplot as plt

    from ctxlib.plots import plot_attention

    widgets = _ipywidgets()
    sentence = widgets.Text(value=text, description="sentence", layout={"width": "90%"})
    layer = widgets.IntSlider(0, 0, max(0, n_layers - 1), description="layer")
    head = widgets.IntSlider(0, 0, max(0, n_heads - 1), description="head")
    output = widgets.Output()

    def redraw(*_):
        with output:
            output.clear_output(wait=True)
            tokens, weights = weights_fn(sentence.value)
            _, ax = plt.subplots(figsize=(0.4 * len(tokens) + 2, 0.4 * len(tokens) + 1))
            plot_attention(weights[layer.value, head.value], tokens, ax=ax,
                           title=f"layer {layer.value}, head {head.value}")
            plt.show()

    for control in (sentence, layer, head):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([sentence, widgets.HBox([layer, head]), output])
