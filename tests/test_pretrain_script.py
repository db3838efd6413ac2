"""scripts/pretrain.py runs a chapter's pretraining outside the notebook, with its sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from ctxlib.checkpoints import checksum

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from nbtools import notebook_budgets
from pretrain import H2H_LRS, RECIPES


def test_the_script_reads_each_chapters_budgets_from_its_notebook():
    """No copy to keep in step: the budgets are the notebook's, under the notebook's names."""
    for name, recipe in RECIPES.items():
        notebook = notebook_budgets(recipe.chapter)
        assert recipe.budgets == notebook, name
        for budget, cfg in notebook.items():
            if recipe.train_key:  # chapter 7 keeps its schedule at the top level
                assert {"steps", "lr", "warmup_steps"} <= set(cfg[recipe.train_key]), name
            assert recipe.context(cfg) > 0, (name, budget)
            if not name.startswith("h2h_"):  # chapter 7 keeps its batch in its sizes
                assert cfg[recipe.batch_key] >= 1 and cfg[recipe.model_key], (name, budget)


def test_the_head_to_head_rates_are_the_ones_its_cpu_sweep_chose():
    sweep = json.loads((ROOT / "results" / "07_head_to_head.json").read_text())["sweep"]
    for key, lr in H2H_LRS.items():
        if key == "mlm_nsp":  # an ablation of the masked LM: its rate, not a sweep of its own
            assert lr == H2H_LRS["mlm"]
            continue
        losses = {float(name.split()[1]): loss for name, loss in sweep.items()
                  if name.split()[0] == key}
        assert len(losses) >= 3 and min(losses, key=losses.get) == lr, key


def test_every_recipe_names_the_notebooks_training_checkpoint():
    for recipe in RECIPES.values():
        nb = nbformat.read(ROOT / "notebooks" / f"{recipe.chapter}.ipynb", as_version=4)
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        if recipe.chapter == "07_head_to_head":  # one call names each contender's run
            assert 'name=f"h2h_{key}"' in source and "for key, contender in" in source
        else:
            assert f'checkpoint_path("{recipe.checkpoint_name}")' in source, recipe.chapter


@pytest.mark.slow
# chapter 7's contenders share one pretraining function: one of them stands for all five
@pytest.mark.parametrize("model", sorted(k for k in RECIPES if not k.startswith("h2h_"))
                         + ["h2h_bilm"])
def test_the_script_writes_a_checkpoint_the_notebook_can_resume(tmp_path, model):
    checkpoint = RECIPES[model].checkpoint_name
    env = {**os.environ, "CTXLIB_CHECKPOINTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "pretrain.py"), model,
                           "--budget", "smoke", "--steps", "3"], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation loss" in done.stdout
    blob = torch.load(tmp_path / "checkpoints" / "smoke" / f"{checkpoint}.pt", weights_only=True)
    assert blob["state"]["step"] == 3 and blob["identity"]["processes"] == 1
    assert checksum(blob["state"]) == blob["sha256"]
