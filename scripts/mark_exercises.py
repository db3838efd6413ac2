"""Write nbgrader metadata into every exercise of the notebooks (see nbtools.mark_exercises).

    python scripts/mark_exercises.py            # every chapter
    python scripts/mark_exercises.py --check    # exit 1 if a notebook is not up to date

Run it after adding or changing an exercise; a test fails while a notebook is out of date.
"""

import argparse
import copy
import sys
from pathlib import Path

import nbformat
from nbtools import ROOT, mark_exercises

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("notebooks", nargs="*", type=Path)
parser.add_argument("--check", action="store_true", help="only report notebooks out of date")
args = parser.parse_args()

stale = []
for path in args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    marked = copy.deepcopy(nb)
    exercises = mark_exercises(marked)
    if marked == nb:
        continue
    stale.append(path.name)
    if not args.check:
        nbformat.write(marked, path)
        print(f"{path.name}: {len(exercises)} exercises marked")
if args.check and stale:
    sys.exit(f"nbgrader metadata out of date in {', '.join(stale)}: run scripts/mark_exercises.py")
