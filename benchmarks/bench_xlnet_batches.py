"""Building XLNet's permutation batches: the whole batch at once against one sequence at a time.

    python benchmarks/bench_xlnet_batches.py               # chapter 6's gpu budget: 32 x 2 x 128
    python benchmarks/bench_xlnet_batches.py --batch 8 --seg-len 64

A pretraining batch of chapter 6 is ``--batch`` windows of two segments of ``--seg-len``
tokens, each segment with its own factorization order and ``seg_len // 6`` targets
(``ctxlib.xlnet.pretraining_batch``). The baseline builds each sequence's mask, target mapping
and labels on its own and stacks them (what ``permutation_batch`` did until the batch was
built at once); ctxlib's draws
the same orders and builds the rest for the batch at once. Both run in alternating rounds in
one process, their outputs are checked equal, and the script prints milliseconds per batch and
the speed ratio (baseline / ctxlib: above 1 means ctxlib is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ctxlib.batches import lm_windows
from ctxlib.xlnet import factorization_order, permutation_batch


def mask_of_one_order(order: torch.Tensor, num_predict: int) -> torch.Tensor:
    """The baseline's mask: ``perm_mask_from_order`` as it was written for one order (T,)."""
    T = len(order)
    if sorted(order.tolist()) != list(range(T)):
        raise ValueError("not a permutation")
    targets = order[T - num_predict:]
    is_target = torch.zeros(T, dtype=torch.bool)
    is_target[targets] = True
    rank = torch.full((T,), -1)
    rank[targets] = torch.arange(num_predict)
    own_rank = torch.where(is_target, rank, rank + 1)
    return ((own_rank[:, None] <= rank[None, :]) & is_target[None, :]).float()


def one_sequence_at_a_time(input_ids, num_predict, generator):
    """The baseline: a mask, a mapping and labels per sequence, then stacked."""
    B, T = input_ids.shape
    masks, mappings, labels = [], [], []
    for b in range(B):
        order = factorization_order(T, num_predict, generator)
        targets = order[T - num_predict:]
        masks.append(mask_of_one_order(order, num_predict))
        mappings.append(F.one_hot(targets, T).float())
        labels.append(input_ids[b, targets])
    return torch.stack(masks), torch.stack(mappings), torch.stack(labels)


def build(permute, stream, args, seed):
    """One pretraining batch: windows of two segments, each segment permuted."""
    generator = torch.Generator().manual_seed(seed)
    windows, _ = lm_windows(stream, args.batch, 2 * args.seg_len, generator)
    return [permute(segment, args.seg_len // 6, generator)
            for segment in windows.split(args.seg_len, dim=1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seg-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batches", type=int, default=10, help="batches per round and side")
    args = parser.parse_args()
    torch.set_num_threads(1)  # batches are built on one CPU thread, beside the training
    stream = torch.randint(0, 4000, (200_000,), generator=torch.Generator().manual_seed(0))

    for left, right in zip(build(one_sequence_at_a_time, stream, args, 0),
                           build(permutation_batch, stream, args, 0)):
        for a, b in zip(left, right):
            assert torch.equal(a, b), "the two ways must build the same batch"

    times = {"one sequence at a time": [], "ctxlib (the batch at once)": []}
    ways = dict(zip(times, (one_sequence_at_a_time, permutation_batch)))
    for round_ in range(args.rounds):
        order = list(times) if round_ % 2 == 0 else list(reversed(times))
        for name in order:
            start = time.perf_counter()
            for seed in range(args.batches):
                build(ways[name], stream, args, seed)
            times[name].append((time.perf_counter() - start) / args.batches)

    print(f"{args.batch} windows of 2 x {args.seg_len} tokens, {args.seg_len // 6} targets per "
          f"segment; median of {args.rounds} rounds of {args.batches} batches (1 thread)")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"  {name:<28} {1000 * seconds:7.2f} ms per batch")
    baseline, ours = medians.values()
    print(f"ratio baseline / ctxlib: {baseline / ours:.1f}")


if __name__ == "__main__":
    main()
