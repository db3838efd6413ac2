"""Tokenizers: known answers on hand-worked examples, round trips, saving, bad ids."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxlib import data
from ctxlib.tokenizers import SPECIAL_TOKENS, BPETokenizer, CharTokenizer


@pytest.fixture(scope="module")
def wiki_bpe(shared_data):
    text = data.load_wikitext2("valid")[:300_000]
    return BPETokenizer.train(text, vocab_size=600, progress_bar=False)


def test_special_tokens_take_the_first_ids():
    tok = BPETokenizer.train("a b c", vocab_size=len(SPECIAL_TOKENS) + 256)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.token_to_id("[PAD]") == 0
    assert tok.encode("[SEP]", allow_special=True) == [SPECIAL_TOKENS.index("[SEP]")]
    assert len(tok.encode("[SEP]")) > 1  # as plain text it is just characters


def test_first_merges_on_a_hand_worked_corpus():
    text = "aaab aaab aaab"  # pre-tokens: "aaab" once, " aaab" twice
    tok = BPETokenizer.train(text, vocab_size=256 + 2, special_tokens=())
    a, b = ord("a"), ord("b")
    # Pair counts: (a,a): 2 per word x 3 words = 6; (a,b): 3; (space,a): 2. So (a,a) first.
    assert tok.merges[0] == (a, a)
    # Now words are [aa, a, b] and [' ', aa, a, b]: (aa, a) 3, (a, b) 3, (' ', aa) 2.
    # Tie at 3 goes to the smaller pair of ids: (a, b) = (97, 98) < (256, 97).
    assert tok.merges[1] == (a, b)
    assert tok.encode("aaab") == [256, 257]


def test_merges_are_applied_in_the_order_learned():
    # Pre-tokens "ab", " ab" twice, " bc": (a, b) occurs 3 times, (" ", a) twice.
    tok = BPETokenizer.train("ab ab ab bc", vocab_size=256 + 2, special_tokens=())
    assert tok.merges == [(ord("a"), ord("b")), (ord(" "), 256)]
    assert tok.tokenize(" abc") == [" ab", "c"]
    assert tok.tokenize("bab") == ["b", "ab"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bpe_decode_encode_is_the_identity_on_any_text(text):
    tok = _small_bpe()
    assert tok.decode(tok.encode(text)) == text


_cached = {}


def _small_bpe():
    if "tok" not in _cached:
        _cached["tok"] = BPETokenizer.train(
            "the cat sat on the mat; the dog ran. Ünïcödé 日本語 🙂 " * 20, vocab_size=300
        )
    return _cached["tok"]


def test_real_vocabulary_keeps_frequent_words_whole(wiki_bpe):
    assert len(wiki_bpe.encode(" the")) == 1
    assert len(wiki_bpe.encode(" anticonstitutionally")) > 3
    text = data.load_wikitext2("valid")[:5000]
    assert wiki_bpe.decode(wiki_bpe.encode(text)) == text
    assert len(wiki_bpe.encode(text)) < len(text.encode()) / 2  # compression


def test_save_and_load_give_the_same_encoding(wiki_bpe, tmp_path):
    wiki_bpe.save(tmp_path / "bpe.json")
    loaded = BPETokenizer.load(tmp_path / "bpe.json")
    text = " Valkyria Chronicles III is a tactical role @-@ playing video game"
    assert loaded.encode(text) == wiki_bpe.encode(text) and loaded.vocab_size == wiki_bpe.vocab_size
    with pytest.raises(ValueError, match="not a 'char'"):
        CharTokenizer.load(tmp_path / "bpe.json")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="abcdefgh .,\n"))
def test_char_round_trip_over_its_alphabet(text):
    tok = CharTokenizer.train("abcdefgh .,\n")
    assert tok.decode(tok.encode(text)) == text


def test_char_tokenizer_errors_and_saving(tmp_path):
    tok = CharTokenizer.train("hello world")
    assert tok.vocab_size == len(set("hello world"))
    with pytest.raises(ValueError, match="'z' is not in the vocabulary"):
        tok.encode("zebra")
    with pytest.raises(ValueError, match="token id 99 is outside the vocabulary"):
        tok.decode([1, 99])
    with_unk = CharTokenizer.train("hello", special_tokens=("[PAD]", "[UNK]"))
    assert with_unk.encode("hz") == [with_unk.stoi["h"], 1]
    tok.save(tmp_path / "c.json")
    assert CharTokenizer.load(tmp_path / "c.json").encode("hello") == tok.encode("hello")


def test_bpe_rejects_ids_outside_the_vocabulary():
    tok = _small_bpe()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="at least"):
        BPETokenizer.train("abc", vocab_size=10)
