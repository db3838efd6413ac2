"""ctxlib's GPT against nanoGPT's, computing the same function, in one process on the CPU.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT      # once; not part of ctxlib
    python benchmarks/bench_nanogpt.py --nanogpt /tmp/nanoGPT/model.py
    python benchmarks/bench_nanogpt.py --nanogpt /tmp/nanoGPT/model.py --rounds 20

nanoGPT's ``model.py`` (Karpathy, MIT licence) is the usual yardstick for a readable GPT. The
script loads it from the path given (nothing of it is copied here) and builds both models at
nanoGPT's CPU configuration (4 layers, 4 heads, width 128, context 64, batch 12, Tiny
Shakespeare's 65 characters, no dropout). nanoGPT uses the exact GELU; GPT-2, Hugging Face's
``GPT2LMHeadModel`` and ctxlib use its tanh approximation, so nanoGPT's MLPs get the tanh
GELU here. The script then copies ctxlib's weights into nanoGPT's model and stops unless the
two give the same logits and loss: the same function, or no comparison.

Each model trains with its own optimizer set-up (ctxlib's ``make_optimizer``, nanoGPT's
``configure_optimizers``: AdamW, weight decay on matrices only) on the same batches, in
alternating rounds, so that neither always runs on a warmer or a busier machine. It prints the
median seconds per step (forward, backward, optimizer step) of each and the ratio
nanoGPT / ctxlib: above 1, ctxlib trains faster.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch
from timing import time_steps  # benchmarks/timing.py, beside this script
from torch import nn

from ctxlib.gpt import GPT, GPTConfig
from ctxlib.train import TrainConfig, make_optimizer

# nanoGPT's CPU example (its README): 4 layers, 4 heads, width 128, context 64, batch 12.
SIZES = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
BATCH, VOCAB = 12, 65  # Tiny Shakespeare's characters
LR, BETAS, WEIGHT_DECAY = 1e-3, (0.9, 0.99), 0.1  # nanoGPT's Shakespeare settings


def load_nanogpt(path: Path):
    """nanoGPT's model.py, imported from ``path`` as a module."""
    if not path.is_file():
        raise SystemExit(f"no file {path}: clone https://github.com/karpathy/nanoGPT and pass "
                         "--nanogpt <clone>/model.py")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_with_ctxlib_weights(nanogpt, ours: GPT) -> nn.Module:
    """nanoGPT's GPT at ``ours``'s sizes, with the tanh GELU and ``ours``'s weights."""
    config = nanogpt.GPTConfig(vocab_size=VOCAB, dropout=0.0, bias=True, **SIZES)
    theirs = nanogpt.GPT(config)
    for block in theirs.transformer.h:
        block.mlp.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU, as ctxlib's
    # Same names but for nanoGPT's `transformer.` prefix; the output matrix is tied to wte.
    state = {("lm_head.weight" if k == "lm_head.weight" else f"transformer.{k}"): v
             for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    leftover = [k for k in missing if not k.endswith(".attn.bias")]  # its unused causal mask
    if leftover or unexpected:
        raise SystemExit(f"weights do not line up: missing {leftover}, unexpected {unexpected}")
    return theirs


def same_function(ours: GPT, theirs: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The largest difference between the two models' logits, and stop if the losses differ."""
    ours.eval(), theirs.eval()
    with torch.no_grad():
        out = ours(x, targets=y)
        our_logits, our_loss = out.logits, out.loss
        their_logits, their_loss = theirs(x, y)
    ours.train(), theirs.train()
    difference = (our_logits - their_logits).abs().max().item()
    if difference > 1e-4 or abs(our_loss.item() - their_loss.item()) > 1e-5:
        raise SystemExit(f"not the same function: logits differ by {difference:.2e}")
    return difference


def steps(model, optimizer, batches, call) -> list[float]:
    """Seconds of each training step (forward, backward, AdamW) over ``batches``."""
    return time_steps(batches, lambda batch: call(model, *batch), optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nanogpt", type=Path, required=True, help="path to nanoGPT's model.py")
    parser.add_argument("--steps", type=int, default=25, help="steps of each model per round")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()

    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=VOCAB, dropout=0.0, **SIZES))
    theirs = nanogpt_with_ctxlib_weights(load_nanogpt(args.nanogpt), ours)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        ids = torch.randint(0, VOCAB, (BATCH, SIZES["block_size"] + 1), generator=g)
        batches.append((ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))
    difference = same_function(ours, theirs, *batches[0])

    our_optimizer = make_optimizer(ours, TrainConfig(steps=1, lr=LR, betas=BETAS,
                                                     weight_decay=WEIGHT_DECAY))
    their_optimizer = theirs.configure_optimizers(WEIGHT_DECAY, LR, BETAS, "cpu")

    def ctxlib_step(model, x, y):
        return model(x, targets=y).loss

    def nanogpt_step(model, x, y):
        return model(x, y)[1]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; nanoGPT's CPU "
          f"configuration ({ours.num_parameters():,} parameters), batch {BATCH}; logits equal "
          f"to {difference:.1e}")
    steps(ours, our_optimizer, batches[:5], ctxlib_step)  # warm up both
    steps(theirs, their_optimizer, batches[:5], nanogpt_step)
    ratios, our_all, their_all = [], [], []
    for round_ in range(args.rounds):
        # Alternate which goes first, so that neither always follows the other.
        order = [(ours, our_optimizer, ctxlib_step, our_all),
                 (theirs, their_optimizer, nanogpt_step, their_all)]
        for model, optimizer, call, times in order[:: 1 if round_ % 2 == 0 else -1]:
            times.append(statistics.median(steps(model, optimizer, batches, call)))
        ratios.append(their_all[-1] / our_all[-1])
    ratio = statistics.median(their_all) / statistics.median(our_all)
    print(f"ctxlib  {statistics.median(our_all) * 1000:7.2f} ms/step (median of {args.rounds} "
          f"rounds of {args.steps} steps)")
    print(f"nanoGPT {statistics.median(their_all) * 1000:7.2f} ms/step")
    print(f"speed ratio nanoGPT/ctxlib: {ratio:.3f} (rounds: {min(ratios):.3f} to "
          f"{max(ratios):.3f}; above 1: ctxlib is faster)")


if __name__ == "__main__":
    main()
