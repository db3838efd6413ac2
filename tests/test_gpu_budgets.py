"""The gpu budget is real code: run every notebook with its gpu settings on the CPU, with every
training loop capped at one step (CTXLIB_MAX_STEPS=1), so that path never rots unseen.

Every cell runs, and every model is built at its gpu size (width, depth, context, vocabulary)
and takes a training step. What the gpu budget gives a GPU to chew on, the data, does not come
along: the settings listed in ``SMALL_DATA`` (batch sizes, pools, dev sets, validation batches,
learning-curve sizes and grids) are taken from the smoke budget (``CTXLIB_SMALL_DATA``, see
``ctxlib.runtime.small_data_settings``), ``ctxlib.take`` keeps at most
``ctxlib.runtime.TEST_RUN_ITEMS`` items of any full data set, and the evaluation protocol fits
one seed at one size (``ctxlib.protocol``). A setting that shapes a model never goes in that
list: the vocabularies are trained on the gpu budget's text, and a BPE vocabulary that falls
short of its size fails the test.
"""

import os
import sys
from pathlib import Path

import nbformat
import pytest

from ctxlib.kernel import notebook_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from nbtools import notebook_budgets

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))

# Per chapter, the settings that size the data a run reads (data sets, batches, validation,
# the protocol's pools, sizes and grids): a code-path test takes them from the smoke budget.
SMALL_DATA = {
    "00_setup": ("matmul_size",),
    "02_attention": ("batch", "train_sentences"),
    "03_elmo": (
        "batch", "val_batches", "task_sentences", "sst_sentences", "dev_sentences",
        "probe_steps", "held_out", "ud_pool", "pos_sizes", "sst2_pool", "sst2_sizes",
        "play_contexts"),
    "04_gpt": (
        "char_batch", "eval_batches", "sample_chars", "wiki_batch", "held_out", "ud_pool", "ud_dev",
        "pos_sizes", "sst2_pool", "sst2_dev", "sst2_sizes", "finetune_sizes", "finetune_batch",
        "finetune_lrs"),
    "05_bert": (
        "batch", "val_pairs", "task_train", "task_dev", "finetune_batch", "held_out", "ud_pool",
        "pos_sizes", "sst2_pool", "sst2_sizes", "curve_sizes", "curve_batch", "curve_lrs"),
    "06_xlnet": (
        "batch", "eval_windows", "held_out", "ud_pool", "ud_dev", "pos_sizes", "sst2_pool",
        "sst2_dev", "sst2_sizes", "curve_sizes", "curve_batch", "curve_lrs"),
    "07_head_to_head": (
        "sizes.batch", "sizes.valid_batches", "sweep_lrs", "pool", "dev", "held_out",
        "tag_sizes", "sst2_pool", "sst2_dev", "sst2_sizes", "finetune_sizes", "finetune_batch",
        "finetune_lrs", "sense_examples", "scored_sentences"),
    "08_published_weights": (
        "new_tokens", "timed_tokens", "wiki_chars", "sentences", "sst2_pool", "sst2_dev",
        "held_out", "sizes", "seeds", "lrs", "batch"),
}


@pytest.mark.parametrize("name", sorted(SMALL_DATA))
def test_the_small_data_settings_exist_and_size_no_model(name):
    budgets = notebook_budgets(name)
    for setting in SMALL_DATA[name]:
        outer, _, key = setting.rpartition(".")
        for budget in ("smoke", "gpu"):
            settings = budgets[budget][outer] if outer else budgets[budget]
            assert key in settings, f"{name}: the {budget} budget has no setting {setting!r}"
        shapes_a_model = ("model", "vocab", "width", "layer", "head", "dim")
        assert key != "context" and not any(word in key for word in shapes_a_model), (
            f"{name}: {setting!r} shapes a model; a code-path test must keep it")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_gpu_configuration_runs_one_step_on_cpu(path, monkeypatch, tmp_path):
    monkeypatch.setenv("CTXLIB_BUDGET", "gpu")
    monkeypatch.setenv("CTXLIB_MAX_STEPS", "1")
    monkeypatch.setenv("CTXLIB_PROGRESS", "off")
    # The device is a simulated accelerator: a tensor left on the host fails as on a GPU.
    monkeypatch.setenv("CTXLIB_CHECK_DEVICES", "1")
    monkeypatch.setenv("CTXLIB_SMALL_DATA", ",".join(SMALL_DATA.get(path.stem, ())))
    nb = nbformat.read(path, as_version=4)
    # Run in a scratch directory so checkpoints do not land in the repository.
    client = notebook_client(nb, timeout=600, kernel_name="python3",
                             resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if anything fails
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    printed = "".join(o.get("text", "") for o in outputs)
    assert "Budget: gpu" in printed
    assert "simulating an accelerator" in printed, "the notebook never asked for the device"
    assert os.environ["CTXLIB_MAX_STEPS"] == "1"
    if path.stem in SMALL_DATA:
        assert "Code-path test: " in printed  # the smoke data settings took effect
    assert "BPE stopped at a vocabulary" not in printed, (
        f"{path.name}: a vocabulary fell short of the gpu budget's size")
