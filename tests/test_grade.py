"""The grading command counts only the course's checks, whatever a submission is called or
carries, and one broken submission never stops the class (ctxlib.grade). A tiny course of one
exercise keeps the kernel runs short; tests/test_homework.py grades real chapter 0."""

import copy
from pathlib import Path

import nbformat
import pytest

from ctxlib.grade import course_notebook_for, grade_all, grade_notebook, lock_cells, main


def _meta(grade_id, **fields):
    return {"nbgrader": {"schema_version": 3, "grade_id": grade_id, "grade": False,
                         "locked": False, "solution": False, **fields}}


def tiny_course() -> nbformat.NotebookNode:
    """'# 0. Tiny': one exercise, whose answer must be 42 (one point)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 0. Tiny\n\nOne exercise."),
        nbformat.v4.new_markdown_cell("### Exercise 0.1: the answer",
                                      metadata=_meta("ex-0-1-task", locked=True)),
        nbformat.v4.new_code_cell("answer = None  # your answer",
                                  metadata=_meta("ex-0-1-answer", solution=True)),
        nbformat.v4.new_code_cell('print("Correct!" if answer == 42 else "Not yet: try again")',
                                  metadata=_meta("ex-0-1-check", grade=True, locked=True,
                                                 points=1)),
    ]
    return nb


@pytest.fixture
def course(tmp_path) -> Path:
    source = tmp_path / "course"
    source.mkdir()
    nbformat.write(tiny_course(), source / "00_tiny.ipynb")
    nb = tiny_course()
    nb.cells[0].source = "# 1. Other"
    nbformat.write(nb, source / "01_other.ipynb")
    return source


def hand_in(folder: Path, student: str, name: str, nb) -> Path:
    (folder / student).mkdir(parents=True, exist_ok=True)
    path = folder / student / name
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("name", ["00_tiny.ipynb", "Copy of 00_tiny.ipynb",
                                  "00_tiny (1).ipynb", "my homework.ipynb"])
def test_a_submission_is_matched_to_its_chapter_whatever_it_is_called(course, name):
    # "my homework" has no chapter in its name: its title says which one it is
    assert course_notebook_for(Path(name), tiny_course(), course) == course / "00_tiny.ipynb"


def test_a_notebook_of_no_chapter_is_not_matched(course):
    nb = tiny_course()
    nb.cells[0].source = "# Something else"
    assert course_notebook_for(Path("notes.ipynb"), nb, course) is None


def test_only_the_courses_checks_count_and_edited_or_deleted_ones_come_back():
    course = tiny_course()
    forged = copy.deepcopy(course)
    forged.cells[3].source = 'print("Correct!")'  # the check, edited
    forged.cells.append(nbformat.v4.new_code_cell(  # a check of the student's own, 100 points
        'print("Correct!")', metadata=_meta("ex-0-9-check", grade=True, locked=True,
                                             points=100)))
    checks = lock_cells(forged, course)
    assert list(checks) == ["ex-0-1-check"]
    assert checks["ex-0-1-check"].source == course.cells[3].source
    assert forged.cells[3] is checks["ex-0-1-check"]

    renamed = copy.deepcopy(course)  # the check's grade id changed, and a copy made of it
    renamed.cells[3].metadata["nbgrader"]["grade_id"] = "mine"
    renamed.cells[3].source = 'print("Correct!")'
    checks = lock_cells(renamed, course)
    assert list(checks) == ["ex-0-1-check"]
    assert renamed.cells[-1] is checks["ex-0-1-check"]  # put back at the end

    deleted = copy.deepcopy(course)
    del deleted.cells[3]
    assert lock_cells(deleted, course)["ex-0-1-check"] is deleted.cells[-1]


@pytest.mark.parametrize("content", ["", "not json", "{}", '{"cells": 3}'])
def test_an_unreadable_submission_gets_a_row_saying_so(course, tmp_path, content):
    path = tmp_path / "ada" / "00_tiny.ipynb"
    path.parent.mkdir()
    path.write_text(content)
    [row] = grade_notebook(path, "ada", course, "smoke", 60)
    assert row.points == row.max_points == 0 and "hand in the .ipynb" in row.message


def test_the_layout_is_checked_before_grading(course, tmp_path):
    with pytest.raises(FileNotFoundError, match="one folder per student"):
        grade_all(tmp_path / "missing", course)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no notebooks"):
        grade_all(tmp_path / "empty", course)
    (tmp_path / "flat").mkdir()
    nbformat.write(tiny_course(), tmp_path / "flat" / "00_tiny.ipynb")
    with pytest.raises(ValueError, match="holds notebooks directly"):
        grade_all(tmp_path / "flat", course)
    with pytest.raises(FileNotFoundError, match="course notebooks"):
        grade_all(tmp_path / "flat", tmp_path / "empty")
    with pytest.raises(SystemExit, match="one folder per student"):
        main([str(tmp_path / "flat"), "--source", str(course), "-o", str(tmp_path / "g.csv")])


@pytest.mark.slow
def test_forged_checks_earn_nothing_broken_files_do_not_stop_the_class(course, tmp_path):
    """Run in a kernel: an honest answer earns its point under a Colab copy's name, a forged
    check and a forged extra check earn nothing, a kernel that dies and a file that is not a
    notebook each get a row, and the others are still graded."""
    folder = tmp_path / "submitted"
    honest = tiny_course()
    honest.cells[2].source = "answer = 42"
    hand_in(folder, "ada", "Copy of 00_tiny.ipynb", honest)
    forged = tiny_course()
    forged.cells[3].source = 'print("Correct!")'
    forged.cells.append(nbformat.v4.new_code_cell(
        'print("Correct!")', metadata=_meta("ex-0-9-check", grade=True, locked=True,
                                             points=100)))
    hand_in(folder, "ben", "00_tiny (1).ipynb", forged)
    dies = copy.deepcopy(honest)
    dies.cells.insert(3, nbformat.v4.new_code_cell("import os\nos._exit(1)"))
    hand_in(folder, "cy", "00_tiny.ipynb", dies)
    (folder / "dee").mkdir()
    (folder / "dee" / "00_tiny.ipynb").write_text("{}")

    grades = {g.student: g for g in grade_all(folder, course, "smoke", time_limit=120)}
    assert (grades["ada"].points, grades["ada"].max_points) == (1, 1)
    assert grades["ben"].exercise == "ex-0-1-check" and grades["ben"].points == 0
    assert grades["ben"].message == "Not yet: try again"
    assert grades["cy"].points == 0 and "kernel died" in grades["cy"].message
    assert grades["dee"].points == 0 and "hand in the .ipynb" in grades["dee"].message
    assert len(grades) == 4


FORGERIES = {
    # what the check calls, changed so that a wrong answer prints "Correct!"
    "builtins.print": "import builtins\n_print = builtins.print\n"
                      "builtins.print = lambda *a, **k: _print('Correct!')\nanswer = 7",
    # the grader's own record of the course's code, removed
    "could not tell": "import sys\ndel sys.ctxlib_grade_noted\nanswer = 7",
}


@pytest.mark.slow
def test_a_check_after_a_cell_that_changed_what_it_calls_earns_nothing(course, tmp_path):
    """A check runs on the course's code: a student cell that rebinds a function the check
    calls (or removes the grader's record of them) costs that check its points, with a
    message naming the change; an honest answer beside them keeps its point."""
    folder = tmp_path / "submitted"
    honest = tiny_course()
    honest.cells[2].source = "answer = 42"
    hand_in(folder, "ada", "00_tiny.ipynb", honest)
    for student, forged_answer in zip(("ben", "cy"), FORGERIES.values()):
        forged = tiny_course()
        forged.cells[2].source = forged_answer
        hand_in(folder, student, "00_tiny.ipynb", forged)

    grades = {g.student: g for g in grade_all(folder, course, "smoke", time_limit=120)}
    assert (grades["ada"].points, grades["ada"].message) == (1, "Correct!")
    for student, named in zip(("ben", "cy"), FORGERIES):
        assert grades[student].points == 0, grades[student]
        assert grades[student].message.startswith("not graded: a cell before this check "
                                                  "changed the course's code")
        assert named in grades[student].message


GPU_CHECK = """\
import dataclasses, functools
from ctxlib import checks, handin

tiny = dataclasses.replace(
    handin.EXERCISES["4.4"], file="tiny_exercise", target=3.3,
    chapter_run={chapter_run!r},
    rescore=functools.partial(handin.char_gpt_validation_loss, max_windows=40))
checks.check_gpu_exercise(tiny)
"""


@pytest.mark.slow
def test_a_gpu_exercise_is_graded_from_the_checkpoint_handed_in(tmp_path, monkeypatch):
    """Run in a kernel on a CPU grader: a genuine, changed gpu run handed in beside the
    notebook earns the points; the same notebook with forged weights, or with no checkpoint,
    earns nothing, and the message says what to hand in."""
    import torch
    from handin_helpers import forge
    from test_handin import CHAPTER_RUN, _untrained_blob, run

    from ctxlib.data import load_tinyshakespeare
    from ctxlib.tokenizers import CharTokenizer

    source = tmp_path / "course"
    source.mkdir()
    nb = tiny_course()
    nb.cells[2].source = "answer = 42"
    nb.cells[3].source = GPU_CHECK.format(chapter_run=CHAPTER_RUN)
    nbformat.write(nb, source / "00_tiny.ipynb")
    folder = tmp_path / "submitted"
    for student in ("ada", "ben", "cy"):
        hand_in(folder, student, "00_tiny.ipynb", nb)

    text = load_tinyshakespeare()
    chars = CharTokenizer.train(text)
    data = torch.tensor(chars.encode(text))
    genuine = run(tmp_path / "runs", monkeypatch, (chars, data[: int(0.9 * len(data))]),
                  n_embd=64)
    (folder / "ada" / "checkpoints" / "gpu").mkdir(parents=True)
    (folder / "ada" / "checkpoints" / "gpu" / genuine.name).write_bytes(genuine.read_bytes())
    forged = _untrained_blob(genuine)
    forged["state"]["history"]["evals"] = {"valid_loss": [0.1]}
    forge(folder / "ben" / genuine.name, forged)

    grades = {g.student: g for g in grade_all(folder, source, "smoke", time_limit=120)}
    assert grades["ada"].points == 1 and grades["ada"].message.startswith("Correct!")
    assert grades["ben"].points == 0 and "above the target 3.3" in grades["ben"].message
    assert grades["cy"].points == 0 and grades["cy"].message.startswith("Not graded")
    assert "hand in checkpoints/gpu/tiny_exercise.pt" in grades["cy"].message
