"""Checks on the committed notebooks themselves (nbval runs them; see the Makefile's test target).

The book shows each notebook's stored outputs, so they must come from a real cpu or gpu run:
never empty, never an error, never the smoke budget.
"""

import ast
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from nbtools import colab_setup_source, strip_solution, student_version, time_statement

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def read(path):
    return nbformat.read(path, as_version=4)


def code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_come_from_a_real_run(path):
    nb = read(path)
    outputs = [out for cell in code_cells(nb) for out in cell.get("outputs", [])]
    if nb.metadata.get("ctxlib", {}).get("needs_network"):
        # Its published weights cannot be downloaded where the book is built: it ships with
        # no outputs (never a smoke run's stand-ins), and its introduction says so.
        assert not outputs, f"{path.name} needs the network and must store no outputs"
        assert "needs the network" in nb.cells[1].source
        return
    assert outputs, f"{path.name} has no stored outputs: run `make notebooks`"
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, f"{path.name} stores an error output: {errors[0].get('ename')}"
    text = "".join(str(out.get("text", "")) for out in outputs)
    assert "Budget: smoke" not in text, f"{path.name} stores outputs of the smoke budget"
    meta = nb.metadata.get("ctxlib", {})
    assert meta.get("budget") in {"cpu", "gpu"}, f"{path.name}: metadata names no cpu/gpu run"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_introduction_states_the_stored_runs_time(path):
    """A reader learns at the top how long the chapter takes: its stored run's measured time
    (scripts/execute_notebooks.py writes the line from the run's metadata)."""
    intro = next(c for c in read(path).cells if c.cell_type == "markdown")
    assert time_statement(path) in intro.source, f"{path.name}: rerun it, or write the line"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_ctxlib_in_colab(path):
    assert code_cells(read(path))[0].source == colab_setup_source()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_have_solutions_and_checks(path):
    sources = [cell.source for cell in code_cells(read(path))]
    solutions = [s for s in sources if "### BEGIN SOLUTION" in s]
    assert solutions, f"{path.name} has no exercise with a marked solution"
    assert any("ctxlib.checks." in s or "checks." in s for s in sources), "no check cell"
    for source in solutions:
        assert source.count("### BEGIN SOLUTION") == source.count("### END SOLUTION")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_solution_cells_are_collapsed_in_the_book(path):
    """A reader meets the exercise first: its solution shows only behind a toggle."""
    for cell in code_cells(read(path)):
        if "### BEGIN SOLUTION" in cell.source:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", cell.source[:40])
            assert "hide-cell" in cell.metadata.get("tags", []), f"{grade_id} is not collapsed"
            prompts = cell.metadata.get("mystnb", {})
            assert prompts.get("code_prompt_show") == "Show the solution", grade_id


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_is_valid_python_without_solutions(path):
    student = student_version(read(path))
    for cell in code_cells(student):
        assert "BEGIN SOLUTION" not in cell.source and not cell.outputs
        # IPython magics (%, !) are not Python; drop them before parsing.
        lines = [ln for ln in cell.source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        ast.parse("\n".join(lines))


def test_strip_solution_keeps_indentation_and_surroundings():
    source = (
        "def f(x):\n"
        "    ### BEGIN SOLUTION\n"
        "    return x + 1\n"
        "    ### END SOLUTION\n"
        "answer = f(1)\n"
    )
    stripped = strip_solution(source)
    assert "return x + 1" not in stripped
    assert "    raise NotImplementedError()" in stripped
    assert stripped.startswith("def f(x):\n") and stripped.endswith("answer = f(1)\n")
    ast.parse(stripped)


def test_strip_solution_rejects_unbalanced_markers():
    with pytest.raises(ValueError, match="unbalanced"):
        strip_solution("### BEGIN SOLUTION\nx = 1\n")


def test_colab_installs_the_pinned_release_of_this_version():
    import tomllib

    import ctxlib

    source = colab_setup_source()
    assert f"@{ctxlib.INSTALL_REF}" in source and "checkpoints_on_drive()" in source
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == ctxlib.__version__ and ctxlib.INSTALL_REF.endswith(
        ctxlib.__version__)


def test_everything_a_notebook_imports_is_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {dep.split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for dep in project["dependencies"]}
    standard = set(sys.stdlib_module_names)
    imported = set()
    for path in NOTEBOOKS:
        for cell in code_cells(read(path)):
            lines = [ln for ln in cell.source.splitlines()
                     if not ln.lstrip().startswith(("%", "!"))]
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module.split(".")[0])
    third_party = imported - standard - {"ctxlib", "google"}  # google.colab: Colab's own
    assert third_party <= declared, f"imported but not declared: {third_party - declared}"


def test_student_versions_open_in_colab_from_the_published_branch(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_student_version.py"),
                           "-o", str(tmp_path / "student")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    readme = (tmp_path / "student" / "README.md").read_text()
    for path in NOTEBOOKS:
        nb = read(tmp_path / "student" / path.name)
        badge = nb.cells[0].source
        assert nb.cells[0].cell_type == "markdown" and "colab.research.google.com/github/" in badge
        assert f"/blob/student/student/{path.name}" in badge and badge in readme
        assert code_cells(nb)[0].source == colab_setup_source()
        assert "BEGIN SOLUTION" not in "".join(c.source for c in nb.cells)


def test_notebook_code_fits_the_page():
    """The book shows code 88 columns wide: formatted to fit, no line longer."""
    import subprocess

    ruff = [sys.executable, "-m", "ruff"]
    fmt = subprocess.run([*ruff, "format", "--isolated", "--line-length", "88", "--check",
                          str(ROOT / "notebooks")], capture_output=True, text=True, check=False)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
    long = subprocess.run([*ruff, "check", "--isolated", "--select", "E501", "--line-length",
                           "88", str(ROOT / "notebooks")], capture_output=True, text=True,
                          check=False)
    assert long.returncode == 0, long.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_stored_figure_has_a_description(path):
    """A figure in the book needs alt text (cell metadata mystnb.image.alt): a screen reader
    otherwise reads out a file name. The browser test checks the same in the built pages."""
    for cell in code_cells(read(path)):
        shows_image = any(kind in o.get("data", {}) for o in cell.get("outputs", [])
                          for kind in ("image/png", "image/svg+xml"))
        if shows_image:
            alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
            assert len(alt) > 20, f"a figure without alt text, in the cell: {cell.source[:80]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_image_needs_a_file_beside_the_notebook(path):
    """Colab opens a notebook without its folder: a markdown image with a relative path shows
    nothing there. Diagrams are displayed from the package (ctxlib.plots.show_diagram)."""
    import re

    for cell in read(path).cells:
        if cell.cell_type == "markdown":
            for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", cell.source) + re.findall(
                    r"<img[^>]*src=[\"']([^\"']+)", cell.source):
                assert target.startswith(("https://", "data:")), (
                    f"{path.name}: the image {target!r} needs a file beside the notebook")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_show_no_path_of_the_machine_that_ran_them(path):
    """Readers see the stored outputs: paths there are relative to the project or data folder."""
    for cell in code_cells(read(path)):
        for output in cell.get("outputs", []):
            text = output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
            assert str(ROOT) not in text, f"{ROOT} in the output of: {cell.source[:80]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_output_is_blank(path):
    """A book run drops what a cleared progress bar leaves (spaces and a carriage return) and
    bare newlines (``nbtools.drop_blank_streams``): the book would show an empty box."""
    for index, cell in enumerate(code_cells(read(path))):
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                assert output.text.strip(), (
                    f"{path.name}, code cell {index}: a blank {output.name} output "
                    f"{output.text[:40]!r}; rerun it with scripts/execute_notebooks.py")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_table_is_text_wider_than_the_page(path):
    """A table wider than the code (88 columns) is shown as an HTML table (ctxlib.protocol's
    ``Table``), which fits the page; printed as text, the book would wrap it out of line."""
    column_gap = re.compile(r"\S {3,}(?=\S)")
    for cell in code_cells(read(path)):
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                assert not (len(line) > 88 and len(column_gap.findall(line)) >= 3), (
                    f"{path.name}: a table printed as text, wider than the page: {line[:100]!r} "
                    f"(from {cell.source[:60]!r}); show it with ctxlib.protocol.Table")
