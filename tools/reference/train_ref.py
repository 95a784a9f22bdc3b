#!/usr/bin/env python3
"""PyTorch reference trainer: nanoGPT's shakespeare_char recipe on the same GPT as qkv.

Character vocabulary (sorted unique characters), first 90% train / last 10% val, random windows
(torch RNG), AdamW (decay on 2-D weights), warmup + cosine LR, global-norm clipping. Prints one
JSON line: {"val_loss", "seconds", "tokens_per_sec"}. Used by bench/baby_vs_pytorch.sh.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_ref import GPT, lr_at  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--eval-iters", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    text = open(args.data, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    T, B = args.block_size, args.batch_size

    def batch(split):
        d = train if split == "train" else val
        ix = torch.randint(len(d) - T, (B,))
        return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + 1 + T] for i in ix])

    cfg = {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd, "n_positions": T,
           "vocab_size": len(chars), "layer_norm_epsilon": 1e-5, "bias": False}
    model = GPT(cfg)
    with torch.no_grad():  # GPT-2 init
        for name in model.names:
            p = model.P(name)
            if "ln_" in name:
                p.fill_(1.0)
            elif name.endswith("c_proj.weight"):
                p.normal_(0.0, 0.02 / math.sqrt(2 * args.n_layer))
            else:
                p.normal_(0.0, 0.02)
    decay = [model.P(n) for n in model.names if model.P(n).dim() >= 2]
    nodecay = [model.P(n) for n in model.names if model.P(n).dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, args.beta2))

    @torch.no_grad()
    def evaluate():
        return sum(model(*batch("val"))[1].item() for _ in range(args.eval_iters)) / args.eval_iters

    t0 = time.time()
    val_loss = None
    for it in range(args.max_iters + 1):
        if it % args.eval_interval == 0 or it == args.max_iters:
            val_loss = evaluate()
        if it == args.max_iters:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(it, args.lr, args.min_lr, args.warmup, args.max_iters)
        x, y = batch("train")
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    secs = time.time() - t0
    print(json.dumps({"val_loss": val_loss, "seconds": secs,
                      "tokens_per_sec": args.max_iters * B * T / secs}))


if __name__ == "__main__":
    main()
