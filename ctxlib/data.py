"""The course data sets by name: found locally, in the cache, or downloaded and verified.

Every file is known by a short name and split, with the address it is published at (pinned to
one commit, so its bytes never change) and the SHA-256 of those bytes. ``fetch`` looks for it:

1. in each directory of ``CTXLIB_DATA`` (``os.pathsep``-separated; the course's tests and
   Makefile point it at ``../shared/data``, where large text files are stored gzipped);
2. in the cache, ``CTXLIB_CACHE`` or ``~/.cache/ctxlib``;
3. online: a download into a temporary file, verified, then renamed into the cache. A file
   whose checksum does not match is deleted and never used.

Parsers turn each format into plain Python structures: ``load_wikitext2``, ``load_sst2``, ...
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from ctxlib.runtime import progress


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: where it is published and how to recognise its bytes."""

    stored_path: str  # path inside a CTXLIB_DATA directory (may end in .gz)
    url: str  # canonical address, pinned to a commit; returns the original bytes
    sha256: str  # checksum of the original (uncompressed) bytes
    sha256_stored: str  # checksum of the stored file (differs only for .gz)
    size: int  # bytes of the original

    @property
    def filename(self) -> str:
        """Name of the original file in the cache."""
        return Path(self.stored_path).name.removesuffix(".gz")


_RAW = "https://raw.githubusercontent.com"
_UD = f"{_RAW}/UniversalDependencies/UD_English-EWT/4c89b5833a70aa5ed3a00bad2f23f57992cc7df8"
_WIKI = f"{_RAW}/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8/word_language_model/data/wikitext-2"
_SST = f"{_RAW}/eyalbd2/Reproducing-AutoPrompt/6288fb5bec9c572f2492875ae0111df5b6daed11/glue_data/SST-2"
_WNUT = f"{_RAW}/leondz/emerging_entities_17/e52a2d2a71ac1a051ca2d532eef28653c5c02603"

# name -> split -> file. Values copied from the data's MANIFEST.tsv (a test compares them).
DATASETS: dict[str, dict[str, RemoteFile]] = {
    "tinyshakespeare": {
        "train": RemoteFile(
            "tinyshakespeare/input.txt",
            f"{_RAW}/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            1115394,
        ),
    },
    "wikitext2": {
        "train": RemoteFile(
            "wikitext-2/train.txt.gz",
            f"{_WIKI}/train.txt",
            "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            "0c202e0b5d919429261b7291d9b5998f0db680c0a6700c0ff2a886d0abe055d4",
            10797148,
        ),
        "valid": RemoteFile(
            "wikitext-2/valid.txt",
            f"{_WIKI}/valid.txt",
            "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            1121681,
        ),
        "test": RemoteFile(
            "wikitext-2/test.txt",
            f"{_WIKI}/test.txt",
            "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
            1256449,
        ),
    },
    "sst2": {
        "train": RemoteFile(
            "sst2/train.tsv.gz",
            f"{_SST}/train_full.tsv",
            "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
            "1c4843303462f8f93e006ff618a9e61d207468cafd030046d7d7fd6b78af342b",
            3806081,
        ),
        "dev": RemoteFile(
            "sst2/dev.tsv",
            f"{_SST}/dev.tsv",
            "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
            "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
            94931,
        ),
    },
    "ud_ewt": {
        "train": RemoteFile(
            "ud_english_ewt/en_ewt-ud-train.conllu.gz",
            f"{_UD}/en_ewt-ud-train.conllu",
            "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
            "bd47e08c9e18ec12d319e84df2ccdb272ff6de1d0dba5761117d3caf8b358f7b",
            14203025,
        ),
        "dev": RemoteFile(
            "ud_english_ewt/en_ewt-ud-dev.conllu",
            f"{_UD}/en_ewt-ud-dev.conllu",
            "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
            "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
            1805545,
        ),
        "test": RemoteFile(
            "ud_english_ewt/en_ewt-ud-test.conllu",
            f"{_UD}/en_ewt-ud-test.conllu",
            "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
            "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
            1804515,
        ),
    },
    "wnut17": {
        "train": RemoteFile(
            "wnut17/wnut17train.conll",
            f"{_WNUT}/wnut17train.conll",
            "731820e13f71af324c6b55a1575ec2ce59fbaa2a0806f8f0400b98d56cd6a7a5",
            "731820e13f71af324c6b55a1575ec2ce59fbaa2a0806f8f0400b98d56cd6a7a5",
            493781,
        ),
        "dev": RemoteFile(
            "wnut17/emerging.dev.conll",
            f"{_WNUT}/emerging.dev.conll",
            "e053b752b8155113ca66e7db08af5f2f5f43ab993694e4774f1ec5bad42312d8",
            "e053b752b8155113ca66e7db08af5f2f5f43ab993694e4774f1ec5bad42312d8",
            114749,
        ),
        "test": RemoteFile(
            "wnut17/emerging.test.annotated",
            f"{_WNUT}/emerging.test.annotated",
            "2aa79b764e56ec9264a1b30fdd9b70195bd00ff400b62edd8f399d5f13c178f0",
            "2aa79b764e56ec9264a1b30fdd9b70195bd00ff400b62edd8f399d5f13c178f0",
            192425,
        ),
    },
    "squad": {
        "dev": RemoteFile(
            "squad_v1.1/dev-v1.1.json.gz",
            f"{_RAW}/rajpurkar/SQuAD-explorer/eee5fdbf62f8613a7812b03419e6b29617b74fd1/dataset/dev-v1.1.json",
            "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
            "5ef5752d50566ab538501116de1508326eefb6bf70026def7915309f30822727",
            4854279,
        ),
    },
}

LICENSES = {
    "tinyshakespeare": "public domain text; compilation by A. Karpathy, char-rnn (MIT)",
    "wikitext2": "CC BY-SA 3.0 (Merity et al. 2016; text from Wikipedia)",
    "sst2": "no explicit licence; research use, cite Socher et al. 2013",
    "ud_ewt": "CC BY-SA 4.0 (Universal Dependencies English EWT v2.16)",
    "wnut17": "CC BY 4.0 (Derczynski et al. 2017)",
    "squad": "CC BY-SA 4.0 (Rajpurkar et al. 2016)",
}


class DataNotFound(FileNotFoundError):
    """A data file is neither local nor in the cache, and could not be downloaded."""


class ChecksumMismatch(ValueError):
    """A file's bytes are not the published ones (corrupt, truncated, or a different file)."""


class CacheNotWritable(PermissionError):
    """The cache directory cannot be written to, so nothing can be downloaded into it."""


# --- Finding files ------------------------------------------------------------------------------


def remote_file(name: str, split: str | None = None) -> RemoteFile:
    """The registry entry of data set ``name``, split ``split`` (the only split if None)."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}.{hint}")
    splits = DATASETS[name]
    if split is None:
        if len(splits) != 1:
            raise ValueError(f"data set {name!r} has splits {', '.join(splits)}: choose one.")
        split = next(iter(splits))
    if split not in splits:
        raise KeyError(f"data set {name!r} has no split {split!r}; it has: {', '.join(splits)}.")
    return splits[split]


def cache_dir() -> Path:
    """Where downloads go: ``CTXLIB_CACHE`` or ``~/.cache/ctxlib``."""
    return Path(os.environ.get("CTXLIB_CACHE") or Path.home() / ".cache" / "ctxlib")


def data_dirs() -> list[Path]:
    """The local data directories listed in ``CTXLIB_DATA``."""
    return [Path(p) for p in os.environ.get("CTXLIB_DATA", "").split(os.pathsep) if p]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_verified: set[tuple[str, int, float]] = set()  # (path, size, mtime) of files already checked


def _verify(path: Path, expected: str) -> None:
    key = (str(path), path.stat().st_size, path.stat().st_mtime)
    if key in _verified:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise ChecksumMismatch(f"{path} has SHA-256 {actual}, expected {expected}.")
    _verified.add(key)


def _local_candidates(file: RemoteFile, first_dirs=()) -> list[tuple[Path, str]]:
    """(path, expected sha256) pairs where the file may already be, in lookup order."""
    found = []
    for directory in [*first_dirs, *data_dirs()]:
        stored = directory / file.stored_path
        found.append((stored, file.sha256_stored))
        if stored.suffix == ".gz":  # an uncompressed copy next to it is fine too
            found.append((stored.with_suffix(""), file.sha256))
    found.append((cache_dir() / file.filename, file.sha256))
    return found


def _missing_data_dirs() -> str:
    """A sentence naming the ``CTXLIB_DATA`` directories that do not exist ('' if none).

    A typo in that path otherwise looks exactly like a file that was never there.
    """
    missing = [str(d) for d in data_dirs() if not d.is_dir()]
    if not missing:
        return ""
    if len(missing) == 1:
        return f" The directory {missing[0]} set in CTXLIB_DATA does not exist: check the path."
    return f" The directories {', '.join(missing)} set in CTXLIB_DATA do not exist: check them."


def _cache_not_writable(directory: Path, error: OSError) -> CacheNotWritable:
    """The error for a cache we cannot write to, saying which directory and what to set."""
    return CacheNotWritable(
        f"the cache directory {directory} is not writable ({error.strerror or error}). Set "
        "CTXLIB_CACHE to a directory you can write to, or CTXLIB_DATA to one holding the data."
    )


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` with a progress bar (no verification here)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with progress(total=total, unit="B", unit_scale=True, desc=Path(url).name) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def fetch(name: str, split: str | None = None) -> Path:
    """Local path of the verified file of data set ``name`` (see the module docstring)."""
    return fetch_file(remote_file(name, split), repr(name))


def fetch_file(file: RemoteFile, what: str, first_dirs=()) -> Path:
    """Local path of the verified ``file``: looked for in ``first_dirs``, then as ``fetch``
    does. ``what`` names it in messages (the course checkpoints use this too)."""
    for path, expected in _local_candidates(file, first_dirs):
        if not path.is_file():
            continue
        try:
            _verify(path, expected)
            return path
        except ChecksumMismatch as error:
            if path.parent == cache_dir():
                warnings.warn(f"{error} Removing it and fetching it again.", stacklevel=2)
                try:
                    path.unlink()
                except OSError as unlink_error:
                    raise _cache_not_writable(path.parent, unlink_error) from None
            else:
                raise ChecksumMismatch(
                    f"{error} This local copy is damaged: replace it with the file from "
                    f"{file.url}."
                ) from None

    destination = cache_dir() / file.filename
    # Download next to the destination, verify, then rename: a half-written or wrong file
    # never sits under the final name, even if the download is interrupted.
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{file.filename}.")
    except OSError as error:  # a read-only home or CTXLIB_CACHE: say which, and what to set
        raise _cache_not_writable(destination.parent, error) from None
    os.close(handle)
    temporary = Path(temporary)
    try:
        _download(file.url, temporary)
        _verify(temporary, file.sha256)
        os.replace(temporary, destination)
    except (http.client.IncompleteRead, ConnectionError) as error:
        # The connection dropped mid-file (urllib wraps failures to connect in URLError, so
        # these come from reading the response): a network hiccup that a new try usually fixes.
        raise DataNotFound(
            f"the download of {what} was cut before the end ({error}); the partial file was "
            f"removed. Run again to download it again (from {file.url})."
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise DataNotFound(
            f"could not find or download {what} ({error}). Fetch {file.url} and save it as "
            f"{destination}, or set CTXLIB_DATA to a directory holding {file.stored_path}."
            + _missing_data_dirs()
        ) from None
    except ChecksumMismatch as error:
        raise ChecksumMismatch(f"the download of {what} is corrupt and was removed: {error}")
    finally:
        temporary.unlink(missing_ok=True)
    return destination


def describe() -> str:
    """A table of every data file and where it is: local, cached, or to be downloaded.

    Nothing is downloaded or hashed here. Local copies are shown relative to their
    ``CTXLIB_DATA`` directory, so the table reads the same on every machine.
    """
    rows = [f"{'data set':<16}{'split':<7}{'size':>9}  where"]
    for name, splits in DATASETS.items():
        for split, file in splits.items():
            where = "download on first use"
            for path, _ in _local_candidates(file):
                if path.is_file():
                    where = "cache" if path.parent == cache_dir() else (
                        f"local (<CTXLIB_DATA>/{file.stored_path.split('/')[0]})")
                    break
            rows.append(f"{name:<16}{split:<7}{file.size / 1e6:>7.1f}MB  {where}")
    return "\n".join(rows)


# --- Parsers ------------------------------------------------------------------------------------


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path``, decompressing ``.gz`` files."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return f.read()


def load_tinyshakespeare() -> str:
    """Tiny Shakespeare: 1,115,394 characters of plays (split it yourself: 90/10 is usual)."""
    return read_text(fetch("tinyshakespeare"))


def load_wikitext2(split: str = "train") -> str:
    """WikiText-2 (tokenized release) as one string, exactly as published.

    Each line is a paragraph or a heading (`` = Title = ``, `` = = Section = = ``); rare words
    are ``<unk>``; hyphens and number separators are split off as `` @-@ ``, `` @,@ ``, `` @.@ ``.
    """
    return read_text(fetch("wikitext2", split))


def wikitext2_articles(split: str = "train") -> list[list[str]]:
    """WikiText-2 as articles, each a list of its non-empty lines (headings included).

    A line `` = Title = `` (one ``=`` on each side) starts an article.
    """
    articles: list[list[str]] = []
    for line in load_wikitext2(split).split("\n"):
        line = line.strip()
        if not line:
            continue
        if line.startswith("= ") and line.endswith(" =") and not line.startswith("= ="):
            articles.append([])
        if not articles:  # text before the first title (none in the real files)
            articles.append([])
        articles[-1].append(line)
    return articles


def wikitext2_sentences(split: str = "train") -> list[list[str]]:
    """WikiText-2 articles as lists of sentences (BERT's pretraining documents): headings
    dropped, paragraphs cut at `` . ``; articles of fewer than two sentences are left out,
    since they cannot give a sentence pair."""
    articles = []
    for lines in wikitext2_articles(split):
        sentences = []
        for line in lines:
            if line.startswith("="):
                continue
            sentences += [s.strip() + " ." for s in line.split(" . ") if s.strip()]
        if len(sentences) >= 2:
            articles.append(sentences)
    return articles


def load_sst2(split: str = "train") -> list[tuple[str, int]]:
    """SST-2 as ``(sentence, label)`` pairs; label 1 = positive, 0 = negative."""
    lines = read_text(fetch("sst2", split)).splitlines()
    if lines[0].split("\t") != ["sentence", "label"]:
        raise ValueError(f"unexpected SST-2 header {lines[0]!r}")
    pairs = []
    for line in lines[1:]:
        sentence, label = line.rsplit("\t", 1)
        pairs.append((sentence.strip(), int(label)))
    return pairs


def read_conllu(path: Path) -> list[dict]:
    """Sentences of a CoNLL-U file: dicts with ``sent_id``, ``text``, ``words``, ``upos``,
    ``xpos``, ``heads`` and ``deprels``. Multiword tokens (``1-2``) and empty nodes (``1.1``)
    are skipped: the lists hold the syntactic words, which the annotations refer to."""
    sentences, current = [], None
    for line in read_text(path).split("\n"):
        if current is None:
            current = {"sent_id": None, "text": None, "words": [], "upos": [], "xpos": [],
                       "heads": [], "deprels": []}
        if not line.strip():
            if current["words"]:
                sentences.append(current)
            current = None
        elif line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip() in ("sent_id", "text"):
                current[key.strip()] = value.strip()
        else:
            columns = line.split("\t")
            if len(columns) != 10:
                raise ValueError(f"{path}: a CoNLL-U line has 10 columns, got {line!r}")
            if "-" in columns[0] or "." in columns[0]:
                continue
            current["words"].append(columns[1])
            current["upos"].append(columns[3])
            current["xpos"].append(columns[4])
            current["heads"].append(int(columns[6]))
            current["deprels"].append(columns[7])
    if current and current["words"]:
        sentences.append(current)
    return sentences


def load_ud_ewt(split: str = "train") -> list[dict]:
    """UD English EWT v2.16 sentences (see ``read_conllu``); tags are the 17 UPOS tags."""
    return read_conllu(fetch("ud_ewt", split))


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """A two-column CoNLL file (token, TAB, BIO tag; blank lines between sentences)."""
    sentences, tokens, tags = [], [], []
    for line in read_text(path).split("\n"):
        line = line.rstrip()
        if not line:
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        token, _, tag = line.rpartition("\t")
        if not token:
            raise ValueError(f"{path}: expected 'token<TAB>tag', got {line!r}")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def load_wnut17(split: str = "train") -> list[tuple[list[str], list[str]]]:
    """WNUT-17 emerging entities: ``(tokens, BIO tags)`` per sentence, 6 entity types."""
    return read_conll(fetch("wnut17", split))


def load_squad() -> list[dict]:
    """SQuAD v1.1 dev articles as published: title, paragraphs (context, qas)."""
    return json.loads(read_text(fetch("squad", "dev")))["data"]


def squad_examples() -> list[dict]:
    """One dict per SQuAD question: ``id``, ``title``, ``context``, ``question``, ``answers``
    (the reference answer texts) and ``answer_starts`` (their character offsets)."""
    examples = []
    for article in load_squad():
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                examples.append({
                    "id": qa["id"],
                    "title": article["title"],
                    "context": paragraph["context"],
                    "question": qa["question"],
                    "answers": [a["text"] for a in qa["answers"]],
                    "answer_starts": [a["answer_start"] for a in qa["answers"]],
                })
    return examples
