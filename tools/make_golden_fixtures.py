#!/usr/bin/env python3
"""Builds tiny random-weight checkpoints of each architecture redhare supports and records what
Hugging Face transformers computes on them: float32 logits at every prompt position and a greedy
continuation with the top-1/top-2 margin of each step.

Run on a machine with PyTorch and transformers (the GPU machine has both); the reference runs on the
CPU in float32 so that no TF32 or reduced-precision kernel leaks into the expected values.

    python3 tools/make_golden_fixtures.py --out fixtures/models

Weights are drawn with scales that keep activations near unit size and give the logits a real
spread (a default 0.02 init makes nearly every greedy step a near-tie), then rounded to bf16; the
reference model is the saved bf16 checkpoint loaded in float32, so both sides use identical weights.
"""
import argparse
import json
import math
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file

GREEDY_STEPS = 32
PROMPT_LENGTHS = [1, 7, 13, 24]

# name -> (config class, config kwargs, save options)
FIXTURES = {
    "llama_gqa": ("LlamaConfig", dict(
        hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False), {}),
    # Llama 3.x style: llama3 rope scaling, tied embeddings, MQA, head_dim != hidden/heads.
    "llama3_mqa_tied": ("LlamaConfig", dict(
        hidden_size=96, intermediate_size=200, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=1, head_dim=24, vocab_size=384, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=32)), {}),
    # Odd head count, plain multi-head attention, three layers, biased attention projections.
    "llama_mha_odd_bias": ("LlamaConfig", dict(
        hidden_size=80, intermediate_size=144, num_hidden_layers=3, num_attention_heads=5,
        num_key_value_heads=5, vocab_size=300, max_position_embeddings=128, rms_norm_eps=1e-6,
        rope_theta=10000.0, attention_bias=True, tie_word_embeddings=False), {}),
    "mistral_sliding": ("MistralConfig", dict(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=10000.0, sliding_window=16, tie_word_embeddings=False), {}),
    "qwen2_bias_tied": ("Qwen2Config", dict(
        hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=448, max_position_embeddings=256, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True), {}),
    # Qwen3: q/k RMSNorm, head_dim larger than hidden/heads; saved as a sharded checkpoint.
    "qwen3_sharded": ("Qwen3Config", dict(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=512, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False), {"shard": True}),
    "qwen3_mqa_odd": ("Qwen3Config", dict(
        hidden_size=48, intermediate_size=112, num_hidden_layers=2, num_attention_heads=3,
        num_key_value_heads=1, head_dim=20, vocab_size=320, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True), {}),
}


def randomize(model, gen):
    """Scales chosen so each layer keeps activations near unit size."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name == "lm_head.weight":
                p.copy_(3.0 / math.sqrt(p.shape[1]) * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(1.0 / math.sqrt(p.shape[1]) * torch.randn(p.shape, generator=gen))


def greedy(model, ids):
    tokens, margins = [], []
    seq = list(ids)
    with torch.no_grad():
        for _ in range(GREEDY_STEPS):
            logits = model(torch.tensor([seq])).logits[0, -1].float()
            top = torch.topk(logits, 2)
            tokens.append(int(top.indices[0]))
            margins.append(float(top.values[0] - top.values[1]))
            seq.append(tokens[-1])
    return tokens, margins


def record_prompts(ref, vocab_size, gen):
    """The golden tensors of random prompts of PROMPT_LENGTHS tokens drawn from gen: ref's float32
    logits at every position (logits_i), its greedy continuation (greedy_i) and the top-1/top-2
    margin of each step (margin_i); with a summary per prompt."""
    golden, summary = {}, []
    for i, n in enumerate(PROMPT_LENGTHS):
        prompt = torch.randint(3, vocab_size, (n,), generator=gen).tolist()
        with torch.no_grad():
            logits = ref(torch.tensor([prompt])).logits[0].float()
        toks, margins = greedy(ref, prompt)
        golden[f"prompt_{i}"] = torch.tensor(prompt, dtype=torch.int32)
        golden[f"logits_{i}"] = logits.contiguous()
        golden[f"greedy_{i}"] = torch.tensor(toks, dtype=torch.int32)
        golden[f"margin_{i}"] = torch.tensor(margins, dtype=torch.float32)
        summary.append({"len": n, "min_margin": min(margins), "logit_std": float(logits.std())})
    return golden, summary


def make(name, cls_name, kwargs, opts, out_root, seed):
    out = os.path.join(out_root, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    gen = torch.Generator().manual_seed(seed)
    cfg = getattr(transformers, cls_name)(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, **kwargs)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    randomize(model, gen)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, max_shard_size="100KB" if opts.get("shard") else "50GB")
    model.generation_config.save_pretrained(out)
    # The reference loads the saved checkpoint as a user would, in float32. (Upcasting the bf16
    # model in memory instead would keep its rotary inv_freq buffer rounded to bf16.)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager").eval()
    golden, prompts = record_prompts(ref, cfg.vocab_size, gen)
    summary = {"prompts": prompts}
    save_file(golden, os.path.join(out, "golden.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__})
    files = sorted(os.listdir(out))
    print(name, json.dumps(summary), files)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fixtures/models")
    args = ap.parse_args()
    torch.set_num_threads(8)
    for k, (name, (cls, kw, opts)) in enumerate(FIXTURES.items()):
        make(name, cls, kw, opts, args.out, seed=1000 + k)
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "greedy_steps": GREEDY_STEPS, "prompt_lengths": PROMPT_LENGTHS,
                   "fixtures": sorted(FIXTURES)}, f, indent=1)


if __name__ == "__main__":
    main()
