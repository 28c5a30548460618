#!/usr/bin/env python3
"""Converts the golden fixture fixtures/models/llama3_mqa_tied (bf16 safetensors, llama3 rope
scaling, MQA, head_dim 24, tied embeddings) to GGUF the way llama.cpp's converter does: q/k rows
permuted for pairwise rotation, llama3 rope scaling as a rope_freqs.weight tensor of divisors,
llama.* metadata, BF16 tensors. redhare must read it back to the same logits transformers computed
for the safetensors original (fixtures/models/llama3_mqa_tied/golden.safetensors).

    python3 tools/gguf/make_llama_gguf_fixture.py    # writes fixtures/gguf/llama3_mqa_tied.gguf
"""
import json
import math
import os
import struct

import gguf
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "fixtures", "models", "llama3_mqa_tied")


def read_bf16_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "BF16", name
        b, end = e["data_offsets"]
        out[name] = np.frombuffer(data[b:end], dtype=np.uint16).reshape(e["shape"])
    return out


def permute(w, n_head):
    # llama.cpp's converter: each head's two rotary halves interleaved row by row.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    cfg = json.load(open(os.path.join(SRC, "config.json")))
    t = read_bf16_safetensors(os.path.join(SRC, "model.safetensors"))
    H, L, nh, nkv, D = (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
                        cfg["num_key_value_heads"], cfg["head_dim"])
    rp = cfg["rope_parameters"]
    out = os.path.join(ROOT, "fixtures", "gguf", "llama3_mqa_tied.gguf")
    w = gguf.GGUFWriter(out, "llama")
    w.add_block_count(L)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(H)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_key_length(D)
    w.add_value_length(D)
    w.add_rope_dimension_count(D)
    w.add_rope_freq_base(rp["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    # Llama 3 rope scaling as llama.cpp writes it: a divisor per frequency.
    base, factor = rp["rope_theta"], rp["factor"]
    lo, hi, old = rp["low_freq_factor"], rp["high_freq_factor"], rp["original_max_position_embeddings"]
    freqs = 1.0 / (base ** (np.arange(0, D, 2, dtype=np.float32) / D))
    factors = []
    for fr in freqs:
        wavelen = 2 * math.pi / fr
        if wavelen < old / hi:
            factors.append(1.0)
        elif wavelen > old / lo:
            factors.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    w.add_tensor("rope_freqs.weight", np.array(factors, dtype=np.float32))

    def bf16(name, arr):
        w.add_tensor(name, np.ascontiguousarray(arr), raw_shape=arr.shape,
                     raw_dtype=gguf.GGMLQuantizationType.BF16)

    bf16("token_embd.weight", t["model.embed_tokens.weight"])
    bf16("output_norm.weight", t["model.norm.weight"])
    for i in range(L):
        p = f"model.layers.{i}."
        bf16(f"blk.{i}.attn_norm.weight", t[p + "input_layernorm.weight"])
        bf16(f"blk.{i}.ffn_norm.weight", t[p + "post_attention_layernorm.weight"])
        bf16(f"blk.{i}.attn_q.weight", permute(t[p + "self_attn.q_proj.weight"], nh))
        bf16(f"blk.{i}.attn_k.weight", permute(t[p + "self_attn.k_proj.weight"], nkv))
        bf16(f"blk.{i}.attn_v.weight", t[p + "self_attn.v_proj.weight"])
        bf16(f"blk.{i}.attn_output.weight", t[p + "self_attn.o_proj.weight"])
        bf16(f"blk.{i}.ffn_gate.weight", t[p + "mlp.gate_proj.weight"])
        bf16(f"blk.{i}.ffn_up.weight", t[p + "mlp.up_proj.weight"])
        bf16(f"blk.{i}.ffn_down.weight", t[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(out, os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
