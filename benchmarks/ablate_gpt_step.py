"""Where does a CPU training step of ctxlib's GPT go? An ablation, in one process.

    python benchmarks/ablate_gpt_step.py            # nanoGPT's CPU configuration
    python benchmarks/ablate_gpt_step.py --rounds 5

nanoGPT's ``model.py`` and ``ctxlib.gpt`` compute the same GPT-2 block with the same fused
attention, but differ in small things. This script switches each of ctxlib's off in turn,
on the same batches, and prints the training speed of each variant against the model as it
is (a ratio above 1: that difference costs time):

- ``no input checks``: ``GPT`` checks every batch (shape, context length, token ids inside
  the vocabulary, targets) so that bad input fails with a clear message; nanoGPT asserts
  the length only;
- ``exact GELU``: GPT-2 (and Hugging Face's ``GPT2LMHeadModel``, the reference our tests
  match) uses the tanh approximation of GELU; nanoGPT uses the exact one.

Variants are timed in turns (as is, variant, as is, ...) and the median step is compared.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from ctxlib import gpt as gpt_lib
from ctxlib.gpt import GPT, GPTConfig

# nanoGPT's CPU example (README): 4 layers, 4 heads, width 128, context 64, batch 12.
CONFIG = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0}
BATCH, VOCAB = 12, 65  # Tiny Shakespeare's characters


@contextlib.contextmanager
def no_input_checks():
    saved_input, saved_targets = GPT._check_input, gpt_lib.check_targets
    GPT._check_input = lambda self, ids, past_length: None
    gpt_lib.check_targets = lambda *args, **kwargs: None
    try:
        yield
    finally:
        GPT._check_input, gpt_lib.check_targets = saved_input, saved_targets


@contextlib.contextmanager
def exact_gelu():
    saved = gpt_lib.MLP.forward

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))

    gpt_lib.MLP.forward = forward
    try:
        yield
    finally:
        gpt_lib.MLP.forward = saved


VARIANTS = {"no input checks": no_input_checks, "exact GELU": exact_gelu}


def step_seconds(model, optimizer, batches) -> list[float]:
    seconds = []
    for x, y in batches:
        start = time.perf_counter()
        loss = model(x, targets=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="steps per turn")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **CONFIG))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        ids = torch.randint(0, VOCAB, (BATCH, CONFIG["block_size"] + 1), generator=g)
        batches.append((ids[:, :-1], ids[:, 1:]))
    step_seconds(model, optimizer, batches[:5])  # warm up
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; nanoGPT's CPU "
          f"configuration, {model.num_parameters():,} parameters")
    base: list[float] = []
    for name, variant in VARIANTS.items():
        timed: list[float] = []
        for _ in range(args.rounds):
            base += step_seconds(model, optimizer, batches)
            with variant():
                timed += step_seconds(model, optimizer, batches)
        print(f"  {name:<16} {median(timed) * 1000:7.2f} ms/step; as is "
              f"{median(base) * 1000:7.2f} ms/step; speed ratio {median(base) / median(timed):.3f}")
    tokens = BATCH * CONFIG["block_size"]
    print(f"as is: {tokens / median(base):,.0f} tokens/s")


if __name__ == "__main__":
    main()
