#!/usr/bin/env python3
"""PyTorch reference for qkv's attention rules at kernel level (used by the tests).

Writes random q, k, v (B, NH, T, HS), key lengths and an output gradient, then for each rule the
output and the gradients of sum(out * dout) with respect to q, k, v, computed the straightforward
way: the whole score matrix, an explicit boolean mask built from the rule's definition, softmax
(or, for linear attention, explicit elu+1 feature weights). Causal and bidirectional, with key
padding (padded keys are never seen; a query that sees no key outputs zeros).

Run with Debian's python3-torch:  /usr/bin/python3 tools/reference/attention_ref.py --out DIR
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

RULES = {
    "dense": {},
    "sliding": {"window": 9},
    "block_sparse": {"block": 8, "local_blocks": 1, "global": 3},
    "linear": {},
}


def visible(kind, params, T, lens, causal):
    """(B, T, T) boolean: query p sees key j."""
    p = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    m = torch.ones(T, T, dtype=torch.bool)
    if causal:
        m &= j <= p
    if kind == "sliding":
        W = params["window"]
        m &= (p - j < W) if causal else (2 * (p - j).abs() <= W)
    elif kind == "block_sparse":
        S, R, G = params["block"], params["local_blocks"], params["global"]
        m &= (p < G) | (j < G) | ((p // S - j // S).abs() <= R)
    B = lens.shape[0]
    pad = torch.arange(T).view(1, 1, T) < lens.view(B, 1, 1)
    return m.view(1, T, T) & pad


def attend(kind, q, k, v, mask):
    mask = mask.unsqueeze(1)  # (B, 1, T, T)
    if kind == "linear":
        w = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1) * mask
        den = w.sum(-1, keepdim=True)
        return torch.where(den > 0, (w @ v) / den.clamp_min(1e-30), torch.zeros_like(q))
    s = (q @ k.transpose(-2, -1)) / (q.shape[-1] ** 0.5)
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.nan_to_num(p, nan=0.0)  # rows with no visible key
    return p @ v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    B, NH, T, HS = 3, 2, 70, 16
    q = torch.randn(B, NH, T, HS, dtype=torch.float64)
    k = torch.randn(B, NH, T, HS, dtype=torch.float64)
    v = torch.randn(B, NH, T, HS, dtype=torch.float64)
    dout = torch.randn(B, NH, T, HS, dtype=torch.float64)
    lens = torch.tensor([T, 41, 0], dtype=torch.int32)
    out = {"q": q.float(), "k": k.float(), "v": v.float(), "dout": dout.float(), "lens": lens}
    meta = {}
    for kind, params in RULES.items():
        for causal in (True, False):
            name = f"{kind}.{'causal' if causal else 'bidirectional'}"
            qq, kk, vv = (t.float().double().clone().requires_grad_(True) for t in (q, k, v))
            o = attend(kind, qq, kk, vv, visible(kind, params, T, lens, causal))
            (o * dout.float().double()).sum().backward()
            out[name + ".out"] = o.detach().float()
            out[name + ".dq"] = qq.grad.float()
            out[name + ".dk"] = kk.grad.float()
            out[name + ".dv"] = vv.grad.float()
            meta[kind] = ",".join(f"{a}={b}" for a, b in params.items())
    os.makedirs(args.out, exist_ok=True)
    safetensors_io.save(os.path.join(args.out, "attention.safetensors"), out, meta)


if __name__ == "__main__":
    main()
