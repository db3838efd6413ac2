"""Grade students' notebooks, with or without nbgrader.

    python -m ctxlib.grade SUBMISSIONS --source notebooks --budget smoke -o grades.csv

``SUBMISSIONS`` holds one folder per student with their notebooks, for example
``SUBMISSIONS/ada/02_attention.ipynb``. A notebook is matched to its course notebook in
``--source`` (the course's ``notebooks/`` folder) by chapter, whatever it is called: the
chapter number in its name (``Copy of 02_attention.ipynb``, ``02_attention (1).ipynb``), else
its title. Every locked cell (task texts, check cells) is then replaced by the course's
version, found by grade id: an edited, renamed or deleted check is put back, so it cannot pass.
A GPU exercise is graded from the checkpoint its run wrote, handed in beside the notebook
(``SUBMISSIONS/ada/shakespeare_gpu_exercise.pt``, or in ``checkpoints/gpu/`` there): its weights
are scored again on the grader's machine, a CPU being enough (see ctxlib.handin).

Each notebook runs top to bottom in a working directory of its own (its own checkpoints: one
student's training run is never resumed into another's), continues past errors, and stops at
the budget's time limit. A check runs on the course's code: one that meets a function the
notebook's cells rebound (``ctxlib.checks.check_pick_steps = ...``, ``torch.allclose = ...``)
or a course table they changed earns nothing, and its message names the change (see
``NOTE_THE_COURSES_CODE``). The points come from the course notebook's check cells only, never
from the submission's metadata: each gives its exercise's points when it ran without an error
and graded the work; a check that says "Not graded" (a GPU target met on another budget, say)
gives none, and its message says why. An answer graded by hand (exercise 0.4's) gets a row
with no points and the student's text, for the instructor to read. One CSV row per student and
exercise: the points, the most points, and the checker's message. A submission that cannot be read or run gets a row
saying what was wrong, and the rest of the class is graded.
"""

from __future__ import annotations

import argparse
import copy
import csv
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ctxlib.runtime import environment

# Wall-clock limit for one notebook under each budget, in seconds: well above the slowest
# chapter's measured run (the cpu times are in the README).
TIME_LIMITS = {"smoke": 600, "cpu": 2 * 3600, "gpu": 3 * 3600}


@dataclass
class Grade:
    student: str
    notebook: str
    exercise: str  # the check cell's grade id, e.g. "ex-2-4-check"
    points: float
    max_points: float
    message: str


def grade_cells(nb) -> list:
    """The autograded check cells of a notebook (nbgrader metadata ``grade: true``)."""
    return [cell for cell in nb.cells
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade")]


CHAPTER_IN_NAME = re.compile(r"(?<!\d)(\d{2})_")  # "00_setup", "Copy of 00_setup (1)"


def _title(nb) -> str:
    """A notebook's first heading ("# 2. Attention ..."), or ''."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line.strip()
    return ""


def course_notebook_for(path: Path, nb, source: Path) -> Path | None:
    """The course notebook in ``source`` that the submission at ``path`` hands in: by the
    chapter number in its name, else by its title; None when neither says."""
    import nbformat

    course = {p.name[:2]: p for p in sorted(source.glob("[0-9][0-9]_*.ipynb"))}
    match = CHAPTER_IN_NAME.search(path.name)
    if match and match.group(1) in course:
        return course[match.group(1)]
    title = _title(nb)
    for candidate in course.values():
        if title and _title(nbformat.read(candidate, as_version=4)) == title:
            return candidate
    return None


def lock_cells(submitted, source) -> dict:
    """Replace every locked cell of ``submitted`` by the course's version (by grade id), put
    back the ones the student deleted or renamed, and return the course's check cells as they
    now stand in ``submitted``: {grade id: cell}. Only those are graded."""
    course = {cell.metadata["nbgrader"]["grade_id"]: cell for cell in source.cells
              if cell.get("metadata", {}).get("nbgrader", {}).get("locked")}
    placed = {}
    for index, cell in enumerate(submitted.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in course and grade_id not in placed:
            placed[grade_id] = submitted.cells[index] = _fresh(course[grade_id])
    for grade_id, cell in course.items():  # deleted or renamed: the check goes back at the end
        if grade_id not in placed and cell.metadata["nbgrader"].get("grade"):
            placed[grade_id] = _fresh(cell)
            submitted.cells.append(placed[grade_id])
    return {grade_id: cell for grade_id, cell in placed.items()
            if cell.metadata["nbgrader"].get("grade")}


def _fresh(cell):
    copied = copy.deepcopy(cell)
    if copied.cell_type == "code":  # a markdown cell has no outputs to clear
        copied.outputs, copied.execution_count = [], None
    return copied


# --- Checks run on the course's code -------------------------------------------------------
# A student cell could make a check pass without the work by changing what the check calls
# (``ctxlib.checks.check_pick_steps = lambda f: print("Correct!")``, ``torch.allclose = ...``,
# ``ctxlib = ...``) or the course's tables (``ctxlib.handin.EXERCISES``). So the grader runs a
# few lines of its own in the kernel. Before the first cell, ``NOTE_THE_COURSES_CODE`` imports
# every ctxlib module and notes what each binds: every function, class and module of ctxlib's
# modules and of ``WATCHED`` (by identity) and every upper-case constant of ctxlib's (by its
# repr). Before each check, ``NAME_WHAT_CHANGED`` prints what no longer matches; a check after
# a change earns nothing. A student who reads this code can still get past it (the grader runs
# their code in the same process): the guide says to read the answers of a surprising grade.
WATCHED = ("builtins", "math", "numpy", "torch", "torch.nn", "torch.nn.functional",
           "torch.testing", "torch.Tensor")
GUARD_MARK = "ctxlib-grade-guard:"
KERNEL_REBINDS = {("builtins", "input")}  # the Jupyter kernel sets it anew for every cell

NOTE_THE_COURSES_CODE = f"""
def _ctxlib_grade_note():
    import importlib, pkgutil, sys, types
    import ctxlib
    for info in pkgutil.iter_modules(ctxlib.__path__):
        importlib.import_module("ctxlib." + info.name)
    import torch
    import torch._dynamo  # noqa: F401 (importing it rebinds torch.manual_seed: before the note)
    spaces = {{name: module for name, module in sys.modules.items()
              if name == "ctxlib" or name.startswith("ctxlib.")}}
    for name in {WATCHED!r}:
        spaces[name] = torch.Tensor if name == "torch.Tensor" else importlib.import_module(name)
    noted = {{}}
    for space_name, space in spaces.items():
        noted["sys.modules", space_name] = ("is", sys.modules.get(space_name, space))
        for name, value in list(vars(space).items()):
            if name.startswith("__") or (space_name, name) in {KERNEL_REBINDS!r}:
                continue
            if callable(value) or isinstance(value, types.ModuleType):
                noted[space_name, name] = ("is", value)
            elif space_name.startswith("ctxlib") and name.isupper():
                noted[space_name, name] = ("repr", repr(value))
    sys.ctxlib_grade_noted = (spaces, noted)
_ctxlib_grade_note()
del _ctxlib_grade_note
"""

NAME_WHAT_CHANGED = f"""
def _ctxlib_grade_changed():
    import sys
    spaces, noted = sys.ctxlib_grade_noted
    gone = object()
    changed = []
    for (space_name, name), (kind, value) in noted.items():
        if space_name == "sys.modules":
            current = sys.modules.get(name, spaces[name])
        else:
            current = vars(spaces[space_name]).get(name, gone)
        same = current is value if kind == "is" else (current is not gone
                                                      and repr(current) == value)
        if not same:
            changed.append(name if space_name == "sys.modules" else f"{{space_name}}.{{name}}")
    if globals().get("ctxlib", spaces["ctxlib"]) is not spaces["ctxlib"]:
        changed.append("ctxlib (the notebook's name for the course's package)")
    # sys.stdout.write, not print: print may be what was changed
    sys.stdout.write({GUARD_MARK!r} + " " + "; ".join(sorted(changed)) + "\\n")
_ctxlib_grade_changed()
del _ctxlib_grade_changed
"""


def _guard_says(cell) -> str | None:
    """What a ``NAME_WHAT_CHANGED`` cell found changed ('' for nothing); None when it could not
    tell (its record of the course's code was removed, say), which counts as a change."""
    for output in cell.get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith(GUARD_MARK):
                return line[len(GUARD_MARK):].strip()
    return None


def run_notebook(nb, workdir: Path, budget: str, time_limit: float,
                 checks: dict | None = None) -> tuple[str, dict[str, str | None]]:
    """Execute ``nb`` in place in ``workdir``, continuing past errors. Returns how it ended
    ("finished", "out of time" or "the kernel died") and, for each of the ``checks`` ({grade
    id: cell}) that ran, what the cells before it changed of the course's code ('' for
    nothing; see ``NAME_WHAT_CHANGED``)."""
    import nbformat
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from ctxlib.kernel import notebook_client

    check_ids = {id(cell): grade_id for grade_id, cell in (checks or {}).items()}
    changed: dict[str, str | None] = {}
    deadline = time.monotonic() + time_limit
    client = notebook_client(nb, kernel_name="python3", allow_errors=True,
                             resources={"metadata": {"path": str(workdir)}})

    def run(cell, index):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CellTimeoutError("out of time")
        client.timeout = int(remaining) + 1
        client.execute_cell(cell, index)

    try:
        with environment(CTXLIB_BUDGET=budget, CTXLIB_CHECKPOINTS=str(workdir),
                         CTXLIB_PROGRESS="off"), client.setup_kernel():
            if check_ids:  # the grader's own cells run in the kernel but stay out of ``nb``
                run(nbformat.v4.new_code_cell(NOTE_THE_COURSES_CODE), 0)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                if id(cell) in check_ids:
                    guard = nbformat.v4.new_code_cell(NAME_WHAT_CHANGED)
                    run(guard, index)
                    changed[check_ids[id(cell)]] = _guard_says(guard)
                run(cell, index)
    except CellTimeoutError:
        return "out of time", changed
    except DeadKernelError:
        return "the kernel died", changed
    return "finished", changed


def _verdict(cell, ended: str) -> tuple[bool, str]:
    """(earned its points?, the checker's message) from a check cell's outputs."""
    if cell.get("execution_count") is None and not cell.get("outputs"):
        if ended == "out of time":
            return False, "not run: the notebook ran out of time"
        if ended == "the kernel died":
            return False, ("not run: the kernel died before this check (out of memory, or "
                           "code that ends the process)")
        return False, "not run"
    text = ""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return False, f"{output.get('ename')}: {output.get('evalue', '')}".strip()
        if output.get("output_type") == "stream":
            text += output.get("text", "")
    lines = [line for line in text.splitlines() if line.strip()]
    graded = [line for line in lines if line.startswith(("Correct!", "Not graded"))]
    message = graded[-1] if graded else (lines[-1] if lines else "")
    if any(line.startswith("Not graded") for line in lines):
        return False, message
    return bool(graded), message or "the check printed nothing"


def _unanswered_exercises(nb) -> set[str]:
    """Exercises (``ex-N-k``) whose answer cell raised NotImplementedError: the stub is still
    there, so their check's own error (often a NameError) is not the news."""
    unanswered = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("solution") and any(output.get("ename") == "NotImplementedError"
                                        for output in cell.get("outputs", [])):
            unanswered.add(meta.get("grade_id", "").rsplit("-answer", 1)[0])
    return unanswered


def place_handed_in_checkpoints(folder: Path, workdir: Path) -> list[Path]:
    """Copy the checkpoints a student handed in (``*.pt`` beside the notebook, or in
    ``checkpoints/gpu/`` there) to ``checkpoints/gpu/`` of the notebook's working directory,
    where the GPU exercises' checks look for them by name (see ctxlib.handin)."""
    found = sorted(folder.glob("*.pt")) + sorted(folder.glob("checkpoints/gpu/*.pt"))
    placed = []
    for checkpoint in found:
        target = workdir / "checkpoints" / "gpu" / checkpoint.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkpoint, target)
        placed.append(target)
    return placed


def _unreadable(student: str, path: Path, why: str) -> list[Grade]:
    return [Grade(student, path.name, "-", 0.0, 0.0, why)]


def grade_notebook(path: Path, student: str, source: Path, budget: str,
                   time_limit: float) -> list[Grade]:
    """Grade one submission against its course notebook in ``source`` (see the docstring)."""
    import nbformat

    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # noqa: BLE001 (a damaged file fails in many ways inside nbformat)
        return _unreadable(student, path, f"not a notebook that can be read ({error}); hand in "
                           "the .ipynb file as Jupyter or Colab saved it")
    course_path = course_notebook_for(path, nb, source)
    if course_path is None:
        return _unreadable(student, path, "no course chapter matches this notebook (neither its "
                           "name nor its title): name it as the course does, e.g. "
                           "02_attention.ipynb")
    course = nbformat.read(course_path, as_version=4)
    checks = lock_cells(nb, course)
    with tempfile.TemporaryDirectory(prefix=f"grade-{student}-") as workdir:
        place_handed_in_checkpoints(path.parent, Path(workdir))
        ended, changed = run_notebook(nb, Path(workdir), budget, time_limit, checks)
    unanswered = _unanswered_exercises(nb)
    grades = []
    for grade_id, cell in checks.items():
        earned, message = _verdict(cell, ended)
        exercise = grade_id.rsplit("-check", 1)[0]
        if not earned and (exercise in unanswered or message.startswith("NotImplementedError")):
            message = "not answered: the answer cell still raises NotImplementedError"
        if grade_id in changed and changed[grade_id] != "":
            earned, message = False, (
                "not graded: a cell before this check changed the course's code it relies on ("
                f"{changed[grade_id] or 'the grader could not tell what'}); a check counts only "
                "with the course's own code")
        points = float(cell.metadata["nbgrader"].get("points", 0))
        grades.append(Grade(student, course_path.name, grade_id, points if earned else 0.0,
                            points, message))
    for grade_id, points, answer in answers_graded_by_hand(nb, course):
        grades.append(Grade(student, course_path.name, grade_id, 0.0, points,
                            f"graded by hand, not counted here; the answer: {answer}"))
    return grades


def answers_graded_by_hand(submitted, course) -> list[tuple[str, float, str]]:
    """(grade id, points, the student's text) of each answer the course grades by hand
    (nbgrader's manually graded answers: ``grade`` and ``solution`` both set)."""
    texts = {cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"): cell.source
             for cell in submitted.cells}
    found = []
    for cell in course.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and meta.get("solution"):
            text = " ".join(texts.get(meta["grade_id"], "(deleted)").split())
            found.append((meta["grade_id"], float(meta.get("points", 0)), text[:500]))
    return found


LAYOUT = "SUBMISSIONS/<student>/<notebook>.ipynb, one folder per student"


def grade_all(submissions: Path, source: Path, budget: str = "smoke",
              time_limit: float | None = None) -> list[Grade]:
    """Grade every ``submissions/<student>/*.ipynb``; returns one Grade per check cell (one
    row saying what was wrong for a submission that could not be graded)."""
    if not submissions.is_dir():
        raise FileNotFoundError(f"no folder {submissions}: the grader expects {LAYOUT}.")
    if not any(source.glob("[0-9][0-9]_*.ipynb")):
        raise FileNotFoundError(f"no course notebooks in {source}: point --source at the "
                                "course's notebooks/ folder (its locked cells are restored).")
    loose = sorted(p.name for p in submissions.glob("*.ipynb"))
    if loose:
        raise ValueError(f"{submissions} holds notebooks directly ({', '.join(loose[:3])}); "
                         f"the grader expects {LAYOUT}.")
    handed_in = [(folder, path) for folder in sorted(p for p in submissions.iterdir()
                                                     if p.is_dir())
                 for path in sorted(folder.glob("*.ipynb"))]
    if not handed_in:
        raise ValueError(f"no notebooks in {submissions}: the grader expects {LAYOUT}.")
    limit = time_limit or TIME_LIMITS[budget]
    grades = []
    for folder, path in handed_in:
        try:
            grades += grade_notebook(path, folder.name, source, budget, limit)
        except Exception as error:  # noqa: BLE001 (one broken file must not stop the class)
            grades += _unreadable(folder.name, path, f"could not be graded: "
                                  f"{type(error).__name__}: {error}")
    return grades


def write_csv(grades: list[Grade], out) -> None:
    writer = csv.DictWriter(out, fieldnames=list(Grade.__dataclass_fields__))
    writer.writeheader()
    for grade in grades:
        writer.writerow(asdict(grade))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ctxlib.grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", type=Path, help="one folder per student")
    parser.add_argument("--source", type=Path, default=Path("notebooks"),
                        help="the course's notebooks, whose locked cells are restored")
    parser.add_argument("--budget", choices=sorted(TIME_LIMITS), default="smoke")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds per notebook (default: by budget)")
    parser.add_argument("-o", "--output", type=Path, default=Path("grades.csv"))
    args = parser.parse_args(argv)
    if not _has_kernel():
        raise SystemExit("grading needs a Jupyter kernel: pip install ipykernel nbclient")
    try:
        grades = grade_all(args.submissions, args.source, args.budget, args.time_limit)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    with open(args.output, "w", newline="", encoding="utf-8") as out:
        write_csv(grades, out)
    total = {}
    for grade in grades:
        earned, most = total.get(grade.student, (0.0, 0.0))
        total[grade.student] = (earned + grade.points, most + grade.max_points)
    for student, (earned, most) in total.items():
        print(f"{student}: {earned:g} of {most:g} points")
    print(f"wrote {args.output}")


def _has_kernel() -> bool:
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
