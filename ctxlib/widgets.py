"""Interactive explorers (ipywidgets). Each has a static counterpart in ``ctxlib.plots``:
widgets need a running kernel, so the book shows the static plot next to them."""

from __future__ import annotations

from collections.abc import Callable

from ctxlib.runtime import device_of


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


def sampler(model, tokenizer, prompt: str, max_new_tokens: int = 200):
    """Sample from a GPT with sliders for temperature, top-k and top-p, and show the
    distribution of the next token after the prompt under those settings.

    ``model`` is a ``ctxlib.gpt.GPT``; ``tokenizer`` has ``encode``, ``decode`` and
    ``vocab_size``. Returns the widget.
    """
    import matplotlib.pyplot as plt
    import torch

    from ctxlib.gpt import top_k_logits, top_p_logits
    from ctxlib.plots import plot_next_token

    widgets = _ipywidgets()
    text = widgets.Textarea(value=prompt, description="prompt", layout={"width": "90%"})
    temperature = widgets.FloatSlider(0.8, min=0.05, max=2.0, step=0.05, description="temperature")
    top_k = widgets.IntSlider(0, min=0, max=min(200, tokenizer.vocab_size),
                              description="top-k (0=off)")
    top_p = widgets.FloatSlider(1.0, min=0.05, max=1.0, step=0.05, description="top-p")
    button = widgets.Button(description="sample")
    chart, sample = widgets.Output(), widgets.Output()
    labels = [tokenizer.decode([i]) for i in range(tokenizer.vocab_size)]
    device = device_of(model)

    def settings():
        return (temperature.value, top_k.value or None, top_p.value if top_p.value < 1 else None)

    def prompt_ids(output, keep_last: int | None = None):
        """The prompt's ids (B=1, T), or None after saying in ``output`` that it is empty."""
        ids = tokenizer.encode(text.value)
        if not ids:
            with output:
                output.clear_output(wait=True)
                print("Type a prompt: the model continues a text of at least one token.")
            return None
        return torch.tensor([ids[-keep_last:] if keep_last else ids], device=device)

    def show_distribution(*_):
        ids = prompt_ids(chart, keep_last=model.config.block_size)
        if ids is None:
            return
        t, k, p = settings()
        with torch.no_grad():
            logits = model.eval()(ids).logits[:, -1, :] / t
        if k:
            logits = top_k_logits(logits, k)
        if p:
            logits = top_p_logits(logits, p)
        with chart:
            chart.clear_output(wait=True)
            plot_next_token(logits.softmax(-1)[0].cpu(), labels, title="next token")
            plt.show()

    def draw_sample(*_):
        ids = prompt_ids(sample)
        if ids is None:
            return
        t, k, p = settings()
        out = model.generate(ids, max_new_tokens, temperature=t, top_k=k, top_p=p)
        with sample:
            sample.clear_output(wait=True)
            print(tokenizer.decode(out[0].tolist()))

    for control in (text, temperature, top_k, top_p):
        control.observe(show_distribution, names="value")
    button.on_click(draw_sample)
    show_distribution()
    return widgets.VBox([text, widgets.HBox([temperature, top_k, top_p]), chart, button, sample])


def layer_similarity(embed, first: str, second: str, layer_names: list[str]):
    """Two sentences, a word picked in each, and the cosine similarity of the two words'
    representations at every layer, as a bar chart.

    ``embed(words) -> tensor (layers, len(words), dim)`` gives a sentence's representations.
    The sentences are split on whitespace. Returns the widget.
    """
    import matplotlib.pyplot as plt
    import torch

    widgets = _ipywidgets()
    texts = [widgets.Text(value=s, description=f"sentence {i + 1}", layout={"width": "90%"})
             for i, s in enumerate((first, second))]
    pickers = [widgets.Dropdown(description=f"word {i + 1}") for i in range(2)]
    chart = widgets.Output()

    def refresh_words(*_):
        for text, picker in zip(texts, pickers):
            words = text.value.split() or ["(empty)"]
            keep = picker.value if picker.value in words else words[len(words) // 2]
            picker.options = list(dict.fromkeys(words))
            picker.value = keep
        draw()

    def draw(*_):
        vectors = []
        for text, picker in zip(texts, pickers):
            words = text.value.split()
            if picker.value not in words:  # the word list is being updated
                return
            vectors.append(embed(words)[:, words.index(picker.value)])  # (layers, dim)
        similarity = torch.cosine_similarity(vectors[0], vectors[1], dim=-1).tolist()
        with chart:
            chart.clear_output(wait=True)
            _, ax = plt.subplots(figsize=(6, 2.8))
            ax.bar(layer_names, similarity, color="tab:blue")
            ax.set_ylim(min(0.0, *similarity), 1.0)
            ax.set_ylabel("cosine similarity")
            ax.set_title(f"'{pickers[0].value}' vs '{pickers[1].value}', layer by layer")
            for i, value in enumerate(similarity):
                ax.text(i, value, f"{value:.2f}", ha="center", va="bottom")
            plt.show()

    for text in texts:
        text.observe(refresh_words, names="value")
    for picker in pickers:
        picker.observe(draw, names="value")
    refresh_words()
    return widgets.VBox([*texts, widgets.HBox(pickers), chart])


def permutation_explorer(tokens: list[str], num_predict: int = 2):
    """Pick a factorization order and how many of its last steps are predicted, and see what
    each token's content stream and query stream may attend to (``plot_stream_masks``)."""
    import matplotlib.pyplot as plt
    import torch

    from ctxlib.plots import plot_stream_masks
    from ctxlib.xlnet import perm_mask_from_order

    widgets = _ipywidgets()
    T = len(tokens)
    order = widgets.Text(value=" ".join(str(t) for t in range(T)),
                         description="order", layout={"width": "60%"})
    shuffle = widgets.Button(description="shuffle")
    predicted = widgets.IntSlider(num_predict, 1, T, description="predicted")
    output = widgets.Output()

    def redraw(*_):
        with output:
            output.clear_output(wait=True)
            try:
                positions = torch.tensor([int(p) for p in order.value.split()])
                mask = perm_mask_from_order(positions, predicted.value)
            except ValueError as error:
                print(f"{error} Type the positions 0..{T - 1}, each once, separated by spaces.")
                return
            plot_stream_masks(mask, positions, tokens)
            plt.show()

    def on_shuffle(_):
        order.value = " ".join(str(int(p)) for p in torch.randperm(T))

    shuffle.on_click(on_shuffle)
    for control in (order, predicted):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([order, shuffle]), predicted, output])
