#!/usr/bin/env python3
"""PyTorch reference for qkv's encoder-decoder, built from PyTorch's own
nn.TransformerEncoderLayer / nn.TransformerDecoderLayer (norm_first as configured, dropout 0),
with padding on both sides (src_key_padding_mask, tgt_key_padding_mask,
memory_key_padding_mask) and a causal target mask.

`parity` builds a random model (one embedding shared by source, target and output, scaled by
sqrt(C) at the input as the paper does; sinusoidal or learned positions), writes it as a qkv
model directory, a padded batch, and the expected logits, label-smoothed loss and every gradient.

Run with Debian's python3-torch:  /usr/bin/python3 tools/reference/seq2seq_ref.py parity --out DIR
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
    C, NH, V, Tmax = a.n_embd, a.n_head, a.vocab_size, a.block_size
    post = a.norm_position == "post"
    act = F.relu if a.activation == "relu" else (lambda x: F.gelu(x, approximate="tanh"))
    enc = torch.nn.ModuleList([torch.nn.TransformerEncoderLayer(
        C, NH, 4 * C, 0.0, act, 1e-5, batch_first=True, norm_first=not post) for _ in range(a.n_layer)])
    dec = torch.nn.ModuleList([torch.nn.TransformerDecoderLayer(
        C, NH, 4 * C, 0.0, act, 1e-5, batch_first=True, norm_first=not post) for _ in range(a.n_dec_layer)])
    shared = torch.nn.Parameter(0.05 * torch.randn(V, C))
    learned = a.pos == "learned"
    enc_wpe = torch.nn.Parameter(0.05 * torch.randn(Tmax, C)) if learned else None
    dec_wpe = torch.nn.Parameter(0.05 * torch.randn(Tmax, C)) if learned else None
    enc_ln = torch.nn.LayerNorm(C, eps=1e-5) if not post else None
    dec_ln = torch.nn.LayerNorm(C, eps=1e-5) if not post else None
    with torch.no_grad():
        for mod in [enc, dec] + [m for m in (enc_ln, dec_ln) if m is not None]:
            for n, p in mod.named_parameters():
                is_norm = "norm" in n or isinstance(mod, torch.nn.LayerNorm)
                if is_norm and n.endswith("weight"):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                elif is_norm:
                    p.copy_(0.05 * torch.randn_like(p))
                else:
                    p.copy_(0.05 * torch.randn_like(p))

    def named():
        out = {"shared.weight": shared}
        if learned:
            out["encoder.wpe.weight"], out["decoder.wpe.weight"] = enc_wpe, dec_wpe
        for i, l in enumerate(enc):
            h = f"encoder.h.{i}."
            out[h + "ln_1.weight"], out[h + "ln_1.bias"] = l.norm1.weight, l.norm1.bias
            out[h + "attn.c_attn.weight"], out[h + "attn.c_attn.bias"] = l.self_attn.in_proj_weight, l.self_attn.in_proj_bias
            out[h + "attn.c_proj.weight"], out[h + "attn.c_proj.bias"] = l.self_attn.out_proj.weight, l.self_attn.out_proj.bias
            out[h + "ln_2.weight"], out[h + "ln_2.bias"] = l.norm2.weight, l.norm2.bias
            out[h + "mlp.c_fc.weight"], out[h + "mlp.c_fc.bias"] = l.linear1.weight, l.linear1.bias
            out[h + "mlp.c_proj.weight"], out[h + "mlp.c_proj.bias"] = l.linear2.weight, l.linear2.bias
        for i, l in enumerate(dec):
            h = f"decoder.h.{i}."
            out[h + "ln_1.weight"], out[h + "ln_1.bias"] = l.norm1.weight, l.norm1.bias
            out[h + "attn.c_attn.weight"], out[h + "attn.c_attn.bias"] = l.self_attn.in_proj_weight, l.self_attn.in_proj_bias
            out[h + "attn.c_proj.weight"], out[h + "attn.c_proj.bias"] = l.self_attn.out_proj.weight, l.self_attn.out_proj.bias
            out[h + "ln_cross.weight"], out[h + "ln_cross.bias"] = l.norm2.weight, l.norm2.bias
            # The cross projection [q; k; v] splits into q_proj and kv_proj.
            out[h + "cross.q_proj.weight"] = ("split", l.multihead_attn.in_proj_weight, 0, C)
            out[h + "cross.q_proj.bias"] = ("split", l.multihead_attn.in_proj_bias, 0, C)
            out[h + "cross.kv_proj.weight"] = ("split", l.multihead_attn.in_proj_weight, C, 3 * C)
            out[h + "cross.kv_proj.bias"] = ("split", l.multihead_attn.in_proj_bias, C, 3 * C)
            out[h + "cross.c_proj.weight"], out[h + "cross.c_proj.bias"] = l.multihead_attn.out_proj.weight, l.multihead_attn.out_proj.bias
            out[h + "ln_2.weight"], out[h + "ln_2.bias"] = l.norm3.weight, l.norm3.bias
            out[h + "mlp.c_fc.weight"], out[h + "mlp.c_fc.bias"] = l.linear1.weight, l.linear1.bias
            out[h + "mlp.c_proj.weight"], out[h + "mlp.c_proj.bias"] = l.linear2.weight, l.linear2.bias
        if enc_ln is not None:
            out["encoder.ln_f.weight"], out["encoder.ln_f.bias"] = enc_ln.weight, enc_ln.bias
            out["decoder.ln_f.weight"], out["decoder.ln_f.bias"] = dec_ln.weight, dec_ln.bias
        return out

    def ours(name, t, grad=False):
        """(value or gradient) in qkv's layout: nn.Linear (out, in) -> Conv1D (in, out)."""
        if isinstance(t, tuple):
            _, full, lo, hi = t
            t = (full.grad if grad else full)[lo:hi]
        elif grad:
            t = t.grad
        t = t.detach()
        if t.dim() == 2 and "wpe" not in name and name != "shared.weight":
            t = t.t()
        return t.contiguous()

    cfg = {"model_type": "qkv-seq2seq", "arch": "encoder-decoder", "n_layer": a.n_layer,
           "n_decoder_layer": a.n_dec_layer, "n_head": NH, "n_embd": C, "n_positions": Tmax,
           "vocab_size": V, "layer_norm_epsilon": 1e-5, "bias": True, "shared_embeddings": True,
           "bos_token_id": V - 2, "eos_token_id": V - 1,
           "activation_function": "relu" if a.activation == "relu" else "gelu_new"}
    if post:
        cfg["norm_position"] = "post"
    if not learned:
        cfg["pos"] = "sinusoidal"
    os.makedirs(os.path.join(a.out, "model"), exist_ok=True)
    with open(os.path.join(a.out, "model", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    safetensors_io.save(os.path.join(a.out, "model", "model.safetensors"),
                        {n: ours(n, t) for n, t in named().items()}, {"format": "pt"})

    B, S, T = a.batch, a.src_len, a.tgt_len
    src_len = torch.tensor([S] + [max(1, S - 2 - 4 * b) for b in range(1, B)], dtype=torch.int32)
    tgt_len = torch.tensor([max(1, T - 3 * b) for b in range(B)], dtype=torch.int32)
    src = torch.randint(0, V - 2, (B, S), dtype=torch.int32)
    tgt = torch.randint(0, V - 2, (B, T), dtype=torch.int32)
    tgt[:, 0] = V - 2  # BOS
    y = torch.randint(0, V, (B, T), dtype=torch.int32)
    src_pad = torch.arange(S).view(1, S) >= src_len.view(B, 1).long()
    tgt_pad = torch.arange(T).view(1, T) >= tgt_len.view(B, 1).long()
    y[tgt_pad] = -1
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)

    scale = math.sqrt(C)
    def embed(ids, wpe, n):
        return shared[ids.long()] * scale + (wpe[:n] if wpe is not None else sinusoid(n, C))
    mem = embed(src, enc_wpe, S)
    for l in enc:
        mem = l(mem, src_key_padding_mask=src_pad)
    if enc_ln is not None:
        mem = enc_ln(mem)
    h = embed(tgt, dec_wpe, T)
    for l in dec:
        h = l(h, mem, tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
    if dec_ln is not None:
        h = dec_ln(h)
    logits = h @ shared.t()
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1).long(), ignore_index=-1,
                           label_smoothing=a.label_smoothing)
    loss.backward()
    out = {"logits": logits.detach(), "loss": loss.detach().reshape(1)}
    for n, t in named().items():
        out["grad." + n] = ours(n, t, grad=True)
    safetensors_io.save(os.path.join(a.out, "inputs.safetensors"),
                        {"src": src, "tgt": tgt, "y": y, "src_len": src_len, "tgt_len": tgt_len},
                        {"label_smoothing": repr(a.label_smoothing)})
    safetensors_io.save(os.path.join(a.out, "expected.safetensors"), out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parity", help="random encoder-decoder + padded batch: logits, loss, grads")
    p.add_argument("--out", required=True)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-dec-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=32)
    p.add_argument("--block-size", type=int, default=24)
    p.add_argument("--vocab-size", type=int, default=29)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--src-len", type=int, default=17)
    p.add_argument("--tgt-len", type=int, default=13)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norm-position", default="post", choices=["pre", "post"])
    p.add_argument("--activation", default="relu", choices=["gelu", "relu"])
    p.add_argument("--pos", default="sinusoidal", choices=["learned", "sinusoidal"])
    p.add_argument("--label-smoothing", type=float, default=0.1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    parity(a)


if __name__ == "__main__":
    main()
