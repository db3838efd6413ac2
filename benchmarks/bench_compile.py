"""Does torch.compile pay for the cpu budgets? Eager against compiled, in one process.

    python benchmarks/bench_compile.py                # GPT and BERT at their cpu-budget sizes
    python benchmarks/bench_compile.py --models gpt --steps 30

For each model, at the sizes of its chapter's cpu budget (``scripts/pretrain.py``'s recipes),
it times training steps (forward, backward, AdamW) of the eager model and of
``torch.compile(model)`` on the same random batches, alternating the two so that neither
always runs on a cold or a warm machine. It prints seconds per step, the compile time (the
first compiled steps, which trace and build the kernels), the speed ratio, and what matters
for a notebook: the whole budget's pretraining time, compile time included, each way. Ratios,
not absolute times, carry across machines.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from pretrain import RECIPES
from timing import time_steps  # benchmarks/timing.py, beside this script

from ctxlib.bert import BertConfig, BertForPreTraining
from ctxlib.gpt import GPT, GPTConfig

VOCAB = 4000  # the cpu budgets' BPE vocabulary


def gpt_case(generator: torch.Generator):
    cfg = RECIPES["gpt"].budgets["cpu"]
    model = GPT(GPTConfig(vocab_size=VOCAB, **cfg["model"]))
    T, B = cfg["model"]["block_size"], cfg["batch"]

    def batch():
        ids = torch.randint(0, VOCAB, (B, T + 1), generator=generator)
        return ids[:, :-1], ids[:, 1:]

    def loss(m, b):
        return m(b[0], targets=b[1]).loss

    return model, batch, loss, cfg["train"]["steps"]


def bert_case(generator: torch.Generator):
    cfg = RECIPES["bert"].budgets["cpu"]
    model = BertForPreTraining(BertConfig(vocab_size=VOCAB, **cfg["model"]))
    T, B = cfg["model"]["max_position"], cfg["batch"]

    def batch():
        ids = torch.randint(5, VOCAB, (B, T), generator=generator)
        labels = torch.where(torch.rand(B, T, generator=generator) < 0.15, ids, -100)
        segments = (torch.arange(T) >= T // 2).long().expand(B, T)
        nsp = torch.randint(0, 2, (B,), generator=generator)
        return ids, segments, torch.ones(B, T, dtype=torch.long), labels, nsp

    def loss(m, b):
        return m(b[0], b[1], b[2], mlm_labels=b[3], nsp_labels=b[4]).loss

    return model, batch, loss, cfg["train"]["steps"]


CASES = {"gpt": gpt_case, "bert": bert_case}


def timed(model, step_model, loss_fn, batches) -> list[float]:
    """Seconds of each training step of ``step_model`` (``model``, eager or compiled) over
    ``batches``, with a fresh AdamW on ``model``'s weights."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return time_steps(batches, lambda batch: loss_fn(step_model, batch), optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="compiled steps counted as compile")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name in args.models:
        torch.manual_seed(0)
        model, batch, loss_fn, budget_steps = CASES[name](torch.Generator().manual_seed(0))
        batches = [batch() for _ in range(args.steps)]
        compiled = torch.compile(model)
        start = time.perf_counter()
        timed(model, compiled, loss_fn, batches[: args.warmup])  # traces, builds kernels
        compile_s = time.perf_counter() - start
        eager, fast = [], []
        for _ in range(2):  # alternate: eager, compiled, eager, compiled
            eager += timed(model, model, loss_fn, batches)
            fast += timed(model, compiled, loss_fn, batches)
        eager_s, fast_s = sorted(eager)[len(eager) // 2], sorted(fast)[len(fast) // 2]
        print(f"\n{name}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"cpu budget {budget_steps:,} steps")
        print(f"  eager    {eager_s * 1000:8.1f} ms/step (median)")
        print(f"  compiled {fast_s * 1000:8.1f} ms/step (median), compile {compile_s:.1f} s "
              f"(first {args.warmup} steps)")
        print(f"  speed ratio compiled / eager: {eager_s / fast_s:.2f}")
        eager_total, fast_total = budget_steps * eager_s, compile_s + budget_steps * fast_s
        print(f"  the budget's pretraining: eager {eager_total / 60:.1f} min, compiled "
              f"{fast_total / 60:.1f} min with compile time"
              + (" -> compile pays" if fast_total < eager_total else " -> eager is faster"))


if __name__ == "__main__":
    main()
