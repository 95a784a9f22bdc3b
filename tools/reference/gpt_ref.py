#!/usr/bin/env python3
"""PyTorch reference for qkv's GPT (an independent implementation, used by the tests).

The model is GPT-2 as Hugging Face lays it out: Conv1D weights stored (in, out), GELU in tanh
form, pre-LayerNorm blocks, tied LM head; and the block options of qkv's config.json: positions
learned / sinusoidal / rope / alibi, LayerNorm or RMSNorm placed pre or post, GELU / ReLU /
SwiGLU MLP of width n_inner, grouped-query attention (n_kv_head), and the attention rules. `parity` builds a random model, writes it as a qkv /
Hugging Face model directory, and writes the logits, loss, every gradient and the parameters
after 3 AdamW steps (nanoGPT's decay groups, global-norm clipping, warmup + cosine LR).

Run with Debian's python3-torch:  /usr/bin/python3 tools/reference/gpt_ref.py parity --out DIR ...
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


class GPT(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        C, L, bias = cfg["n_embd"], cfg["n_layer"], cfg["bias"]
        nbias = bias and cfg.get("norm", "layernorm") == "layernorm"  # RMSNorm has no bias
        HS = C // cfg["n_head"]
        QW = C + 2 * cfg.get("n_kv_head", cfg["n_head"]) * HS
        H = cfg.get("n_inner") or 4 * C
        FW = 2 * H if cfg.get("activation_function") == "swiglu" else H
        p = {}
        p["wte.weight"] = (cfg["vocab_size"], C)
        if cfg.get("pos", "learned") == "learned":
            p["wpe.weight"] = (cfg["n_positions"], C)
        for i in range(L):
            h = f"h.{i}."
            p[h + "ln_1.weight"] = (C,)
            if nbias: p[h + "ln_1.bias"] = (C,)
            p[h + "attn.c_attn.weight"] = (C, QW)
            if bias: p[h + "attn.c_attn.bias"] = (QW,)
            p[h + "attn.c_proj.weight"] = (C, C)
            if bias: p[h + "attn.c_proj.bias"] = (C,)
            if not cfg.get("mlp", True):
                continue  # attention-only blocks
            p[h + "ln_2.weight"] = (C,)
            if nbias: p[h + "ln_2.bias"] = (C,)
            p[h + "mlp.c_fc.weight"] = (C, FW)
            if bias: p[h + "mlp.c_fc.bias"] = (FW,)
            p[h + "mlp.c_proj.weight"] = (H, C)
            if bias: p[h + "mlp.c_proj.bias"] = (C,)
        if cfg.get("norm_position", "pre") == "pre":  # post-norm blocks end normalised
            p["ln_f.weight"] = (C,)
            if nbias: p["ln_f.bias"] = (C,)
        self.names = list(p)
        self.params = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(torch.zeros(s)) for k, s in p.items()})
        self._by_name = {k: self.params[k.replace(".", "__")] for k in p}  # plain lookups in forward
        self._masks = {}

    def norm(self, x, prefix):
        """LayerNorm, or RMSNorm (x / sqrt(mean(x^2) + eps) * w), as the config says."""
        cfg = self.cfg
        w, b = self.P(prefix + ".weight"), self.opt(prefix + ".bias")
        if cfg.get("norm", "layernorm") == "rmsnorm":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["layer_norm_epsilon"]) * w
        return F.layer_norm(x, (x.shape[-1],), w, b, cfg["layer_norm_epsilon"])

    def P(self, name):
        return self._by_name[name]

    def opt(self, name):
        return self._by_name.get(name)

    def mask(self, T, Tk):
        """Queries are the last T of Tk positions; each sees the keys up to its own, and of
        those the ones its attention rule allows (written out per pair, as the rules read)."""
        if (T, Tk) not in self._masks:
            cfg = self.cfg
            p = torch.arange(Tk - T, Tk).view(T, 1)
            j = torch.arange(Tk).view(1, Tk)
            m = j <= p
            kind = cfg.get("attention", "dense")
            if kind == "sliding":
                m &= p - j < cfg["window"]
            elif kind == "block_sparse":
                S, G = cfg["attn_block"], cfg["attn_global"]
                m &= (p < G) | (j < G) | ((p // S - j // S).abs() <= cfg["attn_local_blocks"])
            self._masks[(T, Tk)] = m
        return self._masks[(T, Tk)]

    @staticmethod
    def sinusoid(pos0, T, C):
        """PE(p, 2i) = sin(p / 10000^(2i/C)), PE(p, 2i+1) = cos(p / 10000^(2i/C))."""
        p = torch.arange(pos0, pos0 + T, dtype=torch.float64).view(T, 1)
        i2 = (torch.arange(C) // 2 * 2).to(torch.float64)
        angle = p * torch.pow(10000.0, -i2 / C)
        pe = torch.where(torch.arange(C) % 2 == 0, torch.sin(angle), torch.cos(angle))
        return pe.to(torch.float32)

    @staticmethod
    def alibi_slopes(n):
        """ALiBi's slopes: 2^(-8i/n) for i = 1..n when n is a power of two; else those of the
        largest power of two below n, then every other slope of twice that power."""
        def geometric(m):
            return [2.0 ** (-8.0 * (i + 1) / m) for i in range(m)]
        p = 2 ** int(math.floor(math.log2(n)))
        return geometric(p) + geometric(2 * p)[0::2][:n - p]

    def rotate(self, x, pos0):
        """Rotary positions on (B, heads, T, HS): channels i and i + HS/2 turn together by
        p * theta^(-2i/HS) (the rotate-half form of GPT-NeoX and LLaMA)."""
        T, HS = x.shape[2], x.shape[3]
        theta = self.cfg.get("rope_theta", 10000.0)
        inv = torch.pow(torch.tensor(float(theta), dtype=torch.float64),
                        -torch.arange(0, HS, 2, dtype=torch.float64) / HS)
        angle = torch.arange(pos0, pos0 + T, dtype=torch.float64).view(T, 1) * inv.view(1, -1)
        cos = torch.cat([angle.cos(), angle.cos()], dim=-1).float()
        sin = torch.cat([angle.sin(), angle.sin()], dim=-1).float()
        x1, x2 = x[..., :HS // 2], x[..., HS // 2:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    def forward(self, idx, targets=None, cache=None, last_only=False):
        """Logits (and the mean loss with targets). With `cache` (a list with one entry per
        layer, None at first), keys and values are appended there and idx continues the
        sequence; with last_only, only the last position's logits are computed."""
        cfg = self.cfg
        B, T = idx.shape
        C, NH, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
        pos0 = cache[0][0].shape[2] if cache is not None and cache[0] is not None else 0
        self.last_att = []  # each layer's attention probabilities (B, NH, T, Tk)
        pos = cfg.get("pos", "learned")
        post = cfg.get("norm_position", "pre") == "post"
        HS = C // NH
        NKV = cfg.get("n_kv_head", NH)
        if pos == "learned":
            x = self.P("wte.weight")[idx] + self.P("wpe.weight")[pos0:pos0 + T]
        elif pos == "sinusoidal":
            x = self.P("wte.weight")[idx] + self.sinusoid(pos0, T, C)
        else:  # rope, alibi: positions enter the attention only
            x = self.P("wte.weight")[idx]
        for i in range(cfg["n_layer"]):
            h = f"h.{i}."
            a = x if post else self.norm(x, h + "ln_1")
            qkv = a @ self.P(h + "attn.c_attn.weight")
            if self.opt(h + "attn.c_attn.bias") is not None: qkv = qkv + self.P(h + "attn.c_attn.bias")
            q, k, v = qkv.split([C, NKV * HS, NKV * HS], dim=2)
            q = q.view(B, T, NH, HS).transpose(1, 2)
            k = k.view(B, T, NKV, HS).transpose(1, 2)
            v = v.view(B, T, NKV, HS).transpose(1, 2)
            if pos == "rope":
                q, k = self.rotate(q, pos0), self.rotate(k, pos0)
            if cache is not None:
                if cache[i] is not None:
                    k = torch.cat([cache[i][0], k], dim=2)
                    v = torch.cat([cache[i][1], v], dim=2)
                cache[i] = (k, v)
            if NKV != NH:  # grouped-query: query head h reads key/value head h // (NH / NKV)
                k = k.repeat_interleave(NH // NKV, dim=1)
                v = v.repeat_interleave(NH // NKV, dim=1)
            mask = self.mask(T, k.shape[2])
            if cfg.get("attention", "dense") == "linear":
                # phi(x) = elu(x) + 1; out_i = sum_j (phi(q_i).phi(k_j)) v_j / sum_j phi(q_i).phi(k_j)
                w = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-2, -1)
                w = w * mask
                y = (w @ v) / w.sum(dim=-1, keepdim=True)
                self.last_att.append((w / w.sum(dim=-1, keepdim=True)).detach())
            else:
                att = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH)
                if pos == "alibi":
                    Tk = k.shape[2]
                    dist = (torch.arange(Tk - T, Tk).view(T, 1) - torch.arange(Tk).view(1, Tk)).abs()
                    slopes = torch.tensor(self.alibi_slopes(NH)).view(NH, 1, 1)
                    att = att - slopes * dist
                att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
                self.last_att.append(att.detach())
                y = att @ v
            y = y.transpose(1, 2).reshape(B, T, C)
            y = y @ self.P(h + "attn.c_proj.weight")
            if self.opt(h + "attn.c_proj.bias") is not None: y = y + self.P(h + "attn.c_proj.bias")
            x = self.norm(x + y, h + "ln_1") if post else x + y
            if not cfg.get("mlp", True):
                continue
            m = x if post else self.norm(x, h + "ln_2")
            m = m @ self.P(h + "mlp.c_fc.weight")
            if self.opt(h + "mlp.c_fc.bias") is not None: m = m + self.P(h + "mlp.c_fc.bias")
            act = cfg.get("activation_function")
            if act == "relu":
                m = F.relu(m)
            elif act == "swiglu":
                gate, up = m.chunk(2, dim=-1)
                m = F.silu(gate) * up
            else:
                m = F.gelu(m, approximate="tanh")
            m = m @ self.P(h + "mlp.c_proj.weight")
            if self.opt(h + "mlp.c_proj.bias") is not None: m = m + self.P(h + "mlp.c_proj.bias")
            x = self.norm(x + m, h + "ln_2") if post else x + m
        if last_only:
            x = x[:, -1:]
        if not post:
            x = self.norm(x, "ln_f")
        logits = x @ self.P("wte.weight").t()
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss


def lr_at(it, lr, min_lr, warmup, decay_iters):
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


@torch.no_grad()
def randomize(model, store_dtype=None):
    """Random weights that exercise everything: LayerNorm gains near 1, every other tensor
    (biases included) N(0, 0.02). With store_dtype, weights are rounded to it, so the reference
    computes with exactly what the file will hold."""
    for name in model.names:
        p = model.P(name)
        if "ln_" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        else:
            p.copy_(0.02 * torch.randn_like(p))
        if store_dtype is not None:
            p.copy_(p.to(store_dtype).float())


def parity(args):
    torch.manual_seed(args.seed)
    cfg = {"model_type": "gpt2", "n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
           "n_positions": args.block_size, "vocab_size": args.vocab_size, "layer_norm_epsilon": 1e-5,
           "activation_function": "gelu_new", "bias": bool(args.bias)}
    if args.pos != "learned":
        cfg["pos"] = args.pos
    if not args.mlp:
        cfg["mlp"] = False
    if args.norm != "layernorm":
        cfg["norm"] = args.norm
    if args.activation != "gelu_new":
        cfg["activation_function"] = args.activation
    if args.attention != "dense":
        cfg["attention"] = args.attention
    if args.norm_position != "pre":
        cfg["norm_position"] = args.norm_position
    if args.n_kv_head:
        cfg["n_kv_head"] = args.n_kv_head
    if args.n_inner:
        cfg["n_inner"] = args.n_inner
    if args.attention == "sliding":
        cfg["window"] = args.window
    if args.attention == "block_sparse":
        cfg.update(attn_block=args.attn_block, attn_local_blocks=args.attn_local_blocks,
                   attn_global=args.attn_global)
    model = GPT(cfg)
    randomize(model)
    os.makedirs(os.path.join(args.out, "model"), exist_ok=True)
    with open(os.path.join(args.out, "model", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    safetensors_io.save(os.path.join(args.out, "model", "model.safetensors"),
                        {"transformer." + n: model.P(n) for n in model.names}, {"format": "pt"})

    steps, B, T = 3, args.batch, args.seq
    x = torch.randint(0, args.vocab_size, (steps, B, T), dtype=torch.int32)
    y = torch.randint(0, args.vocab_size, (steps, B, T), dtype=torch.int32)
    y[0, 0, 1] = -1  # an ignored target
    hp = {"lr": 1e-3, "min_lr": 1e-4, "warmup": 1, "decay_iters": 3, "beta1": 0.9, "beta2": 0.95,
          "eps": 1e-8, "weight_decay": 0.1, "grad_clip": args.grad_clip}
    safetensors_io.save(os.path.join(args.out, "inputs.safetensors"), {"x": x, "y": y},
                        {k: repr(v) for k, v in hp.items()})

    out = {}
    logits, loss = model(x[0].long(), y[0].long())
    loss.backward()
    out["logits"] = logits.detach()
    for i, att in enumerate(model.last_att):
        out[f"attn.{i}"] = att.contiguous()
    out["loss"] = loss.detach().reshape(1)
    for n in model.names:
        out["grad." + n] = model.P(n).grad.detach().clone()

    decay = [model.P(n) for n in model.names if model.P(n).dim() >= 2]
    nodecay = [model.P(n) for n in model.names if model.P(n).dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"], foreach=False)
    model.zero_grad(set_to_none=True)
    losses = []
    for it in range(steps):
        lr = lr_at(it, hp["lr"], hp["min_lr"], hp["warmup"], hp["decay_iters"])
        for g in opt.param_groups:
            g["lr"] = lr
        _, loss = model(x[it].long(), y[it].long())
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        assert norm > hp["grad_clip"], f"clipping not exercised: norm {norm}"
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    out["step_losses"] = torch.tensor(losses)
    for n in model.names:
        out["step3." + n] = model.P(n).detach().clone()
    safetensors_io.save(os.path.join(args.out, "expected.safetensors"), out)


def hf_model(args):
    """A random model of a GPT-2 size saved as Hugging Face does (no "transformer." prefix, the
    h.N.attn.bias mask buffers present, HF's config keys), plus its logits for random ids and
    64 greedily generated ids (full recomputation each step)."""
    torch.manual_seed(args.seed)
    sizes = {"gpt2": (12, 12, 768), "tiny": (2, 4, 64)}
    L, H, C = sizes[args.size]
    cfg = {"n_layer": L, "n_head": H, "n_embd": C, "n_positions": 1024, "vocab_size": 50257,
           "layer_norm_epsilon": 1e-5, "bias": True}
    model = GPT(cfg)
    store = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    randomize(model, None if args.dtype == "f32" else store)
    tensors = {n: model.P(n).detach().to(store) for n in model.names}
    for i in range(L):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1024, 1024)).view(1, 1, 1024, 1024).to(store)
    os.makedirs(args.out, exist_ok=True)
    safetensors_io.save(os.path.join(args.out, "model.safetensors"), tensors, {"format": "pt"})
    hf_cfg = {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
              "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
              "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": C, "n_head": H,
              "n_inner": None, "n_layer": L, "n_positions": 1024, "resid_pdrop": 0.1,
              "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
              "summary_type": "cls_index", "summary_use_proj": True, "vocab_size": 50257}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    ids = torch.randint(0, 50257, (1, args.seq))
    with torch.no_grad():
        logits, _ = model(ids)
        seq = ids[:, :8]
        for _ in range(args.new_tokens):
            nxt = model(seq)[0][:, -1, :].argmax(dim=-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    safetensors_io.save(os.path.join(args.out, "expected.safetensors"),
                        {"ids": ids[0].to(torch.int32), "logits": logits[0].contiguous(),
                         "prompt": ids[0, :8].to(torch.int32), "greedy": seq[0, 8:].to(torch.int32)})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("parity", help="random model + logits, loss, grads, params after 3 AdamW steps")
    p.add_argument("--out", required=True)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=50)
    p.add_argument("--bias", type=int, default=1)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mlp", type=int, default=1, help="0: attention-only blocks")
    p.add_argument("--norm", default="layernorm", choices=["layernorm", "rmsnorm"])
    p.add_argument("--activation", default="gelu_new", choices=["gelu_new", "relu", "swiglu"])
    p.add_argument("--norm-position", default="pre", choices=["pre", "post"])
    p.add_argument("--n-kv-head", type=int, default=0, help="0: n_head (multi-head attention)")
    p.add_argument("--n-inner", type=int, default=0, help="MLP width; 0: 4 n_embd")
    p.add_argument("--grad-clip", type=float, default=0.5, help="must be below the gradient norm")
    p.add_argument("--pos", default="learned", choices=["learned", "sinusoidal", "rope", "alibi"])
    p.add_argument("--attention", default="dense", choices=["dense", "sliding", "block_sparse", "linear"])
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--attn-block", type=int, default=0)
    p.add_argument("--attn-local-blocks", type=int, default=1)
    p.add_argument("--attn-global", type=int, default=0)
    h = sub.add_parser("hf-model", help="a Hugging Face GPT-2 directory with reference logits and greedy ids")
    h.add_argument("--out", required=True)
    h.add_argument("--size", default="gpt2", choices=["gpt2", "tiny"])
    h.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    h.add_argument("--seq", type=int, default=128)
    h.add_argument("--new-tokens", type=int, default=64)
    h.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    if args.cmd == "parity":
        parity(args)
    elif args.cmd == "hf-model":
        hf_model(args)


if __name__ == "__main__":
    main()
