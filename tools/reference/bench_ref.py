#!/usr/bin/env python3
"""PyTorch side of bench/compare.sh: the same workloads as `qkv bench`, on the reference GPT
(gpt_ref.py) with random weights. Prints one JSON object. Median of --steps after warm-up.

  bench_ref.py train --preset gpt2 --batch-size 4 --block-size 256
  bench_ref.py generate --preset gpt2 --prompt-tokens 128 --new-tokens 32
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_ref import GPT  # noqa: E402

PRESETS = {"gpt2": (12, 12, 768, 1024, 50257, True), "baby": (4, 4, 128, 64, 65, False),
           "shakespeare-char": (6, 6, 384, 256, 65, False)}


def make(preset):
    L, H, C, T, V, bias = PRESETS[preset]
    m = GPT({"n_layer": L, "n_head": H, "n_embd": C, "n_positions": T, "vocab_size": V,
             "layer_norm_epsilon": 1e-5, "bias": bias})
    with torch.no_grad():
        for n in m.names:
            p = m.P(n)
            p.copy_(torch.ones_like(p) if "ln_" in n and n.endswith("weight") else 0.02 * torch.randn_like(p))
    return m


def forward_cached(m, idx, cache):
    """Next-token logits for new tokens `idx`, continuing the sequence held in `cache`."""
    return m(idx, cache=cache, last_only=True)[0]


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["train", "generate"])
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = make(a.preset)
    V = PRESETS[a.preset][4]
    if a.what == "train":
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        x = torch.randint(0, V, (a.batch_size, a.block_size))
        y = torch.randint(0, V, (a.batch_size, a.block_size))
        times = []
        for s in range(a.steps + 2):
            t0 = time.perf_counter()
            _, loss = m(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if s >= 2:
                times.append(time.perf_counter() - t0)
        print(json.dumps({"tokens_per_sec": a.batch_size * a.block_size / median(times)}))
    else:
        prompt = torch.randint(0, V, (1, a.prompt_tokens))
        pre, dec = [], []
        with torch.no_grad():
            for r in range(a.steps + 1):
                cache = [None] * PRESETS[a.preset][0]
                t0 = time.perf_counter()
                logits = forward_cached(m, prompt, cache)
                t1 = time.perf_counter()
                nxt = logits[:, -1].argmax(-1, keepdim=True)
                for _ in range(a.new_tokens):
                    nxt = forward_cached(m, nxt, cache)[:, -1].argmax(-1, keepdim=True)
                t2 = time.perf_counter()
                if r >= 1:
                    pre.append(t1 - t0)
                    dec.append((t2 - t1) / a.new_tokens)
        print(json.dumps({"prefill_tokens_per_sec": a.prompt_tokens / median(pre),
                          "decode_tokens_per_sec": 1.0 / median(dec)}))


if __name__ == "__main__":
    main()
