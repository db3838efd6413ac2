"""The GPU check: what a session lent a CUDA GPU runs first, in one command.

    python scripts/gpu_check.py                        # every chapter, both parts
    python scripts/gpu_check.py --parts smoke --jobs 8  # (a) only, eight notebooks at once
    python scripts/gpu_check.py --parts budget --chapters 07_head_to_head 05_bert
    python scripts/gpu_check.py --dry-run              # on the CPU, tiny: the same code path (CI)

A call of several chapters takes minutes on an H100: where a call's time is limited, split the
check into calls by ``--parts`` and ``--chapters`` (given in the order to run them, the most
wanted first). The calls gather in one report: each chapter's entry is written as soon as it
is done, beside those of earlier calls on the same device and torch.

For each chapter's notebook it

(a) runs the notebook end to end on this device under the ``smoke`` budget (does every cell
    work on a GPU?);
(b) runs it under the ``gpu`` budget, every data set and model at its real size, with each
    training loop capped at ``--max-steps`` steps (``CTXLIB_MAX_STEPS``). Unlike the tests'
    code-path runs, this timing run (``CTXLIB_TIMING_RUN``) keeps every data set whole and
    every seed, size and setting of the evaluation protocol, so that it does all the work of
    the real run but the skipped steps (a chapter with many fine-tuning fits takes longer
    than one with a single long loop: split a run with ``--chapters``). ``ctxlib.train``
    logs each loop (``CTXLIB_RUN_LOG``): the steps it was asked for, the seconds of each step
    run, its losses, its peak GPU memory. The chapter's largest loop gives ms per step, tokens
    per second (batch x context, padding included, from ``scripts/pretrain.py``'s budgets),
    peak memory and whether the loss fell;
(c) projects the whole ``gpu`` budget's time on this GPU: the capped run's wall time plus, for
    each loop, the steps it skipped times its median step time (the first steps, which warm
    up and compile, left out). And on a free Colab T4: the training part times the ratio of
    memory bandwidths (``T4_SLOWDOWN``: small models train at the speed of memory, and a T4
    has 320 GB/s against 3,350 on an H100 SXM and 4,800 on an H200), the rest times 2 (a
    stated margin: GPU work outside the loops, and Colab's 2 CPU cores). A projection, not a
    measurement: the T4 column is good to a factor of about 1.5;
(d) writes ``results/gpu_check.json``: device, torch, date, and per chapter ``smoke`` (a) and
    ``budget`` (b, c).

``--jobs N`` runs N notebooks at once for (a), which asks only whether every cell works; (b)
runs one notebook at a time, since its step times are what it measures.

``--dry-run`` runs the same steps on the CPU under the smoke budget with 2 steps per loop
(tests/test_gpu_check.py), so that the script is known to work before a GPU is lent.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import nbformat
import torch
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from ctxlib.kernel import notebook_client

# How much slower a T4 trains the course's models than the GPU measured: the ratio of memory
# bandwidths (T4: 320 GB/s; published figures of each GPU), by the name CUDA reports.
T4_BANDWIDTH_GBS = 320
BANDWIDTH_GBS = {"H200": 4800, "H100 80GB HBM3": 3350, "H100 PCIe": 2000, "H100": 3350,
                 "A100-SXM4-80GB": 2039, "A100": 1555, "L4": 300, "T4": 320}
REST_SLOWDOWN = 2.0  # the part outside training loops, on a T4 with 2 CPU cores
WARMUP_STEPS = 2  # steps left out of a loop's step time (warm-up, compilation)


def t4_slowdown(device_name: str) -> float | None:
    """T4 time / this GPU's time for a training step, from memory bandwidth; None if unknown."""
    for key, bandwidth in BANDWIDTH_GBS.items():  # the most specific names come first
        if key in device_name:
            return bandwidth / T4_BANDWIDTH_GBS
    return None


def run_notebook(path: Path, budget: str, env: dict[str, str], timeout: int) -> dict:
    """Execute the notebook at ``path`` in a scratch folder, its kernel started with ``env``
    added to this process's variables; wall time, error."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    error = None
    # Handed to the kernel, not set in os.environ: the smoke runs start kernels from several
    # threads at once, and each would otherwise undo the others' variables.
    kernel_env = {**os.environ, **env, "CTXLIB_BUDGET": budget, "CTXLIB_PROGRESS": "off"}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            notebook_client(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": scratch}}).execute(env=kernel_env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as failure:
        error = f"{type(failure).__name__}: {str(failure)[-1500:]}"  # the next chapter goes on
    return {"ok": error is None, "seconds": round(time.perf_counter() - start, 1),
            "error": error}


def step_seconds(loop: dict) -> float | None:
    """The median seconds of a loop's steps, the warm-up steps left out when there are more."""
    steps = loop["seconds"][WARMUP_STEPS:] or loop["seconds"]
    return statistics.median(steps) if steps else None


def tokens_per_step(chapter: str) -> int | None:
    """Tokens in one pretraining batch of ``chapter``'s gpu budget (batch x context)."""
    from pretrain import RECIPES

    for name, recipe in RECIPES.items():
        if recipe.chapter == chapter and not name.startswith("h2h_"):
            cfg = recipe.budgets["gpu"]
            return cfg[recipe.batch_key] * recipe.context(cfg)
    if chapter == "07_head_to_head":
        cfg = RECIPES["h2h_causal"].budgets["gpu"]
        return cfg["sizes"]["batch"] * cfg["sizes"]["context"]
    return None


def project(chapter: str, run: dict, loops: list[dict], slowdown: float | None) -> dict:
    """Summarise the capped gpu-budget run of ``chapter`` and project its whole time."""
    timed = [loop for loop in loops if loop["seconds"]]
    measured = sum(sum(loop["seconds"]) for loop in timed)
    skipped = sum((loop["asked_steps"] - loop["steps_run"]) * step_seconds(loop)
                  for loop in timed)
    training = measured + skipped
    rest = max(0.0, run["seconds"] - measured)
    entry = {**run, "training_loops": len(loops),
             "steps_asked": sum(loop["asked_steps"] for loop in loops),
             "steps_run": sum(loop["steps_run"] for loop in loops),
             "training_seconds_projected": round(training, 1),
             "other_seconds": round(rest, 1),
             "projected_seconds": round(training + rest, 1),
             "projected_t4_seconds": (round(training * slowdown + rest * REST_SLOWDOWN, 1)
                                      if slowdown else None)}
    if timed:
        main = max(timed, key=lambda loop: (loop["parameters"], loop["asked_steps"]))
        seconds = step_seconds(main)
        tokens = tokens_per_step(chapter)
        peak = main["peak_memory_bytes"]
        entry["largest_loop"] = {
            "parameters": main["parameters"], "asked_steps": main["asked_steps"],
            "steps_run": main["steps_run"], "ms_per_step": round(1000 * seconds, 2),
            "tokens_per_step": tokens,
            "tokens_per_second": round(tokens / seconds) if tokens else None,
            "peak_memory_gb": round(peak / 2**30, 2) if peak is not None else None,
            "loss_first": main["loss"][0], "loss_last": main["loss"][-1],
            "loss_fell": main["loss"][-1] < main["loss"][0]}
    return entry


def earlier_report(path: Path, identity: dict) -> dict:
    """The chapters of the report at ``path`` when an earlier call wrote it on the same device,
    torch and budget (``identity``); else none."""
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    if any(report.get(key) != value for key, value in identity.items()):
        print(f"{path} holds another device's or setting's check: starting a new report")
        return {}
    return report.get("chapters", {})


def timing_run(path: Path, budget: str, env: dict, max_steps: int, timeout: int,
               slowdown: float | None) -> dict:
    """(b) and (c) for the notebook at ``path``: its capped run, projected."""
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "loops.jsonl"
        # A timing run: the loops are capped, every data set, seed and size is kept.
        run = run_notebook(path, budget, {**env, "CTXLIB_MAX_STEPS": str(max_steps),
                                          "CTXLIB_TIMING_RUN": "1",
                                          "CTXLIB_RUN_LOG": str(log)}, timeout)
        loops = ([json.loads(line) for line in log.read_text().splitlines()]
                 if log.exists() else [])
    return project(path.stem, run, loops, slowdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", nargs="*",
                        help="notebook names, in the order to run them (default: all)")
    parser.add_argument("--notebook", type=Path, action="append", default=[],
                        help="a notebook file to check instead of the chapters (repeatable)")
    parser.add_argument("--parts", nargs="+", choices=("smoke", "budget"),
                        default=["smoke", "budget"],
                        help="smoke: (a), every cell on the GPU; budget: (b) and (c), timed")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at once for (a)")
    parser.add_argument("--max-steps", type=int, default=30, help="steps per training loop")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU, smoke budget only, 2 steps per loop")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "gpu_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.dry_run:
        sys.exit("No CUDA GPU here: this check is for a GPU machine (--dry-run tries it on "
                 "the CPU).")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    budget = "smoke" if args.dry_run else "gpu"
    max_steps = 2 if args.dry_run else args.max_steps
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.dry_run
              else "cpu (dry run)")
    slowdown = t4_slowdown(device)
    notebooks = args.notebook or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if args.chapters:
        by_name = {p.stem: p for p in notebooks}
        missing = [name for name in args.chapters if name not in by_name]
        if missing:
            sys.exit(f"no notebook called {', '.join(missing)}")
        notebooks = [by_name[name] for name in args.chapters]
    # the smoke runs do not depend on the step cap: each timing run records its own
    identity = {"device": device, "torch": torch.__version__, "budget": budget}
    result = {**identity, "date": datetime.date.today().isoformat(), "t4_slowdown": slowdown,
              "chapters": earlier_report(args.out, identity)}
    env = {"CTXLIB_CHECK_DEVICES": "1"} if args.dry_run else {}  # the CPU plays the GPU
    writing = threading.Lock()  # the smoke runs finish in threads of their own

    def write(path: Path, part: str, entry: dict) -> None:
        """Keep ``entry`` as ``part`` of ``path``'s chapter, and write the report now."""
        with writing:
            result["chapters"].setdefault(path.stem, {})[part] = entry
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")

    if "smoke" in args.parts:
        def smoke(path: Path) -> None:
            print(f"{path.stem}: smoke run ...", flush=True)
            entry = run_notebook(path, "smoke", env, args.timeout)
            write(path, "smoke", entry)
            print(f"{path.stem}: smoke {'ok' if entry['ok'] else 'FAILED'} "
                  f"({entry['seconds']} s)", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(smoke, notebooks))
    if "budget" in args.parts:
        for path in notebooks:
            print(f"{path.stem}: {budget} budget, {max_steps} steps per loop ...", flush=True)
            summary = {"max_steps": max_steps,
                       **timing_run(path, budget, env, max_steps, args.timeout, slowdown)}
            write(path, "budget", summary)
            t4 = summary["projected_t4_seconds"]
            print(f"{path.stem}: {budget} {'ok' if summary['ok'] else 'FAILED'}, projected "
                  f"{summary['projected_seconds'] / 60:.1f} min here"
                  + (f", {t4 / 60:.0f} min on a T4" if t4 else ""), flush=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
