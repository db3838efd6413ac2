"""The book: builds offline with warnings as errors, lists every chapter, cites what exists."""

import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from nbtools import stated_cpu_time

JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc["parts"]:
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def test_toc_lists_every_notebook_and_only_files_that_exist():
    listed = toc_files()
    notebooks = sorted(f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    assert sorted(f for f in listed if f.startswith("notebooks/")) == notebooks
    for name in listed:
        assert (ROOT / f"{name}.md").exists() or (ROOT / f"{name}.ipynb").exists(), name


@pytest.mark.parametrize("page", ["README.md", "book/setup.md", "book/instructor_guide.md"])
def test_the_cpu_run_times_stated_are_the_stored_runs(page):
    """Each chapter's row gives its stored cpu run's time, marked unless it ran from scratch."""
    text = (ROOT / page).read_text()
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        number = int(path.stem[:2])
        rows = [line for line in text.splitlines() if line.startswith(f"| {number}. ")]
        assert rows, f"{page}: no row for chapter {number}"
        stated = stated_cpu_time(path)
        cells = [cell.strip() for row in rows for cell in row.split("|")]
        assert stated in cells, f"{page}: chapter {number}'s cpu run took {stated}"


def test_every_citation_is_in_the_bibliography():
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text()))
    texts = [p.read_text() for p in (ROOT / "book").glob("*.md")]
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        texts += [c.source for c in nb.cells if c.cell_type == "markdown"]
    cited = {key.strip() for text in texts for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", text)
             for key in group.split(",")}
    assert cited, "no citations found"
    assert not cited - keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def test_book_builds_offline_with_warnings_as_errors(built_book):
    for name in toc_files():
        page = built_book / f"{name}.html"
        assert page.exists(), f"{page} was not built"
    setup_page = (built_book / "notebooks" / "00_setup.html").read_text()
    assert "Budget: cpu" in setup_page or "Budget: gpu" in setup_page  # stored outputs shown
    # MathJax is served with the book, never from a CDN.
    assert (built_book / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "cdn.jsdelivr.net/npm/mathjax" not in (built_book / "notebooks" / "02_attention.html"
                                                   ).read_text()
