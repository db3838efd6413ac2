"""Widgets: an empty prompt in the sampler gets a sentence, not an error from inside torch."""

import pytest
import torch

pytest.importorskip("ipywidgets")

from ctxlib.gpt import GPT, GPTConfig
from ctxlib.tokenizers import CharTokenizer
from ctxlib.widgets import sampler


def test_the_sampler_asks_for_a_prompt_when_it_is_empty(capsys):
    chars = CharTokenizer.train("to be or not to be")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=chars.vocab_size, block_size=8, n_layer=1, n_head=1,
                          n_embd=8))
    widget = sampler(model, chars, "", max_new_tokens=3)  # drawing the chart must not fail
    text, _, _, button, _ = widget.children
    button.click()  # nor sampling
    assert capsys.readouterr().out.count("Type a prompt") == 2
    text.value = "to be"  # a prompt again: the chart is drawn, no message
    button.click()
    assert "Type a prompt" not in capsys.readouterr().out
