#!/usr/bin/env python3
"""Writes a tiny random-weight Llama checkpoint around a real tokenizer, for end-to-end tests of
the server (API behaviour, not model quality): config.json, model.safetensors (bf16),
generation_config.json, and the tokenizer files copied from --tokenizer-dir.

    python3 tools/make_tiny_model.py --tokenizer-dir .cache/tokenizers/smollm2 --out build-test/tiny-chat

Needs only numpy (the safetensors file is written by hand: 8-byte header length, JSON, bytes).
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np


def bf16_bytes(a):
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype(np.uint16).tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with open(os.path.join(args.tokenizer_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    vocab = max(tok["model"]["vocab"].values()) + 1
    for t in tok.get("added_tokens", []):
        vocab = max(vocab, t["id"] + 1)
    tcfg = {}
    tcfg_path = os.path.join(args.tokenizer_dir, "tokenizer_config.json")
    if os.path.exists(tcfg_path):
        with open(tcfg_path, encoding="utf-8") as f:
            tcfg = json.load(f)

    def token_id(key):
        v = tcfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if v is None:
            return None
        if v in tok["model"]["vocab"]:
            return tok["model"]["vocab"][v]
        for t in tok.get("added_tokens", []):
            if t["content"] == v:
                return t["id"]
        return None

    H, L, heads, kv, inter = args.hidden, args.layers, 4, 2, 2 * args.hidden
    D = H // heads
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
        "intermediate_size": inter, "num_hidden_layers": L, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "torch_dtype": "bfloat16", "hidden_act": "silu",
        "bos_token_id": token_id("bos_token"), "eos_token_id": token_id("eos_token"),
    }
    rng = np.random.default_rng(args.seed)
    tensors = {"model.embed_tokens.weight": rng.standard_normal((vocab, H)),
               "model.norm.weight": np.ones(H)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes = {"self_attn.q_proj.weight": (heads * D, H), "self_attn.k_proj.weight": (kv * D, H),
                  "self_attn.v_proj.weight": (kv * D, H), "self_attn.o_proj.weight": (H, heads * D),
                  "mlp.gate_proj.weight": (inter, H), "mlp.up_proj.weight": (inter, H),
                  "mlp.down_proj.weight": (H, inter)}
        for name, shape in shapes.items():
            tensors[p + name] = rng.standard_normal(shape) / np.sqrt(shape[1])
        tensors[p + "input_layernorm.weight"] = np.ones(H)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(H)

    os.makedirs(args.out, exist_ok=True)
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        b = bf16_bytes(a)
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"]}, f)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        src = os.path.join(args.tokenizer_dir, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(args.out, name))
    print(f"{args.out}: vocab {vocab}, hidden {H}, {L} layers")


if __name__ == "__main__":
    main()
