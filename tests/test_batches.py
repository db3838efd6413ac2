import pytest
import torch

from ctxlib.batches import IGNORE_INDEX, align_labels, encode_words, lm_windows, pad_batch
from ctxlib.tokenizers import CharTokenizer


def test_lm_windows_targets_are_the_next_tokens():
    stream = torch.arange(1000) * 7
    x, y = lm_windows(stream, batch_size=8, block_size=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(y[:, :-1], x[:, 1:])
    starts = x[:, 0] // 7
    for row, start in enumerate(starts):  # each window is a contiguous slice of the stream
        assert torch.equal(x[row], stream[start : start + 16])
        assert torch.equal(y[row], stream[start + 1 : start + 17])


def test_lm_windows_depend_only_on_the_generator():
    stream = torch.arange(500)
    a = lm_windows(stream, 4, 8, torch.Generator().manual_seed(3))
    torch.manual_seed(99)  # the global generator must not matter
    b = lm_windows(stream, 4, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="fewer than block_size"):
        lm_windows(torch.arange(8), 1, 8, torch.Generator())


def test_pad_batch_masks_the_padding():
    ids, mask = pad_batch([[5, 6, 7], [8], [9, 10, 11, 12, 13]], pad_id=0, max_len=4)
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0], [9, 10, 11, 12]]
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    ids, mask = pad_batch([[5, 6, 7], [8], []], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([])
    with pytest.raises(ValueError, match="side"):
        pad_batch([[1]], side="top")


def test_align_labels_scores_each_word_once():
    # [CLS] play ##ing well [SEP]
    word_ids = [None, 0, 0, 1, None]
    assert align_labels(word_ids, [3, 4]) == [IGNORE_INDEX, 3, IGNORE_INDEX, 4, IGNORE_INDEX]
    assert align_labels(word_ids, [3, 4], label_all_subwords=True) == [IGNORE_INDEX, 3, 3, 4, IGNORE_INDEX]
    with pytest.raises(ValueError, match="has no label"):
        align_labels([0, 1, 2], [1, 2])


def test_encode_words_records_the_word_of_each_token():
    tok = CharTokenizer.train("ab c")
    ids, word_ids = encode_words(tok, ["ab", "c"])
    assert tok.decode(ids) == "ab c"
    assert word_ids == [0, 0, 1, 1]  # " c" is two characters of word 1
