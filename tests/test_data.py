"""ctxlib.data: the registry, lookup order, verification, and the parsers on the real files."""

import csv
import hashlib
import http.client
import tempfile
import urllib.request
from pathlib import Path

import pytest

from ctxlib import data


@pytest.fixture
def empty_places(tmp_path, monkeypatch):
    """No local data directory, an empty cache, and a network that is down."""
    monkeypatch.setenv("CTXLIB_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("CTXLIB_CACHE", str(tmp_path / "cache"))

    def offline(url, dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download", offline)
    return tmp_path / "cache"


def test_registry_matches_the_manifest(shared_data):
    with open(shared_data / "MANIFEST.tsv") as manifest:
        rows = list(csv.DictReader(manifest, delimiter="\t"))
    registered = {f.stored_path: f for splits in data.DATASETS.values() for f in splits.values()}
    assert set(registered) == {row["path"] for row in rows}
    for row in rows:
        file = registered[row["path"]]
        assert file.url == row["canonical_url"]
        assert file.sha256 == row["sha256_original"]
        assert file.sha256_stored == row["sha256"]


def test_counts_match_the_published_ones(shared_data):
    assert len(data.load_tinyshakespeare()) == 1_115_394
    lines = data.load_wikitext2("train").split("\n")[:-1]
    assert len(lines) == 36_718
    assert sum(len(line.split()) + 1 for line in lines) == 2_088_628  # one <eos> per line
    train, dev = data.load_sst2("train"), data.load_sst2("dev")
    assert (len(train), sum(y for _, y in train)) == (67_349, 37_569)
    assert (len(dev), sum(y for _, y in dev)) == (872, 444)
    assert not dev[0][0].endswith(" ")
    for split, sentences, words in [("dev", 2_001, 25_147), ("test", 2_077, 25_094)]:
        ud = data.load_ud_ewt(split)
        assert (len(ud), sum(len(s["words"]) for s in ud)) == (sentences, words)
        assert all(len(s["words"]) == len(s["upos"]) == len(s["heads"]) for s in ud)
    for split, sentences, tokens, entities in [
        ("train", 3_394, 62_730, 1_975), ("dev", 1_009, 15_733, 836), ("test", 1_287, 23_394, 1_079)
    ]:
        wnut = data.load_wnut17(split)
        assert len(wnut) == sentences
        assert sum(len(t) for t, _ in wnut) == tokens
        assert sum(tag.startswith("B-") for _, tags in wnut for tag in tags) == entities


def test_squad_answers_point_into_their_context(shared_data):
    examples = data.squad_examples()
    assert len(examples) == 10_570 and len(data.load_squad()) == 48
    for ex in examples:
        for text, start in zip(ex["answers"], ex["answer_starts"]):
            assert ex["context"][start : start + len(text)] == text


def test_wikitext_articles_start_at_titles(shared_data):
    articles = data.wikitext2_articles("valid")
    assert all(a[0].startswith("= ") and not a[0].startswith("= =") for a in articles)
    assert len(articles) > 50


def test_wikitext_sentences_are_articles_of_two_sentences_or_more(shared_data):
    articles = data.wikitext2_sentences("valid")
    assert len(articles) > 50 and all(len(a) >= 2 for a in articles)
    sentences = [s for a in articles for s in a]
    assert all(s.endswith(" .") and not s.startswith("=") for s in sentences)
    assert not any(" . " in s.removesuffix(" .") for s in sentences)  # cut at every " . "


def test_unknown_name_and_split_are_clear_errors():
    with pytest.raises(KeyError, match="Did you mean 'wikitext2'"):
        data.fetch("wikitext")
    with pytest.raises(KeyError, match="train, dev"):
        data.fetch("sst2", "test")


def test_missing_file_offline_names_url_and_destination(empty_places):
    with pytest.raises(data.DataNotFound) as error:
        data.fetch("sst2", "dev")
    message = str(error.value)
    assert data.DATASETS["sst2"]["dev"].url in message
    assert str(empty_places / "dev.tsv") in message and "CTXLIB_DATA" in message
    assert not any(empty_places.iterdir())  # no temporary file left behind


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_damaged_cache_file_is_removed_and_never_used(empty_places, shared_data, damage):
    original = (shared_data / "sst2" / "dev.tsv").read_bytes()
    cached = empty_places / "dev.tsv"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(original[:1000] if damage == "truncated" else original.replace(b"a", b"e"))
    with pytest.warns(UserWarning, match="Removing it"), pytest.raises(data.DataNotFound):
        data.fetch("sst2", "dev")
    assert not cached.exists()


def test_download_is_verified_and_lands_atomically(empty_places, shared_data, monkeypatch):
    original = (shared_data / "sst2" / "dev.tsv").read_bytes()
    seen = []

    def fake_download(url, dest):
        assert url == data.DATASETS["sst2"]["dev"].url
        assert Path(dest).parent == empty_places and Path(dest).name != "dev.tsv"
        seen.append(dest)
        Path(dest).write_bytes(original)

    monkeypatch.setattr(data, "_download", fake_download)
    path = data.fetch("sst2", "dev")
    assert path == empty_places / "dev.tsv" and seen
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data.DATASETS["sst2"]["dev"].sha256
    assert sorted(p.name for p in empty_places.iterdir()) == ["dev.tsv"]
    assert len(data.load_sst2("dev")) == 872  # and it is then found in the cache


def test_download_with_wrong_bytes_is_rejected_and_removed(empty_places, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda url, dest: Path(dest).write_bytes(b"<html>"))
    with pytest.raises(data.ChecksumMismatch, match="corrupt and was removed"):
        data.fetch("sst2", "dev")
    assert not any(empty_places.iterdir())


def test_damaged_local_copy_is_an_error_that_says_what_to_do(tmp_path, monkeypatch, shared_data):
    local = tmp_path / "sst2"
    local.mkdir()
    (local / "dev.tsv").write_bytes((shared_data / "sst2" / "dev.tsv").read_bytes()[:-10])
    monkeypatch.setenv("CTXLIB_DATA", str(tmp_path))
    with pytest.raises(data.ChecksumMismatch, match="replace it with the file from https://"):
        data.fetch("sst2", "dev")


def test_describe_downloads_nothing(empty_places):
    table = data.describe()
    assert "download on first use" in table and "wikitext2" in table
    assert not empty_places.exists() or not any(empty_places.iterdir())


def test_missing_data_directory_is_named_in_the_error(empty_places, tmp_path):
    # A typo in CTXLIB_DATA should be pointed out, not hidden behind a generic "not found".
    with pytest.raises(data.DataNotFound) as error:
        data.fetch("sst2", "dev")
    message = str(error.value)
    assert str(tmp_path / "nothing-here") in message
    assert "does not exist" in message and "CTXLIB_DATA" in message


@pytest.mark.parametrize("failing", ["mkdir", "mkstemp"])
def test_unwritable_cache_says_so_and_names_the_variable(empty_places, monkeypatch, failing):
    # Tests run as root, where file modes do not stop writes: make the write itself fail.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    if failing == "mkdir":
        monkeypatch.setattr(Path, "mkdir", refuse)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as error:
        data.fetch("sst2", "dev")
    message = str(error.value)
    assert "not writable" in message and str(empty_places) in message
    assert "CTXLIB_CACHE" in message
    assert isinstance(error.value, data.CacheNotWritable)


class _CutResponse:
    """A response whose connection drops after the first chunk."""

    def __init__(self, failure):
        self.headers = {"Content-Length": "94931"}
        self.failure, self.chunks = failure, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, size=-1):
        self.chunks += 1
        if self.chunks == 1:
            return b"sentence\tlabel\n"
        raise self.failure


@pytest.mark.parametrize(
    "failure",
    [http.client.IncompleteRead(b"", 90_000), ConnectionResetError(104, "Connection reset by peer")],
    ids=["incomplete-read", "connection-reset"],
)
def test_cut_download_is_a_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch, failure):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CTXLIB_DATA", str(tmp_path))
    monkeypatch.setenv("CTXLIB_CACHE", str(cache))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _CutResponse(failure))
    with pytest.raises(data.DataNotFound, match="cut") as error:
        data.fetch("sst2", "dev")
    assert "run again" in str(error.value).lower()
    assert not any(cache.iterdir())  # the partial temporary file is gone
