"""Write the student version of the notebooks, ready to publish and open in Colab.

    python scripts/make_student_version.py -o student/                  # every chapter
    python scripts/make_student_version.py notebooks/02_attention.ipynb -o student/

Each solution (between nbgrader's markers ### BEGIN SOLUTION / ### END SOLUTION) becomes a
stub that raises NotImplementedError, outputs are cleared, and each notebook starts with an
"Open in Colab" badge pointing at the published copy: the course repository's ``student``
branch (``--branch``), folder ``student/``. A README.md beside the notebooks lists them with
their badges. Instructors can also use nbgrader on the original notebooks (see the guide).
"""

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_markdown_cell
from nbtools import ROOT, STUDENT_BRANCH, colab_badge, student_version

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("notebooks", nargs="*", type=Path)
parser.add_argument("-o", "--output-dir", type=Path, default=Path("student"))
parser.add_argument("--branch", default=STUDENT_BRANCH, help="where the student copies are published")
args = parser.parse_args()

args.output_dir.mkdir(parents=True, exist_ok=True)
rows = []
for path in args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
    nb = student_version(nbformat.read(path, as_version=4))
    published = f"{args.output_dir.name}/{path.name}"
    nb.cells.insert(0, new_markdown_cell(colab_badge(published, args.branch)))
    nbformat.write(nb, args.output_dir / path.name)
    title = next((c.source.splitlines()[0].lstrip("# ") for c in nb.cells
                  if c.cell_type == "markdown" and c.source.startswith("# ")), path.stem)
    rows.append(f"| {title} | [{path.name}]({path.name}) | {colab_badge(published, args.branch)} |")
    print(f"{path} -> {args.output_dir / path.name}")

(args.output_dir / "README.md").write_text(
    "# Contextual language representations from scratch: student notebooks\n\n"
    "Open a chapter in Colab with its badge, or download it and run it in Jupyter. Each "
    "exercise has a cell for your answer (replace `raise NotImplementedError()`) and a check "
    "cell below it.\n\n| chapter | notebook | Colab |\n| --- | --- | --- |\n"
    + "\n".join(rows) + "\n", encoding="utf-8")
print(f"wrote {args.output_dir / 'README.md'}")
