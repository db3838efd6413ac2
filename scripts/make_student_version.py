"""Write the student version of notebooks: solutions replaced by stubs, outputs cleared.

    python scripts/make_student_version.py notebooks/02_attention.ipynb -o student/

Solutions sit between nbgrader's markers (### BEGIN SOLUTION / ### END SOLUTION), so
instructors can also use nbgrader directly on the original notebooks.
"""

import argparse
from pathlib import Path

import nbformat
from nbtools import student_version

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("notebooks", nargs="+", type=Path)
parser.add_argument("-o", "--output-dir", type=Path, default=Path("student"))
args = parser.parse_args()

args.output_dir.mkdir(parents=True, exist_ok=True)
for path in args.notebooks:
    out = args.output_dir / path.name
    nbformat.write(student_version(nbformat.read(path, as_version=4)), out)
    print(f"{path} -> {out}")
