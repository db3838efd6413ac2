"""Published checkpoints (GPT-2, BERT, XLNet) in the course's own model classes.

    gpt2 = ctxlib.published.load("gpt2")                  # downloaded once, then cached
    bert = ctxlib.published.load("bert-base-uncased")
    xlnet = ctxlib.published.load("xlnet-base-cased", head="classification", num_labels=2)
    local = ctxlib.published.load("/path/to/a/saved/folder")   # offline: a saved copy

The weights come through Hugging Face ``transformers``, which downloads and caches them, and
go into ``ctxlib.gpt.GPT``, ``ctxlib.bert.BertForPreTraining`` or ``ctxlib.xlnet.XLNetLM`` (or
``XLNetForSequenceClassification``) by their ``from_huggingface``: the same classes the
chapters train, proven equal to the reference by the tests. The tokenizers are the published
ones (GPT-2's byte-level BPE, BERT's WordPiece, XLNet's SentencePiece), loaded by
``transformers.AutoTokenizer``: they are the vocabularies the weights were trained with, and
not ours to rewrite.

A name needs the network the first time; a folder (``save_pretrained``'s, or
``huggingface-cli download NAME --local-dir DIR``'s) never does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctxlib.bert import BertForPreTraining
from ctxlib.gpt import GPT
from ctxlib.xlnet import XLNetForSequenceClassification, XLNetLM

# The checkpoints the course uses, by the name the Hugging Face Hub gives them.
NAMES = {
    "gpt2": "GPT-2 124M (Radford et al. 2019)",
    "bert-base-uncased": "BERT-base, uncased (Devlin et al. 2019)",
    "xlnet-base-cased": "XLNet-base, cased (Yang et al. 2019)",
}

# model type (config.json) -> head -> (the transformers class's name, ctxlib's class)
CLASSES = {
    "gpt2": {"lm": ("GPT2LMHeadModel", GPT)},
    "bert": {"lm": ("BertForPreTraining", BertForPreTraining)},
    "xlnet": {"lm": ("XLNetLMHeadModel", XLNetLM),
              "classification": ("XLNetForSequenceClassification",
                                 XLNetForSequenceClassification)},
}


class NeedsTheNetwork(OSError):
    """A published checkpoint is not in the cache and cannot be downloaded here."""


@dataclass
class Published:
    """A published checkpoint in ctxlib's class, with its tokenizer.

    ``reference`` is the ``transformers`` model the weights were read from, kept only when
    asked for (``keep_reference=True``), to compare outputs with.
    """

    name: str
    model: torch.nn.Module
    tokenizer: Any  # a transformers tokenizer: encode / decode / __call__
    model_type: str  # "gpt2", "bert" or "xlnet"
    reference: torch.nn.Module | None = None

    def describe(self) -> str:
        parameters = sum(p.numel() for p in self.model.parameters())
        what = NAMES.get(self.name, self.name)
        return f"{what}: {parameters / 1e6:.1f}M parameters in {type(self.model).__name__}"


def load(name_or_path: str | os.PathLike, *, head: str = "lm", num_labels: int = 2,
         offline: bool | None = None, keep_reference: bool = False) -> Published:
    """The published checkpoint ``name_or_path`` (a Hub name or a local folder) in ctxlib's
    class for ``head`` ("lm", or "classification" for XLNet), in eval mode.

    ``offline=True`` (or ``HF_HUB_OFFLINE=1``) reads only the cache or the folder.
    Raises :class:`NeedsTheNetwork` when a name is neither cached nor downloadable, and
    ``ValueError`` for a model type or head the course does not build.
    """
    import transformers

    source = str(name_or_path)
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes")
    is_folder = Path(source).is_dir()
    if not is_folder and (Path(source).is_absolute() or source.startswith(".")):
        raise FileNotFoundError(f"no folder {source}: pass a folder that holds a saved "
                                "checkpoint (config.json and weights), or a Hub name such as "
                                f"{', '.join(NAMES)}.")
    if is_folder and not (Path(source) / "config.json").exists():
        raise FileNotFoundError(f"{source} holds no config.json: save a checkpoint there with "
                                "save_pretrained, or download one into it.")
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=offline)
    except OSError as error:
        raise NeedsTheNetwork(
            f"{source!r} is not in this machine's Hugging Face cache, and downloading it "
            f"{'was turned off (offline)' if offline else 'failed'}: the published weights "
            "need the network once. Elsewhere, run `huggingface-cli download "
            f"{source} --local-dir DIR` (or save_pretrained), bring DIR here, and pass it: "
            "ctxlib.published.load('DIR').") from error
    heads = CLASSES.get(config.model_type)
    if heads is None:
        raise ValueError(f"{source} is a {config.model_type!r} model; the course builds "
                         f"{', '.join(CLASSES)}.")
    if head not in heads:
        raise ValueError(f"the course builds {config.model_type} with the heads "
                         f"{', '.join(heads)}, not {head!r}.")
    hf_name, ours = heads[head]
    extra = {"num_labels": num_labels} if head == "classification" else {}
    reference = getattr(transformers, hf_name).from_pretrained(
        source, local_files_only=offline, **extra).eval()
    model = ours.from_huggingface(reference).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=offline)
    return Published(name=source, model=model, tokenizer=tokenizer,
                     model_type=config.model_type,
                     reference=reference if keep_reference else None)
