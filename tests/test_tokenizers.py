"""Tokenizers: known answers on hand-worked examples, round trips, saving, bad ids."""

import os
import subprocess
import sys
import textwrap
import warnings

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


def test_saving_and_loading_is_utf8_whatever_the_locale(tmp_path):
    # A C/POSIX locale without UTF-8 mode makes Python's default text encoding ASCII; only a
    # fresh interpreter can be started that way, so the round trip runs in a subprocess.
    script = textwrap.dedent("""
        import locale, sys
        from ctxlib.tokenizers import BPETokenizer, CharTokenizer
        assert locale.getpreferredencoding(False).lower() in {"ascii", "ansi_x3.4-1968"}
        text = "café naïve 東京 " * 5
        folder = sys.argv[1]
        char = CharTokenizer.train(text)
        char.save(folder + "/char.json")
        assert CharTokenizer.load(folder + "/char.json").encode(text) == char.encode(text)
        bpe = BPETokenizer.train(text, vocab_size=270, special_tokens=("[PAD]", "[É]"),
                                 progress_bar=False)
        bpe.save(folder + "/bpe.json")
        loaded = BPETokenizer.load(folder + "/bpe.json")
        assert loaded.encode(text) == bpe.encode(text) and loaded.special_tokens[1] == "[É]"
    """)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "ascii"}
    env.pop("PYTHONCOERCECLOCALE", None)
    program = tmp_path / "round_trip.py"  # Python reads source files as UTF-8 in any locale
    program.write_text(script, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(program), str(tmp_path)],
        env=env, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"東"' in (tmp_path / "char.json").read_bytes().decode("utf-8")  # UTF-8 on disk


def test_bpe_warns_when_the_text_runs_out_of_merges():
    asked = len(SPECIAL_TOKENS) + 256 + 10
    with pytest.warns(UserWarning, match=rf"{len(SPECIAL_TOKENS) + 256 + 1}.*{asked}"):
        tok = BPETokenizer.train("ab", vocab_size=asked, progress_bar=False)  # one pair only
    assert tok.vocab_size == len(SPECIAL_TOKENS) + 256 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching the size asked for is silent
        BPETokenizer.train("ab", vocab_size=len(SPECIAL_TOKENS) + 257, progress_bar=False)
