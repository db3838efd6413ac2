"""The homework kit: nbgrader metadata that cannot drift, nbgrader's round trip, and the
course's own grading command on a correct, a partly wrong and an empty submission."""

import copy
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ctxlib.grade import grade_all, main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from nbtools import BEGIN, mark_exercises, student_version

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
NBGRADER = Path(sys.executable).with_name("nbgrader")


def read(path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_carries_nbgrader_metadata_made_from_its_markers(path):
    nb = read(path)
    marked = copy.deepcopy(nb)
    exercises = mark_exercises(marked)
    assert marked == nb, f"{path.name}: run scripts/mark_exercises.py"
    assert exercises, f"{path.name} has no exercise"
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and BEGIN in cell.source:
            assert meta.get("solution"), "a solution region outside a solution cell"
        if meta.get("grade"):  # an autograded check is locked; an answer graded by hand not
            assert meta.get("locked") != meta.get("solution") and meta.get("points", 0) > 0


def answer_cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def submissions(folder: Path) -> Path:
    """Chapter 0 handed in four times: right, partly wrong (and a check edited), empty, and
    partly wrong with the checker replaced."""
    course = read(ROOT / "notebooks" / "00_setup.ipynb")
    right = copy.deepcopy(course)
    wrong = copy.deepcopy(course)
    answer_cell(wrong, "ex-0-2-answer").source = (
        "def pick_steps() -> int:\n    return 10  # the smoke value everywhere\n")
    answer_cell(wrong, "ex-0-2-check").source = 'print("Correct!")'  # restored before grading
    # a wrong answer, and the checker it would meet replaced from the answer cell
    forged = copy.deepcopy(wrong)
    answer_cell(forged, "ex-0-2-answer").source += (
        'ctxlib.checks.check_pick_steps = lambda f: print("Correct!")\n')
    for student, nb in (("ada", right), ("ben", wrong), ("cy", student_version(course)),
                        ("dot", forged)):
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / "00_setup.ipynb")
    return folder


@pytest.mark.slow
def test_the_grading_command_scores_each_exercise_of_each_student(tmp_path, monkeypatch):
    folder = submissions(tmp_path / "submitted")
    grades = {(g.student, g.exercise): g for g in grade_all(folder, ROOT / "notebooks", "smoke")}
    for exercise in ("ex-0-1-check", "ex-0-2-check", "ex-0-3-check"):
        assert grades["ada", exercise].points == grades["ada", exercise].max_points == 1
        assert grades["ada", exercise].message.startswith("Correct!")
        assert grades["cy", exercise].points == 0
        assert grades["cy", exercise].message == ("not answered: the answer cell still raises "
                                                  "NotImplementedError")
    assert grades["ben", "ex-0-1-check"].points == 1 and grades["ben", "ex-0-3-check"].points == 1
    assert grades["ben", "ex-0-2-check"].points == 0  # the edited check was put back
    assert "under the 'cpu' budget pick_steps() returned 10" in grades["ben", "ex-0-2-check"].message
    assert grades["dot", "ex-0-2-check"].points == 0  # the checker was replaced: not counted
    assert "ctxlib.checks.check_pick_steps" in grades["dot", "ex-0-2-check"].message
    assert grades["dot", "ex-0-1-check"].points == 1  # checks before the change still count
    # The GPU speed-up is graded by hand: a row with no points and the student's answer; the
    # empty notebook still ran to its end.
    assert grades["ada", "ex-0-4-manual"].points == 0
    assert grades["ada", "ex-0-4-manual"].max_points == 2
    assert grades["ada", "ex-0-4-manual"].message.startswith("graded by hand")
    assert "the line your measurement printed" in grades["ada", "ex-0-4-manual"].message

    # The command line writes the same grades as a CSV file (one student: the same code path).
    (tmp_path / "one").mkdir()
    shutil.move(folder / "ben", tmp_path / "one" / "ben")
    out = tmp_path / "grades.csv"
    main([str(tmp_path / "one"), "--source", str(ROOT / "notebooks"), "--budget", "smoke",
          "-o", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and set(rows[0]) == {
        "student", "notebook", "exercise", "points", "max_points", "message"}
    assert {(r["exercise"], float(r["points"])) for r in rows} == {
        (exercise, grades["ben", exercise].points) for exercise in
        ("ex-0-1-check", "ex-0-2-check", "ex-0-3-check", "ex-0-4-manual")}


NBGRADER_CONFIG = """c = get_config()
c.CourseDirectory.root = "."
# nbgrader's default of 30 s per cell is far too short for a training cell.
c.Execute.timeout = 300
"""


@pytest.mark.slow
@pytest.mark.skipif(not NBGRADER.exists(), reason="nbgrader is not installed")
def test_nbgrader_generates_every_student_version_and_autogrades_chapter_0(tmp_path):
    """nbgrader releases every chapter (its metadata valid, its solutions gone, its points
    those of the course's markers); chapter 0 is then handed in with its solutions and as
    released, and autograded. A model chapter's autograde runs the same check cells: chapter
    0 and the grading command's tests cover that mechanism, each notebook's smoke run its
    checks."""
    (tmp_path / "source" / "ps1").mkdir(parents=True)
    for path in NOTEBOOKS:
        shutil.copy(path, tmp_path / "source" / "ps1")
    (tmp_path / "nbgrader_config.py").write_text(NBGRADER_CONFIG)

    # nbgrader runs other tools of its environment (alembic) by name: put them on the PATH.
    # Graded under smoke, as the instructor guide says, whatever the calling shell's budget.
    env = {**os.environ, "PATH": f"{NBGRADER.parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CTXLIB_BUDGET": "smoke"}

    def nbgrader(*args, force=True):
        done = subprocess.run([str(NBGRADER), *args, *(["--force"] if force else [])],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900, check=False)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    nbgrader("generate_assignment", "ps1")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        for path in NOTEBOOKS:
            released = tmp_path / "release" / "ps1" / path.name
            assert BEGIN not in released.read_text(), path.name
            points = sum(e["points"] for e in mark_exercises(read(path)))
            assert gradebook.find_notebook(path.stem, "ps1").max_score == points, path.name

    # Chapter 0 alone is handed in, by the instructor (solutions) and a student (as released).
    chapter = "00_setup"
    for path in NOTEBOOKS:
        if path.stem != chapter:
            (tmp_path / "source" / "ps1" / path.name).unlink()
    nbgrader("generate_assignment", "ps1")
    released = tmp_path / "release" / "ps1" / f"{chapter}.ipynb"
    for student, notebook in (("instructor", tmp_path / "source" / "ps1" / f"{chapter}.ipynb"),
                              ("student", released)):
        folder = tmp_path / "submitted" / student / "ps1"
        folder.mkdir(parents=True)
        shutil.copy(notebook, folder)
    nbgrader("autograde", "ps1")

    gpu_points = sum(e["points"] for e in mark_exercises(read(ROOT / "notebooks" /
                                                              f"{chapter}.ipynb"))
                     if e["points"] > 1)
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gradebook:
        student = gradebook.find_submission_notebook(chapter, "ps1", "student")
        assert student.max_score > 0 and student.score == 0
        instructor = gradebook.find_submission_notebook(chapter, "ps1", "instructor")
        # Every exercise but the GPU one (graded by hand) earns its points.
        assert instructor.score == instructor.max_score - gpu_points
    # Grades leave as a CSV file, and each student gets a feedback page.
    nbgrader("export", "--to", "grades.csv", force=False)
    rows = {r["student_id"]: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert float(rows["student"]["raw_score"]) == 0 and float(rows["instructor"]["raw_score"]) > 0
    nbgrader("generate_feedback", "ps1")
    assert (tmp_path / "feedback" / "student" / "ps1" / f"{chapter}.html").exists()
    # The student version ran to its last cell despite every unanswered exercise.
    graded = read(tmp_path / "autograded" / "student" / "ps1" / f"{chapter}.ipynb")
    last_code = [c for c in graded.cells if c.cell_type == "code"][-1]
    assert last_code.get("execution_count") is not None
