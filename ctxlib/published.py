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

import contextlib
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


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bars or load reports from transformers: ctxlib says what it loaded."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


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
    with _quiet_transformers():
        reference = getattr(transformers, hf_name).from_pretrained(
            source, local_files_only=offline, **extra).eval()
    model = ours.from_huggingface(reference).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=offline)
    return Published(name=source, model=model, tokenizer=tokenizer,
                     model_type=config.model_type,
                     reference=reference if keep_reference else None)


# --- Stand-ins: small random models of the published kinds, built here without the network ---

# For each published name: its model type and a small configuration of that type.
STAND_IN_CONFIGS = {
    "gpt2": ("gpt2", {"n_positions": 128, "n_embd": 48, "n_layer": 2, "n_head": 4}),
    "bert-base-uncased": ("bert", {"hidden_size": 48, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, "intermediate_size": 96,
                                   "max_position_embeddings": 128}),
    "xlnet-base-cased": ("xlnet", {"d_model": 48, "n_layer": 2, "n_head": 4, "d_inner": 96}),
}


# The published checkpoints' sizes, for stand-ins of the real size (``full_size=True``).
PUBLISHED_SIZES = {
    "gpt2": {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
             "n_head": 12},
    "bert-base-uncased": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "intermediate_size": 3072,
                          "max_position_embeddings": 512},
    "xlnet-base-cased": {"vocab_size": 32000, "d_model": 768, "n_layer": 12, "n_head": 12,
                         "d_inner": 3072},
}


def stand_in_tokenizer(model_type: str, texts: list[str]) -> Any:
    """A tokenizer of the published kind, trained on ``texts``: GPT-2's byte-level BPE,
    BERT's lower-cased WordPiece, or XLNet's SentencePiece-style unigram."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if model_type == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=400, special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        end = "<|endoftext|>"
        return transformers.GPT2TokenizerFast(tokenizer_object=tok, eos_token=end,
                                              bos_token=end, unk_token=end)
    if model_type == "bert":
        words = sorted({w.lower() for text in texts for w in text.split()})
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        return transformers.BertTokenizerFast(
            vocab={token: i for i, token in enumerate([*specials, *words])})
    if model_type == "xlnet":
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        specials = ["<pad>", "<unk>", "<s>", "</s>", "<cls>", "<sep>", "<mask>"]
        tok.train_from_iterator(texts, trainers.UnigramTrainer(
            vocab_size=400, special_tokens=specials, unk_token="<unk>"))
        return transformers.XLNetTokenizerFast(tokenizer_object=tok)
    raise ValueError(f"no stand-in tokenizer for {model_type!r}; the course builds "
                     f"{', '.join(CLASSES)}.")


def save_stand_in(name: str, folder: str | os.PathLike, texts: list[str],
                  head: str = "lm", num_labels: int = 2, seed: int = 0,
                  full_size: bool = False) -> Path:
    """Save a **random** model of the published checkpoint ``name``'s kind (small, or with
    ``full_size`` of the published sizes), with a tokenizer of its kind trained on
    ``texts``, to ``folder`` as the Hub stores it, and return the folder: ``load(folder)``
    reads it as it would the published weights.

    For code paths without the network (tests, a notebook's smoke budget, a code-path test
    of its gpu budget): its outputs are those of random weights, never results.
    """
    import transformers

    model_type, sizes = STAND_IN_CONFIGS[name]
    tokenizer = stand_in_tokenizer(model_type, texts)
    sizes = {**sizes, "vocab_size": len(tokenizer)}
    if full_size:  # the tokenizer's ids are all below the published vocabulary's size
        sizes = {**sizes, **PUBLISHED_SIZES[name]}
    hf_name = CLASSES[model_type][head][0]
    config_class = transformers.CONFIG_MAPPING[model_type]
    special = {}
    if model_type == "gpt2":
        special = {"bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = config_class(num_labels=num_labels, **sizes, **special)
    torch.manual_seed(seed)
    model = getattr(transformers, hf_name)(config).eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sources(weights: str, folder: str | os.PathLike, texts: list[str]) -> dict[str, Any]:
    """Where a notebook reads each published checkpoint from: the Hub names when
    ``weights == "published"``; small random stand-ins saved under ``folder`` when it is
    ``"stand-in"`` (the smoke budget, without the network). A code-path test of a budget
    that reads the published weights (``CTXLIB_MAX_STEPS``, run without the network) gets
    random stand-ins of the published sizes instead: the same shapes, no download."""
    from ctxlib.runtime import max_steps_override

    if weights not in ("published", "stand-in"):
        raise ValueError(f'weights must be "published" or "stand-in", got {weights!r}.')
    if weights == "published" and max_steps_override() is None:
        return {name: name for name in NAMES}
    full_size = weights == "published"
    kind = "of the published sizes" if full_size else "small"
    print(f"Stand-ins: random models ({kind}) of the published kinds, without the network; "
          "their outputs are not results.")
    return {name: save_stand_in(name, Path(folder) / name, texts, full_size=full_size)
            for name in NAMES}
