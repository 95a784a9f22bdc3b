#!/usr/bin/env python3
"""PyTorch reference for qkv's encoder (the BERT-style, bidirectional stack), built from
PyTorch's own nn.TransformerEncoderLayer rather than written out by hand, so the test compares
against an implementation qkv shares nothing with.

`parity` builds a random encoder: token + position embeddings, L x nn.TransformerEncoderLayer
(norm_first as configured, dropout 0, key_padding_mask from per-sequence lengths), a final
LayerNorm for pre-norm stacks, and either the tied masked-LM head or a classifier over the mean
of each sequence's own tokens. It writes the weights as a qkv model directory (Hugging Face GPT-2
names: c_attn = in_proj_weight^T, ...), the padded inputs, and the expected logits, loss and
every gradient.

Run with Debian's python3-torch:  /usr/bin/python3 tools/reference/encoder_ref.py parity --out DIR
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from gpt_ref import GPT  # noqa: E402


def sinusoid(T, C):
    return GPT.sinusoid(0, T, C)  # the same table as the GPT reference


def parity(a):
    torch.manual_seed(a.seed)
    C, L, NH, V, Tmax = a.n_embd, a.n_layer, a.n_head, a.vocab_size, a.block_size
    post = a.norm_position == "post"
    act = F.relu if a.activation == "relu" else (lambda x: F.gelu(x, approximate="tanh"))
    layers = torch.nn.ModuleList([
        torch.nn.TransformerEncoderLayer(C, NH, dim_feedforward=4 * C, dropout=0.0, activation=act,
                                         layer_norm_eps=1e-5, batch_first=True, norm_first=not post)
        for _ in range(L)])
    wte = torch.nn.Parameter(0.02 * torch.randn(V, C))
    wpe = torch.nn.Parameter(0.02 * torch.randn(Tmax, C)) if a.pos == "learned" else None
    lnf = torch.nn.LayerNorm(C, eps=1e-5) if not post else None
    K = a.num_labels
    cls = torch.nn.Linear(C, K) if a.task == "classify" else None
    with torch.no_grad():  # everything random, norms near 1
        for mod in [layers] + ([lnf] if lnf else []) + ([cls] if cls else []):
            for n, p in mod.named_parameters():
                if "norm" in n or (mod is lnf and n == "weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p) if n.endswith("weight") else 0.02 * torch.randn_like(p))
                else:
                    p.copy_(0.05 * torch.randn_like(p))

    # Our names (HF GPT-2 layout) <- the PyTorch modules.
    def named():
        out = {"wte.weight": wte}
        if wpe is not None:
            out["wpe.weight"] = wpe
        for i, l in enumerate(layers):
            h = f"h.{i}."
            out[h + "ln_1.weight"], out[h + "ln_1.bias"] = l.norm1.weight, l.norm1.bias
            out[h + "attn.c_attn.weight"] = l.self_attn.in_proj_weight  # (3C, C): transposed below
            out[h + "attn.c_attn.bias"] = l.self_attn.in_proj_bias
            out[h + "attn.c_proj.weight"] = l.self_attn.out_proj.weight
            out[h + "attn.c_proj.bias"] = l.self_attn.out_proj.bias
            out[h + "ln_2.weight"], out[h + "ln_2.bias"] = l.norm2.weight, l.norm2.bias
            out[h + "mlp.c_fc.weight"], out[h + "mlp.c_fc.bias"] = l.linear1.weight, l.linear1.bias
            out[h + "mlp.c_proj.weight"], out[h + "mlp.c_proj.bias"] = l.linear2.weight, l.linear2.bias
        if lnf is not None:
            out["ln_f.weight"], out["ln_f.bias"] = lnf.weight, lnf.bias
        if cls is not None:
            out["classifier.weight"], out["classifier.bias"] = cls.weight, cls.bias
        return out

    def ours(name, t):
        """nn.Linear stores (out, in); the HF Conv1D layout is (in, out)."""
        return t.t().contiguous() if t.dim() == 2 and name not in ("wte.weight", "wpe.weight") else t

    cfg = {"model_type": "gpt2", "arch": "encoder", "n_layer": L, "n_head": NH, "n_embd": C,
           "n_positions": Tmax, "vocab_size": V, "layer_norm_epsilon": 1e-5, "bias": True,
           "activation_function": "relu" if a.activation == "relu" else "gelu_new"}
    if post:
        cfg["norm_position"] = "post"
    if a.pos != "learned":
        cfg["pos"] = a.pos
    if cls is not None:
        cfg["id2label"] = {str(i): f"class{i}" for i in range(K)}
    os.makedirs(os.path.join(a.out, "model"), exist_ok=True)
    with open(os.path.join(a.out, "model", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    safetensors_io.save(os.path.join(a.out, "model", "model.safetensors"),
                        {"transformer." + n: ours(n, t) for n, t in named().items()}, {"format": "pt"})

    B, T = a.batch, a.seq
    lens = torch.tensor([T] + [max(1, T - 3 - 5 * b) for b in range(1, B)], dtype=torch.int32)
    x = torch.randint(0, V, (B, T), dtype=torch.int32)
    pad = torch.arange(T).view(1, T) >= lens.view(B, 1).long()  # True = padding
    y = torch.randint(0, V, (B, T), dtype=torch.int32)
    y[torch.rand(B, T) < 0.5] = -1  # an MLM-like subset of counted targets
    y[pad] = -1
    labels = torch.randint(0, max(K, 1), (B,), dtype=torch.int32)

    h = wte[x.long()] + (wpe[:T] if wpe is not None else sinusoid(T, C))
    for l in layers:
        h = l(h, src_key_padding_mask=pad)
    if lnf is not None:
        h = lnf(h)
    out = {}
    if cls is None:
        logits = h @ wte.t()
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1).long(), ignore_index=-1)
        out["logits"] = logits.detach()
    else:
        keep = (~pad).float().unsqueeze(-1)
        pooled = (h * keep).sum(1) / lens.view(B, 1).float()
        logits = cls(pooled)
        loss = F.cross_entropy(logits, labels.long())
        out["class_logits"] = logits.detach()
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    for n, t in named().items():
        out["grad." + n] = ours(n, t.grad.detach())
    safetensors_io.save(os.path.join(a.out, "inputs.safetensors"),
                        {"x": x, "y": y, "lens": lens, "labels": labels})
    safetensors_io.save(os.path.join(a.out, "expected.safetensors"), out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parity", help="random encoder + padded batch: logits, loss, grads")
    p.add_argument("--out", required=True)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=32)
    p.add_argument("--block-size", type=int, default=24)
    p.add_argument("--vocab-size", type=int, default=37)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--seq", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norm-position", default="pre", choices=["pre", "post"])
    p.add_argument("--activation", default="gelu", choices=["gelu", "relu"])
    p.add_argument("--pos", default="learned", choices=["learned", "sinusoidal"])
    p.add_argument("--task", default="mlm", choices=["mlm", "classify"])
    p.add_argument("--num-labels", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    parity(a)


if __name__ == "__main__":
    main()
