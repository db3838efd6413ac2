"""scripts/draw_diagrams.py draws the book's architecture diagrams; the committed SVGs in
ctxlib/figures/ (shipped in the package) must be exactly what it draws now."""

import importlib.util
import re
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "draw_diagrams.py"
COMMITTED = ROOT / "ctxlib" / "figures"
NAMES = ["transformer_block", "elmo_stack", "bert_input", "gpt1_inputs", "xlnet_two_streams",
         "transformerxl_memory"]
RERUN = "rerun: .venv/bin/python scripts/draw_diagrams.py"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    """The script's main(), run with --out into a fresh folder."""
    spec = importlib.util.spec_from_file_location("draw_diagrams", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path_factory.mktemp("figures")
    written = script.main(["--out", str(out)])
    assert sorted(path.name for path in written) == sorted(f"{name}.svg" for name in NAMES)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_diagram_is_drawn_and_legible(drawn, name):
    svg = (drawn / f"{name}.svg").read_text(encoding="utf-8")
    assert svg.strip(), f"{name}.svg is empty"
    width = float(re.search(r'<svg[^>]* width="([\d.]+)pt"', svg).group(1))
    assert width <= 7 * 72, f"{name}.svg is wider than the page (7 in)"
    sizes = [float(size) for size in re.findall(r"font-size: ([\d.]+)px", svg)]
    assert sizes, f"{name}.svg has no text elements (svg.fonttype should be 'none')"
    assert min(sizes) >= 9, f"{name}.svg has text below 9 pt"


@pytest.mark.parametrize("name", NAMES)
def test_committed_diagram_is_up_to_date(drawn, name):
    committed = COMMITTED / f"{name}.svg"
    assert committed.exists(), f"{committed.relative_to(ROOT)} is missing: {RERUN}"
    creator = re.search(r"Matplotlib v([^,<]+)", committed.read_text(encoding="utf-8"))
    if creator and creator.group(1) != matplotlib.__version__:
        pytest.skip(f"{committed.name} was drawn by matplotlib {creator.group(1)}, this is "
                    f"{matplotlib.__version__}: their SVGs differ in details")
    assert (drawn / f"{name}.svg").read_bytes() == committed.read_bytes(), (
        f"{committed.relative_to(ROOT)} is not what the script draws: {RERUN}")
