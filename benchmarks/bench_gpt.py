"""Training and generation speed of ctxlib's GPT against a plain eager reference, in one process.

    python benchmarks/bench_gpt.py                 # CPU-sized model
    python benchmarks/bench_gpt.py --preset char   # nanoGPT's character config (6 x 6 x 384, T=256)

The reference is Hugging Face's GPT2LMHeadModel at the same configuration with its eager
(hand-written) attention. Both train for the same steps on the same batches (Tiny Shakespeare
characters); the script prints tokens per second of each and their ratio. On CUDA it trains in
bf16 autocast and, with --compile, compiles our model. It also times greedy generation with
and without the key/value cache. Ratios, not absolute times, are what carry across machines.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from ctxlib.data import load_tinyshakespeare
from ctxlib.gpt import GPT
from ctxlib.tokenizers import CharTokenizer

PRESETS = {
    # name: (n_layer, n_head, n_embd, block_size, batch_size)
    "cpu": (4, 4, 128, 128, 16),
    "char": (6, 6, 384, 256, 64),
}


def time_training(model, step_fn, batches, warmup: int, device) -> float:
    """Seconds per step over ``batches`` after ``warmup`` untimed steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = step_fn(model, x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (len(batches) - warmup)


def time_generation(model: GPT, prompt, new_tokens: int, use_cache: bool) -> float:
    start = time.perf_counter()
    model.generate(prompt, new_tokens, temperature=0, use_cache=use_cache)
    if prompt.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=PRESETS, default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile our model (CUDA)")
    args = parser.parse_args()

    transformers.logging.set_verbosity_error()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_layer, n_head, n_embd, block_size, batch_size = PRESETS[args.preset]
    text = load_tinyshakespeare()
    tokenizer = CharTokenizer.train(text)
    stream = torch.tensor(tokenizer.encode(text))
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps + args.warmup):
        starts = torch.randint(0, len(stream) - block_size - 1, (batch_size,), generator=g)
        x = torch.stack([stream[s : s + block_size] for s in starts]).to(device)
        y = torch.stack([stream[s + 1 : s + block_size + 1] for s in starts]).to(device)
        batches.append((x, y))

    torch.manual_seed(0)
    hf_config = GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    hf_config._attn_implementation = "eager"
    reference = GPT2LMHeadModel(hf_config).to(device).train()
    ours = GPT.from_huggingface(reference).to(device).train()
    our_step_model = torch.compile(ours) if args.compile else ours

    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def our_step(model, x, y):
        with amp:
            loss = model(x, targets=y).loss
        return loss

    def reference_step(model, x, y):
        with amp:
            logits = model(x).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    # Alternate the order so that neither model always runs on a cold (or warm) machine.
    ref_s = time_training(reference, reference_step, batches, args.warmup, device)
    our_s = time_training(our_step_model, our_step, batches, args.warmup, device)
    ref_s = min(ref_s, time_training(reference, reference_step, batches, args.warmup, device))
    our_s = min(our_s, time_training(our_step_model, our_step, batches, args.warmup, device))
    tokens = batch_size * block_size
    print(f"device: {device}, preset {args.preset}: {n_layer} layers, {n_head} heads, width "
          f"{n_embd}, context {block_size}, batch {batch_size}, {ours.num_parameters():,} params")
    print(f"training  reference (HF eager): {tokens / ref_s:12,.0f} tokens/s")
    print(f"training  ctxlib GPT          : {tokens / our_s:12,.0f} tokens/s")
    print(f"training  speed ratio ctxlib / reference: {ref_s / our_s:.2f}")

    ours.eval()
    prompt = batches[0][0][:1, :8]
    new_tokens = block_size - 8
    time_generation(ours, prompt, 8, use_cache=True)  # warm up
    uncached = time_generation(ours, prompt, new_tokens, use_cache=False)
    cached = time_generation(ours, prompt, new_tokens, use_cache=True)
    print(f"generation of {new_tokens} tokens: {uncached:.3f} s without cache, "
          f"{cached:.3f} s with cache, speed-up {uncached / cached:.2f}x")


if __name__ == "__main__":
    main()
