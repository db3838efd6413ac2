"""Run notebooks under a real budget and store their outputs (what the book shows).

    python scripts/execute_notebooks.py --budget cpu                 # every notebook
    python scripts/execute_notebooks.py --budget cpu notebooks/02_attention.ipynb
"""

import argparse
from pathlib import Path

from nbtools import ROOT, execute, write_cpu_times

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
parser.add_argument("notebooks", nargs="*", type=Path)
parser.add_argument("--budget", default="cpu", choices=["cpu", "gpu", "smoke"])
args = parser.parse_args()
if args.budget == "smoke":
    print("Warning: smoke outputs must not be committed; the book shows cpu or gpu runs.")

for path in args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
    print(f"{path.name}: running under the {args.budget} budget ...", flush=True)
    print(f"{path.name}: {execute(path, args.budget):.0f} s", flush=True)
    write_cpu_times()  # the README's, setup page's and instructor guide's tables
