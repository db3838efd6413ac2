"""The numbers behind the book's claims about pretraining: stored by the chapters' own cpu or
gpu runs (results/NN_name.json), with at least 3 seeds, and the same as the notebooks show."""

import json
from pathlib import Path

import nbformat
import pytest

from ctxlib.protocol import load_results

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_CHAPTERS = ["03_elmo", "04_gpt", "05_bert", "06_xlnet", "07_head_to_head"]


def stored_output(name: str) -> str:
    """The text a notebook's stored run printed or displayed (tables are displayed)."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    return "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") in ("stream", "display_data"))


@pytest.mark.parametrize("name", PROTOCOL_CHAPTERS)
def test_each_protocol_chapter_stores_its_results_from_a_book_run(name):
    path = ROOT / "results" / f"{name}.json"
    assert path.exists(), f"{path.name} missing: run scripts/execute_notebooks.py on {name}"
    record = json.loads(path.read_text())
    assert record["budget"] in ("cpu", "gpu") and record["chapter"] == name
    curves = load_results(path)
    # Learning curves, over several numbers of labels; a comparison at one n may sit beside them.
    assert any(len(curve.sizes) >= 2 for curve in curves)
    for curve in curves:
        assert len(curve.seeds) >= 3 and curve.sizes
        for arm, by_size in curve.scores.items():
            assert sorted(by_size) == sorted(curve.sizes), arm
            assert all(len(scores) == len(curve.seeds) for scores in by_size.values())


@pytest.mark.parametrize("name", PROTOCOL_CHAPTERS)
def test_the_notebook_shows_the_numbers_it_stored(name):
    """The stored notebook's tables were printed from the same run as the JSON file."""
    shown = stored_output(name)
    for curve in load_results(ROOT / "results" / f"{name}.json"):
        assert curve.task in shown
        for arm in curve.scores:
            for n in curve.sizes:
                cell = f"{curve.mean(arm, n):.3f} ± {curve.std(arm, n):.3f}"
                assert cell in shown, f"{curve.task}, {arm}, {n}: {cell} not in the notebook"
