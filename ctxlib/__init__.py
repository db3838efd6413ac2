"""ctxlib: the helper library of the course 'Contextual language representations from scratch'.

Notebooks build each idea inline to teach it, check it against ctxlib's version, then use
ctxlib's. One file per topic:

- ``runtime``: budgets (smoke / cpu / gpu), the device, seeding
- ``data``: the course data sets by name (local copy, cache, or verified download) and parsers
- ``tokenizers``: character and byte-level BPE tokenizers, with special tokens in one place
- ``batches``: language-model windows, padded batches, labels aligned to subwords
- ``layers``: scaled dot-product attention, multi-head attention, the Transformer block
- ``train``: the one training loop (AdamW, warmup + cosine, clipping, accumulation,
  mixed precision, checkpoints with exact resume)
- ``static``: a static (skip-gram) word embedding, the baseline of chapter 1
- ``probes`` and ``protocol``: linear probes on frozen features, and the one protocol for
  "what does pretraining buy?" (learning curves over the number of labels, 3 seeds, settings
  chosen on held-out training data, results written to JSON)
- ``elmo``, ``gpt``, ``bert``, ``xlnet``: the four models, one file each, with their objectives
- ``pretrained``: course checkpoints, a chapter's model pretrained about an hour, by name
- ``published``: the published GPT-2, BERT and XLNet weights in the course's own classes
- ``head_to_head``: chapter 7's objectives on equal terms, one class each
- ``plots`` and ``widgets``: loss curves, attention heatmaps, interactive explorers
- ``checks``, ``handin`` and ``grade``: exercise checkers, GPU exercises graded from the weights
  handed in, and the grading command
- ``kernel``: runs a notebook in a Jupyter kernel (the grader, the tests, the book's runs)
"""

# Submodules every chapter uses, so that `import ctxlib` is enough for `ctxlib.data.…` and
# `ctxlib.checks.…` (the models and the training loop are imported where they are needed).
from ctxlib import checks, data
from ctxlib.runtime import (
    BUDGETS,
    Settings,
    budget,
    checkpoint_path,
    checkpoints_on_drive,
    current_budget,
    describe_device,
    device_of,
    get_device,
    in_colab,
    progress,
    seed_everything,
    take,
    to_device,
)

__version__ = "0.2.0"

# The repository that Colab installs ctxlib from, and the release of it that these notebooks
# were written for (a tag made when the course is published), set in one place: a notebook
# never picks up whatever happens to be on the default branch.
REPO_URL = "https://github.com/ctxlib-course/contextual-representations"
INSTALL_REF = f"v{__version__}"

__all__ = [
    "BUDGETS",
    "INSTALL_REF",
    "REPO_URL",
    "Settings",
    "budget",
    "checkpoint_path",
    "checkpoints_on_drive",
    "checks",
    "current_budget",
    "data",
    "describe_device",
    "device_of",
    "get_device",
    "in_colab",
    "progress",
    "seed_everything",
    "take",
    "to_device",
]
