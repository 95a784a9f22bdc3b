#!/usr/bin/env python3
"""Writes a qkv / Hugging Face GPT-2 model directory as a GGUF file for llama.cpp (the peer in
bench/generate_vs_llamacpp.sh). Matrices (and the tied token embedding) in F32, F16 or Q8_0;
norms, biases and position embeddings in F32.

  gguf_export.py --model DIR --out FILE.gguf --type f32|f16|q8_0

GGUF v3, as the format's spec describes it: magic, version, tensor and key counts, key/values,
tensor infos (name, dims innermost first, ggml type, offset), data aligned to 32 bytes. Tensor
names and keys are llama.cpp's for the "gpt2" architecture. Q8_0 blocks are 32 values with one
fp16 scale d = max|x| / 127 and q = round(x / d).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}
T_UINT32, T_INT32, T_FLOAT32, T_STRING, T_ARRAY = 4, 5, 6, 8, 9
ALIGN = 32


def gguf_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv_bytes(key, vtype, value):
    out = gguf_str(key) + struct.pack("<I", vtype)
    if vtype == T_UINT32:
        return out + struct.pack("<I", value)
    if vtype == T_FLOAT32:
        return out + struct.pack("<f", value)
    if vtype == T_STRING:
        return out + gguf_str(value)
    etype, items = value
    out += struct.pack("<IQ", etype, len(items))
    if etype == T_STRING:
        return out + b"".join(gguf_str(s) for s in items)
    if etype == T_INT32:
        return out + np.asarray(items, dtype="<i4").tobytes()
    raise ValueError(etype)


def q8_0(x):
    x = x.astype(np.float32).reshape(-1, 32)
    amax = np.abs(x).max(axis=1)
    d = amax / 127.0
    inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    q = np.clip(np.rint(x * inv[:, None]), -127, 127).astype(np.int8)
    blocks = np.zeros(x.shape[0], dtype=[("d", "<f2"), ("qs", "i1", 32)])
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = q
    return blocks.tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", choices=list(FILE_TYPE), default="f32")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    W = {k.removeprefix("transformer."): v.float().numpy()
         for k, v in safetensors_io.load(os.path.join(a.model, "model.safetensors")).items()}
    L, C, V, T = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]
    vocab = json.load(open(os.path.join(a.model, "vocab.json"), encoding="utf-8"))
    with open(os.path.join(a.model, "merges.txt"), encoding="utf-8") as f:
        merges = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith("#version")]
    tokens = [f"[PAD{i}]" for i in range(V)]
    for s, i in vocab.items():
        if i < V:
            tokens[i] = s
    types = [3 if t == "<|endoftext|>" else 1 for t in tokens]
    eot = vocab.get("<|endoftext|>", V - 1)

    tensors = []  # (name, bytes, ggml type, dims innermost first)

    def add(name, x, matrix=False):
        x = np.ascontiguousarray(x, dtype=np.float32)
        dims = list(reversed(x.shape))
        if matrix and a.type == "f16":
            tensors.append((name, x.astype("<f2").tobytes(), GGML_F16, dims))
        elif matrix and a.type == "q8_0" and x.shape[-1] % 32 == 0:
            tensors.append((name, q8_0(x), GGML_Q8_0, dims))
        else:
            tensors.append((name, x.tobytes(), GGML_F32, dims))

    add("token_embd.weight", W["wte.weight"], matrix=True)  # (V, C): rows of C
    add("position_embd.weight", W["wpe.weight"])
    for i in range(L):
        p, b = f"h.{i}.", f"blk.{i}."
        add(b + "attn_norm.weight", W[p + "ln_1.weight"])
        add(b + "attn_norm.bias", W[p + "ln_1.bias"])
        # HF Conv1D weights are (in, out); ggml wants rows of `in` values: the transpose.
        add(b + "attn_qkv.weight", W[p + "attn.c_attn.weight"].T, matrix=True)
        add(b + "attn_qkv.bias", W[p + "attn.c_attn.bias"])
        add(b + "attn_output.weight", W[p + "attn.c_proj.weight"].T, matrix=True)
        add(b + "attn_output.bias", W[p + "attn.c_proj.bias"])
        add(b + "ffn_norm.weight", W[p + "ln_2.weight"])
        add(b + "ffn_norm.bias", W[p + "ln_2.bias"])
        add(b + "ffn_up.weight", W[p + "mlp.c_fc.weight"].T, matrix=True)
        add(b + "ffn_up.bias", W[p + "mlp.c_fc.bias"])
        add(b + "ffn_down.weight", W[p + "mlp.c_proj.weight"].T, matrix=True)
        add(b + "ffn_down.bias", W[p + "mlp.c_proj.bias"])
    add("output_norm.weight", W["ln_f.weight"])
    add("output_norm.bias", W["ln_f.bias"])

    kvs = [
        kv_bytes("general.architecture", T_STRING, "gpt2"),
        kv_bytes("general.name", T_STRING, "qkv " + os.path.basename(os.path.normpath(a.model))),
        kv_bytes("general.file_type", T_UINT32, FILE_TYPE[a.type]),
        kv_bytes("general.alignment", T_UINT32, ALIGN),
        kv_bytes("gpt2.context_length", T_UINT32, T),
        kv_bytes("gpt2.embedding_length", T_UINT32, C),
        kv_bytes("gpt2.feed_forward_length", T_UINT32, 4 * C),
        kv_bytes("gpt2.block_count", T_UINT32, L),
        kv_bytes("gpt2.attention.head_count", T_UINT32, cfg["n_head"]),
        kv_bytes("gpt2.attention.layer_norm_epsilon", T_FLOAT32, cfg.get("layer_norm_epsilon", 1e-5)),
        kv_bytes("tokenizer.ggml.model", T_STRING, "gpt2"),
        kv_bytes("tokenizer.ggml.pre", T_STRING, "gpt-2"),
        kv_bytes("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tokens)),
        kv_bytes("tokenizer.ggml.token_type", T_ARRAY, (T_INT32, types)),
        kv_bytes("tokenizer.ggml.merges", T_ARRAY, (T_STRING, merges)),
        kv_bytes("tokenizer.ggml.bos_token_id", T_UINT32, eot),
        kv_bytes("tokenizer.ggml.eos_token_id", T_UINT32, eot),
    ]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    infos, offset = [], 0
    for name, data, gtype, dims in tensors:
        infos.append(gguf_str(name) + struct.pack("<I", len(dims)) +
                     struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", gtype, offset))
        offset += (len(data) + ALIGN - 1) // ALIGN * ALIGN
    head += b"".join(infos)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head)
        f.write(b"\0" * ((ALIGN - len(head) % ALIGN) % ALIGN))
        for _, data, _, _ in tensors:
            f.write(data)
            f.write(b"\0" * ((ALIGN - len(data) % ALIGN) % ALIGN))
    os.replace(tmp, a.out)
    print(f"{a.out}: {a.type}, {len(tensors)} tensors, {os.path.getsize(a.out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
