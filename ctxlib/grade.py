"""Grade students' notebooks, with or without nbgrader.

    python -m ctxlib.grade SUBMISSIONS --budget smoke -o grades.csv

``SUBMISSIONS`` holds one folder per student with their notebooks, for example
``SUBMISSIONS/ada/02_attention.ipynb``. Each notebook runs top to bottom in a working
directory of its own (its own checkpoints: one student's training run is never resumed into
another's), continues past errors, and stops at the budget's time limit. Every check cell
(the cells that nbgrader marks as autograded tests) then gives its exercise's points when it
ran without an error and graded the work; a check that says "Not graded" (a GPU target met
on another budget, say) gives none, and its message says why. One CSV row per student and
exercise: the points, the most points, and the checker's message.

Check cells are locked: before running, each is replaced by the course's own version from
``--source`` (the course's ``notebooks/`` folder), so an edited check cannot pass.
"""

from __future__ import annotations

import argparse
import copy
import csv
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


def lock_cells(submitted, source) -> None:
    """Replace every locked cell of ``submitted`` by the course's version (by grade id)."""
    course = {cell.metadata["nbgrader"]["grade_id"]: cell for cell in source.cells
              if cell.get("metadata", {}).get("nbgrader", {}).get("locked")}
    for index, cell in enumerate(submitted.cells):
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in course:
            original = copy.deepcopy(course.pop(grade_id))
            if original.cell_type == "code":  # a markdown cell has no outputs to clear
                original.outputs, original.execution_count = [], None
            submitted.cells[index] = original
    if course:  # a locked cell the student deleted: put the check back at the end
        for cell in course.values():
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
                restored = copy.deepcopy(cell)
                restored.outputs, restored.execution_count = [], None
                submitted.cells.append(restored)


def run_notebook(nb, workdir: Path, budget: str, time_limit: float) -> bool:
    """Execute ``nb`` in place in ``workdir``; continue past errors. False if time ran out."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    deadline = time.monotonic() + time_limit
    client = NotebookClient(nb, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}})
    with environment(CTXLIB_BUDGET=budget, CTXLIB_CHECKPOINTS=str(workdir),
                     CTXLIB_PROGRESS="off"), client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            client.timeout = int(remaining) + 1
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                return False
    return True


def _verdict(cell, finished: bool) -> tuple[bool, str]:
    """(earned its points?, the checker's message) from a check cell's outputs."""
    if cell.get("execution_count") is None and not cell.get("outputs"):
        return False, "not run: the notebook ran out of time" if not finished else "not run"
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
            unanswered.add(meta["grade_id"].rsplit("-answer", 1)[0])
    return unanswered


def grade_notebook(path: Path, student: str, source: Path | None, budget: str,
                   time_limit: float) -> list[Grade]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if source is not None and (source / path.name).exists():
        lock_cells(nb, nbformat.read(source / path.name, as_version=4))
    with tempfile.TemporaryDirectory(prefix=f"grade-{student}-") as workdir:
        finished = run_notebook(nb, Path(workdir), budget, time_limit)
    unanswered = _unanswered_exercises(nb)
    grades = []
    for cell in grade_cells(nb):
        meta = cell.metadata["nbgrader"]
        earned, message = _verdict(cell, finished)
        exercise = meta["grade_id"].rsplit("-check", 1)[0]
        if not earned and (exercise in unanswered or message.startswith("NotImplementedError")):
            message = "not answered: the answer cell still raises NotImplementedError"
        points = float(meta.get("points", 0))
        grades.append(Grade(student, path.name, meta["grade_id"], points if earned else 0.0,
                            points, message))
    if not grades:
        grades.append(Grade(student, path.name, "-", 0.0, 0.0,
                            "no check cells: is this a course notebook?"))
    return grades


def grade_all(submissions: Path, source: Path | None = None, budget: str = "smoke",
              time_limit: float | None = None) -> list[Grade]:
    """Grade every ``submissions/<student>/*.ipynb``; returns one Grade per check cell."""
    limit = time_limit or TIME_LIMITS[budget]
    grades = []
    for folder in sorted(p for p in submissions.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.ipynb")):
            grades += grade_notebook(path, folder.name, source, budget, limit)
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
    source = args.source if args.source.is_dir() else None
    grades = grade_all(args.submissions, source, args.budget, args.time_limit)
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
