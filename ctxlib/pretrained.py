"""Course checkpoints: a chapter's model pretrained well past its cpu budget, found by name.

A chapter pretrains its model live, for a few minutes. To show what *more* pretraining buys,
the course ships the same model pretrained longer (about an hour on 2 CPU cores, or minutes
on a GPU; chapter 7's five contenders about a quarter of an hour each) by
``scripts/pretrain.py`` (the chapter's own code and sizes, only more steps), as a small file
that records everything needed to use and to judge it:

- the model's configuration and its weights in half precision (the file stays a few MB;
  ``load`` returns float32 weights);
- the tokenizer it was trained with (BPE merges; for ELMo, which reads characters and
  predicts words, its word vocabulary);
- how it was pretrained: data, steps, batch, tokens seen, wall time, machine, and the
  validation curve.

Like the data sets, each is found by name (``load("gpt")``): first in the repository's
``pretrained/`` folder (tests, CI and a local clone use that copy), then in ``CTXLIB_DATA``
and the cache, else downloaded from its address, pinned to the commit that added it, and
checked against its SHA-256. The file loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctxlib import REPO_URL, data
from ctxlib.checkpoints import checksum
from ctxlib.data import RemoteFile
from ctxlib.static import Vocab
from ctxlib.tokenizers import BPETokenizer

FORMAT = "ctxlib-course-checkpoint-1"
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]  # holds pretrained/ in a checkout

# name -> the published file. Each address is pinned to the commit that added the file, so its
# bytes never change; a test checks the local copy against the checksum.
_FILES = f"https://raw.githubusercontent.com/{REPO_URL.removeprefix('https://github.com/')}"


def _published(path: str, commit: str, sha256: str, size: int) -> RemoteFile:
    return RemoteFile(path, f"{_FILES}/{commit}/{path}", sha256, sha256, size)


COURSE_CHECKPOINTS: dict[str, RemoteFile] = {
    "gpt": _published("pretrained/gpt_wikitext2.pt", "9ea73f9cf973374706f0867df74ffa8867184cda",
                      "fd4a3627c40092e9d7c8abf6b4240cd9fc0a7688e83c3f26a548a9cf8011188e",
                      3_735_846),
    "bert": _published("pretrained/bert_wikitext2.pt", "4479103a5666516f94a26a109cdab5f4df3667da",
                       "945fe854c1c3bb906403a6c52aa7e0b11ce8d829920ad1cb5b881cf3859646fc",
                       2_790_917),
    "elmo": _published("pretrained/elmo_wikitext2.pt", "759bd7034e62f19d062f65604ebcfc1662241f35",
                       "0a55cbf9343fd36ea21aac0ffb12f8a62ac0e1bc6009175a37312098b8ffb3ce",
                       5_329_081),
    "xlnet": _published("pretrained/xlnet_wikitext2.pt", "759bd7034e62f19d062f65604ebcfc1662241f35",
                        "5795cbf6193560b04bd795170f0ec5d1371b7a09be36fceb6ca56ce63c0f9aff",
                        3_849_595),
    # chapter 7's contenders on equal terms, each pretrained ten times its cpu run
    "h2h_bilm": _published("pretrained/h2h_bilm_wikitext2.pt", "f2636caa8a1cdb3107bcead684aee05cef024aaf",
                          "8f28808da66183db42c0d36dcfbd069851d5a1c0ee87d2f45a5f2866aab41528",
                          2_748_573),
    "h2h_causal": _published("pretrained/h2h_causal_wikitext2.pt", "f2636caa8a1cdb3107bcead684aee05cef024aaf",
                          "a606e82f6cab46f93427b478fa11f7dd5e862361d759d8d5220e992b51762ed9",
                          3_719_747),
    "h2h_mlm_nsp": _published("pretrained/h2h_mlm_nsp_wikitext2.pt", "f2636caa8a1cdb3107bcead684aee05cef024aaf",
                          "6d4f8a098c5ac7753e6d7ab6245aa7be138848be565ad97947b001059b1a9d6e",
                          2_774_689),
    "h2h_mlm": _published("pretrained/h2h_mlm_wikitext2.pt", "f2636caa8a1cdb3107bcead684aee05cef024aaf",
                          "57cb139a7f374f579b0f5e5baaffa66a1bad50ea647031c479a33d3d6bf46a95",
                          2_774_417),
    "h2h_plm": _published("pretrained/h2h_plm_wikitext2.pt", "f2636caa8a1cdb3107bcead684aee05cef024aaf",
                          "a21cd15cb8e6f1442b09bd7e032b4ae3329185e7fed9be4067406ff6c707c0a5",
                          3_849_687),
}


@dataclass
class Pretrained:
    """A loaded course checkpoint: the model (float32, eval mode), its tokenizer, and how it
    was pretrained (``info``: data, steps, batch, tokens, wall time, validation curve)."""

    name: str
    model: torch.nn.Module
    tokenizer: BPETokenizer | Vocab
    info: dict[str, Any]

    def describe(self) -> str:
        """One line: what was trained, on what, for how long, and how well."""
        i = self.info
        params = sum(p.numel() for p in self.model.parameters())
        return (
            f"course checkpoint {self.name!r}: {params:,} parameters, {i['steps']:,} steps "
            f"on {i['data']} ({i['tokens_seen'] / 1e6:.1f} M tokens), "
            f"{i['wall_seconds'] / 60:.0f} min on {i['machine']}; "
            f"validation {i.get('valid_loss_is', 'loss')} {i['valid_loss'][-1]:.3f}"
        )


def _model_classes() -> dict[str, tuple[type, type]]:
    # imported here: each model file stays on its own
    from ctxlib.bert import BertConfig, BertForPreTraining
    from ctxlib.elmo import BiLM, ELMoConfig
    from ctxlib.gpt import GPT, GPTConfig
    from ctxlib.xlnet import XLNetConfig, XLNetLM

    return {"gpt": (GPTConfig, GPT), "bert_pretraining": (BertConfig, BertForPreTraining),
            "xlnet_lm": (XLNetConfig, XLNetLM), "bilm": (ELMoConfig, BiLM)}


def _tokenizer_blob(tokenizer: BPETokenizer | Vocab) -> dict[str, Any]:
    if isinstance(tokenizer, Vocab):  # ELMo's words, most frequent first, with their counts
        return {"type": "words", "words": list(tokenizer.itos),
                "counts": [int(c) for c in tokenizer.counts.tolist()]}
    return {"type": "bpe", "special_tokens": list(tokenizer.special_tokens),
            "merges": [list(pair) for pair in tokenizer.merges]}


def _tokenizer_from(blob: dict[str, Any]) -> BPETokenizer | Vocab:
    if blob.get("type", "bpe") == "words":  # a Counter keeps the order of equal counts
        return Vocab(Counter(dict(zip(blob["words"], blob["counts"]))), min_count=1)
    return BPETokenizer([tuple(m) for m in blob["merges"]], tuple(blob["special_tokens"]))


def save(path: str | Path, name: str, kind: str, model: torch.nn.Module,
         tokenizer: BPETokenizer | Vocab, info: dict[str, Any]) -> Path:
    """Write a course checkpoint: ``model`` (of ``kind``, e.g. ``"gpt"``) in half precision,
    its configuration, ``tokenizer`` and ``info`` (plain values only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "name": name,
        "kind": kind,
        "config": dataclasses.asdict(model.config),
        "weights": {k: v.detach().to("cpu", torch.float16) for k, v in model.state_dict().items()},
        "tokenizer": _tokenizer_blob(tokenizer),
        "info": info,
    }
    blob["checksum"] = checksum(blob)  # of everything above: read() verifies it
    torch.save(blob, path)
    return path


def read(path: str | Path, name: str = "") -> Pretrained:
    """Load a course checkpoint file (``weights_only``: no code is run from it).

    Nothing damaged is ever loaded: a file saved with a checksum of its contents is verified
    against it; a published course checkpoint (saved before files carried one) against the
    SHA-256 of its published bytes. With ``name``, a file of another checkpoint is refused.
    """
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (a damaged file fails in many ways in the unpickler)
        raise ValueError(f"{path} cannot be read as a course checkpoint: it is empty, cut "
                         f"short or not a checkpoint at all ({type(error).__name__}: "
                         f"{str(error)[:200]}).") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a course checkpoint (format {FORMAT!r}).")
    if name and blob.get("name") != name:
        raise ValueError(f"{path} holds the course checkpoint {blob.get('name')!r}, not "
                         f"{name!r}.")
    _verify_contents(path, blob)
    config_class, model_class = _model_classes()[blob["kind"]]
    model = model_class(config_class(**blob["config"]))
    model.load_state_dict({k: v.float() for k, v in blob["weights"].items()})
    return Pretrained(name or blob["name"], model.eval(), _tokenizer_from(blob["tokenizer"]),
                      blob["info"])


def _verify_contents(path: Path, blob: dict[str, Any]) -> None:
    """Refuse a damaged file (see ``read``)."""
    if "checksum" in blob:
        stored = blob.pop("checksum")
        if checksum(blob) != stored:
            raise ValueError(f"{path} is damaged: its contents no longer match the checksum "
                             "written with them. Fetch or make the checkpoint again.")
        return
    published = COURSE_CHECKPOINTS.get(blob.get("name", ""))
    if published is None:
        raise ValueError(f"{path} carries no checksum and is no published course checkpoint: "
                         "it cannot be verified (save it again with ctxlib.pretrained.save).")
    if data.sha256_of(path) != published.sha256:
        raise ValueError(f"{path} is damaged: it is not the published course checkpoint "
                         f"{blob['name']!r} (SHA-256 differs). Delete it; it is fetched "
                         "again on the next load.")


def find(name: str) -> Path:
    """The verified local path of course checkpoint ``name`` (downloaded if needed)."""
    if name not in COURSE_CHECKPOINTS:
        known = ", ".join(COURSE_CHECKPOINTS) or "none yet"
        raise KeyError(f"no course checkpoint called {name!r}; known: {known}. "
                       "scripts/pretrain.py makes them.")
    return data.fetch_file(COURSE_CHECKPOINTS[name], f"course checkpoint {name!r}",
                           first_dirs=[REPOSITORY_ROOT])


def load(name: str) -> Pretrained:
    """Course checkpoint ``name`` (see the module docstring), ready to use."""
    return read(find(name), name)
