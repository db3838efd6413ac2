"""Tools for maintaining the course notebooks (not used by the notebooks themselves).

- ``colab_setup_source()``: the first code cell of every notebook (installs ctxlib in Colab).
- ``student_version(nb)``: the notebook with solutions removed, as nbgrader would.
- ``mark_exercises(nb)``: nbgrader metadata on every exercise's cells, from its heading and
  its ``### BEGIN SOLUTION`` markers (so that the two never drift apart).
- ``execute(path, budget)``: run a notebook top to bottom and store its outputs.
- ``notebook_budgets(name)``: the smoke, cpu and gpu settings of a notebook's budget cell.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctxlib import INSTALL_REF, REPO_URL

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
# A markdown cell of an exercise that starts with this is an answer graded by hand.
MANUAL = "**Your answer"
# Where the student notebooks are published: a branch of the course repository (see the
# instructor guide). Set here only; make_student_version.py --branch overrides it.
STUDENT_BRANCH = "student"
STUDENT_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"


def notebook_budgets(name: str) -> dict[str, dict]:
    """The three budgets of a notebook's budget cell (``notebooks/<name>.ipynb``), read by
    running that cell with a stand-in for ``ctxlib.budget``."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "ctxlib.budget(" in c.source)
    captured = {}
    fake = type("FakeCtxlib", (), {"budget": staticmethod(lambda **b: captured.update(b))})
    exec(cell.source.replace("import ctxlib\n", ""), {"ctxlib": fake})  # noqa: S102 - our own cell
    return captured


def stated_cpu_time(path: Path) -> str:
    """A notebook's stored cpu run time as the README, the setup page and the instructor
    guide state it: minutes on 2 CPU cores, marked ``*`` unless the run started from scratch
    (a run that resumed a finished pretraining checkpoint is shorter than a first run)."""
    run = nbformat.read(path, as_version=4).metadata.get("ctxlib", {})
    if run.get("needs_network"):
        return "needs the network"
    if run.get("budget") != "cpu":
        return "not yet run"
    minutes = max(1, round(run["wall_seconds"] / 60))
    return f"{minutes} min" + ("" if run.get("from_scratch") else "*")


# What ctxlib.train and train_skipgram print when a run picks up a checkpoint instead of
# training from its first step, naming the file.
RESUMED = re.compile(r"(?:Resuming from (?:step|epoch) .*?\(|The run in )(\S+\.pt)")


def resumed_earlier_work(nb: nbformat.NotebookNode, existed: set[str]) -> bool:
    """Whether an executed notebook's outputs show a training run that resumed one of the
    checkpoint files that ``existed`` before it ran (then its wall time is not a first run's;
    chapter 0's demonstration of resuming its own fresh checkpoint does not count)."""
    return any(Path(found).name in existed
               for cell in nb.cells if cell.cell_type == "code"
               for output in cell.get("outputs", [])
               for found in RESUMED.findall(output.get("text", "")))


PAGES_WITH_RUN_TIMES = ("README.md", "book/setup.md", "book/instructor_guide.md")
_STATED_TIME = re.compile(r"\| (\d+ min\*?|not yet run|needs the network) \|")


def write_cpu_times() -> None:
    """Write each chapter's stored cpu run time into the tables of the README, the setup page
    and the instructor guide (the rows ``| N. title | ... | 3 min* |``)."""
    for page in PAGES_WITH_RUN_TIMES:
        path = ROOT / page
        lines = path.read_text().splitlines(keepends=True)
        for notebook in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
            stated = stated_cpu_time(notebook)
            prefix = f"| {int(notebook.stem[:2])}. "
            for k, line in enumerate(lines):
                found = list(_STATED_TIME.finditer(line)) if line.startswith(prefix) else []
                if found:
                    last = found[-1]
                    lines[k] = f"{line[:last.start()]}| {stated} |{line[last.end():]}"
        path.write_text("".join(lines))


TIME_LINE = "**Run time:**"


def time_statement(path: Path) -> str:
    """The line a notebook's introduction gives about its run time, from its stored run: the
    ``cpu`` budget's measured minutes on 2 CPU cores, and the ``gpu`` budget's on a T4."""
    stated = stated_cpu_time(path)
    if stated == "needs the network":
        run = nbformat.read(path, as_version=4).metadata["ctxlib"]
        return (f"{TIME_LINE} the published weights need the network, so no run is stored "
                f"here. Estimated from counted FLOPs and step times measured on a CPU: "
                f"{run['cpu_estimate']} on 2 CPU cores under the `cpu` budget, "
                f"{run['gpu_estimate']} on a Colab T4 under the `gpu` budget (neither yet "
                "measured), plus the download.")
    if stated == "not yet run":
        cpu = "the `cpu` budget has not been run yet"
    elif stated.endswith("*"):
        cpu = (f"about {stated[:-1]} on 2 CPU cores under the `cpu` budget (the stored run's "
               "time, not measured from scratch: a first run may take longer)")
    else:
        cpu = f"about {stated} on 2 CPU cores under the `cpu` budget, measured from scratch"
    return f"{TIME_LINE} {cpu}; the `gpu` budget's time on a Colab T4 is not yet measured."


def write_time_statement(nb: nbformat.NotebookNode, statement: str) -> None:
    """Put ``statement`` in the notebook's first markdown cell, replacing the one there."""
    intro = next(c for c in nb.cells if c.cell_type == "markdown")
    lines = [line for line in intro.source.splitlines() if not line.startswith(TIME_LINE)]
    while lines and not lines[-1].strip():
        lines.pop()
    intro.source = "\n".join([*lines, "", statement])


def colab_setup_source() -> str:
    """Source of the first code cell of every notebook.

    It installs the release of ctxlib the notebooks were written for (``INSTALL_REF``; the
    repository and the release are set in ctxlib only), and shows the one line that keeps
    checkpoints on Google Drive across Colab runtime resets.
    """
    return (
        "# In Colab, install ctxlib (the course's helper library), the release these notebooks\n"
        "# were written for. On your own machine `make setup` has installed it: nothing happens.\n"
        "import importlib.util, subprocess, sys\n"
        "\n"
        'if importlib.util.find_spec("ctxlib") is None:\n'
        f'    url = "git+{REPO_URL}@{INSTALL_REF}"\n'
        '    subprocess.run([sys.executable, "-m", "pip", "install", "-q", url], check=True)\n'
        "# Colab: uncomment to keep checkpoints on Google Drive (they survive a runtime reset).\n"
        "# import ctxlib; ctxlib.checkpoints_on_drive()"
    )


EXERCISE = re.compile(r"^### Exercises? (\d+)\.(\d+)(?: and \d+\.(\d+))?(.*)$", re.MULTILINE)
GPU_POINTS, POINTS = 2, 1  # a GPU exercise is a longer piece of work


def _nbgrader(**fields) -> dict:
    return {"schema_version": 3, "grade": False, "locked": False, "solution": False, **fields}


def mark_exercises(nb: nbformat.NotebookNode) -> list[dict]:
    """Give every exercise's cells nbgrader metadata; returns one summary per exercise.

    An exercise starts at a markdown cell ``### Exercise N.k: ...`` and runs to the next
    heading. Its task text becomes a locked cell, each code cell holding ``### BEGIN SOLUTION``
    a solution cell, and each cell calling a checker (``checks.check_...``) a locked,
    autograded test cell worth 1 point (2 for a GPU exercise). A markdown cell starting with
    ``**Your answer`` is an answer graded by hand (nbgrader's manually graded answer, worth the
    exercise's points), for what no check can verify. Every other cell carries no nbgrader
    metadata. The grade ids (``ex-N-k-answer``, ``ex-N-k-check``, ...) are stable.
    """
    exercises: list[dict] = []
    current = None
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)
        heading = EXERCISE.search(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            chapter, first, last, title = heading.groups()
            number = f"{chapter}.{first}" + (f" and {chapter}.{last}" if last else "")
            current = {"id": f"ex-{chapter}-{first}" + (f"-{last}" if last else ""),
                       "exercise": number, "points": GPU_POINTS if "(GPU" in title else POINTS,
                       "answers": [], "checks": [], "manual": []}
            exercises.append(current)
            cell.metadata["nbgrader"] = _nbgrader(locked=True, grade_id=f"{current['id']}-task")
            continue
        if current is not None and cell.cell_type == "markdown" and cell.source.startswith(
                MANUAL):
            grade_id = f"{current['id']}-manual"
            current["manual"].append(grade_id)
            cell.metadata["nbgrader"] = _nbgrader(solution=True, grade=True, grade_id=grade_id,
                                                  points=current["points"])
            continue
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("#"):
            current = None  # another section: the exercise is over
        if current is None or cell.cell_type != "code":
            continue
        if BEGIN in cell.source:
            k = len(current["answers"]) + 1
            grade_id = f"{current['id']}-answer" + (f"-{k}" if k > 1 else "")
            current["answers"].append(grade_id)
            cell.metadata["nbgrader"] = _nbgrader(solution=True, grade_id=grade_id)
        elif re.search(r"\bchecks\.check_\w+\(", cell.source):
            k = len(current["checks"]) + 1
            grade_id = f"{current['id']}-check" + (f"-{k}" if k > 1 else "")
            current["checks"].append(grade_id)
            cell.metadata["nbgrader"] = _nbgrader(grade=True, locked=True, grade_id=grade_id,
                                                  points=current["points"])
    for exercise in exercises:
        if not exercise["manual"] and not (exercise["answers"] and exercise["checks"]):
            raise ValueError(f"exercise {exercise['exercise']} needs an answer cell with "
                             "### BEGIN SOLUTION and a check cell calling ctxlib.checks, or "
                             f"an answer graded by hand (a markdown cell starting {MANUAL})")
    return exercises


_SOLUTION = re.compile(
    r"^(?P<indent>[ \t]*)" + re.escape(BEGIN) + r".*?^[ \t]*" + re.escape(END) + r"[^\n]*\n?",
    re.DOTALL | re.MULTILINE,
)


def strip_solution(source: str) -> str:
    """Replace each BEGIN/END SOLUTION region by a stub that raises NotImplementedError."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"unbalanced solution markers in cell:\n{source}")

    def stub(match: re.Match) -> str:
        indent = match.group("indent")
        return "".join(f"{indent}{line}\n" for line in STUDENT_STUB.splitlines())

    return _SOLUTION.sub(stub, source)


def colab_url(path: str, branch: str = STUDENT_BRANCH) -> str:
    """The address that opens ``path`` (relative to the repository root) in Colab."""
    repository = REPO_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{repository}/blob/{branch}/{path}"


def colab_badge(path: str, branch: str = STUDENT_BRANCH) -> str:
    """Markdown for an "Open in Colab" badge (the image is Colab's, linked, not embedded)."""
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(path, branch)})")


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with every solution replaced by a stub and every output cleared."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.source = strip_solution(cell.source)
        cell.outputs = []
        cell.execution_count = None
    nb.metadata.pop("ctxlib", None)
    return nb


def drop_blank_streams(nb: nbformat.NotebookNode) -> None:
    """Remove stream outputs that show nothing: what a text progress bar leaves when it clears
    its line (spaces and a carriage return), or bare newlines. The book would show each as an
    empty box."""
    for cell in nb.cells:
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs
                            if not (o.output_type == "stream" and not o.text.strip())]


def execute(path: Path, budget: str = "cpu", timeout: int = 3600) -> float:
    """Run the notebook at ``path`` under ``budget`` and store its outputs in place.

    Progress bars are plain text (``CTXLIB_PROGRESS=text``) so that the book can show them.
    Returns the wall time in seconds; records budget, device, time and whether the run started
    from scratch (no checkpoint of this budget to resume) in the metadata.
    """
    from ctxlib.kernel import notebook_client

    os.environ["CTXLIB_BUDGET"] = budget
    os.environ["CTXLIB_PROGRESS"] = "text"
    os.environ.setdefault("CTXLIB_DATA", str(ROOT.parent / "shared" / "data"))
    # the protocol's numbers of a book run go to the repository's results/ (never a smoke run's)
    if budget == "smoke":
        os.environ.pop("CTXLIB_RESULTS", None)
    else:
        os.environ["CTXLIB_RESULTS"] = str(ROOT / "results")
    nb = nbformat.read(path, as_version=4)
    client = notebook_client(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        coalesce_streams=True,
    )
    checkpoints = Path(os.environ.get("CTXLIB_CHECKPOINTS") or path.parent) / "checkpoints"
    existed = {p.name for p in (checkpoints / budget).glob("*.pt")}
    start = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - start
    drop_blank_streams(nb)

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    nb.metadata["ctxlib"] = {
        "budget": budget,
        "device": device,
        "torch": torch.__version__,
        "wall_seconds": round(wall, 1),
        "from_scratch": not resumed_earlier_work(nb, existed),
        "executed": datetime.date.today().isoformat(),
    }
    nbformat.write(nb, path)
    write_time_statement(nb, time_statement(path))  # from the metadata just written
    nbformat.write(nb, path)
    return wall
