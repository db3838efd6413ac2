"""Task data for encoders: labels land on the right tokens, and answers round-trip."""

import pytest
import torch

from ctxlib.batches import IGNORE_INDEX
from ctxlib.bert import SpanOutput
from ctxlib.data import squad_examples
from ctxlib.metrics import squad_exact_match
from ctxlib.tasks import (
    TaskData,
    batch,
    classification_data,
    predict,
    span_text,
    squad_data,
    tagging_data,
    trainable_rows,
    word_predictions,
)
from ctxlib.tokenizers import BPETokenizer


@pytest.fixture(scope="module")
def tokenizer():
    text = " ".join(e["context"] for e in squad_examples()[:400:20])
    return BPETokenizer.train(text, vocab_size=600)


def test_classification_wraps_in_cls_and_sep(tokenizer):
    data = classification_data(tokenizer, ["a fine film", "dull"], [1, 0], max_len=16)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    assert data.input_ids[0][0] == cls and data.input_ids[0][-1] == sep
    assert tokenizer.decode(data.input_ids[0][1:-1]) == "a fine film"
    _, _, mask, labels = batch(data, [0, 1])
    assert labels.tolist() == [1, 0] and mask[1].sum() == len(data.input_ids[1])
    assert len(classification_data(tokenizer, ["word " * 50], [0], max_len=10).input_ids[0]) == 10


def test_tagging_puts_each_label_on_the_first_token_of_its_word(tokenizer):
    words = ["Unbelievably", "long", "words", "here"]
    data = tagging_data(tokenizer, [words], [[5, 6, 7, 8]], max_len=64)
    labels = data.labels[0]
    assert [x for x in labels if x != IGNORE_INDEX] == [5, 6, 7, 8]
    assert labels[0] == labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    # Predictions per token come back as one per word, from each word's first token.
    token_predictions = [[0] + list(range(1, len(labels) - 1)) + [0]]
    per_word = word_predictions(data, token_predictions)[0]
    firsts = [i for i, x in enumerate(labels) if x != IGNORE_INDEX]
    assert per_word == [token_predictions[0][i] for i in firsts]


def test_squad_answers_round_trip_through_token_spans(tokenizer):
    examples = squad_examples()[:300]
    data = squad_data(tokenizer, examples, max_len=384)
    kept = trainable_rows(data)
    assert len(kept) > 250  # long passages lose a few answers to the cut
    exact = [squad_exact_match(span_text(data, i, data.labels[i], examples[i]["context"]),
                               examples[i]["answers"]) for i in kept]
    assert sum(exact) / len(exact) > 0.99
    _, segments, _, labels = batch(data, kept[:4])
    assert (segments[0, labels[0, 0] : labels[0, 1] + 1] == 1).all()  # inside the passage


def test_squad_answers_cut_off_are_marked(tokenizer):
    data = squad_data(tokenizer, squad_examples()[:50], max_len=24)
    assert None in data.labels and len(trainable_rows(data)) < 50


def test_predict_finds_the_best_span_inside_the_passage():
    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))

        def forward(self, ids, segments, mask):
            start = torch.zeros(ids.shape)
            end = torch.zeros(ids.shape)
            start[:, 0] = 100  # [CLS] scores best but is outside the passage
            start[:, 4], end[:, 5], end[:, 3], start[:, 3] = 5, 5, 50, -100  # (4, 3) is not allowed
            return SpanOutput(start_logits=start, end_logits=end)

    data = TaskData([[2, 10, 3, 11, 12, 13, 3]], [[0, 0, 0, 1, 1, 1, 1]], [(4, 5)],
                    [[None, None, None, 0, 1, 2, None]])
    assert predict(Fixed(), data) == [(4, 5)]
