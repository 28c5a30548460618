#!/usr/bin/env python3
"""The FP8 golden fixture: a tiny Llama checkpoint quantized by `redhare convert`, and what Hugging
Face transformers computes on it. Three steps, the first and last on a machine with PyTorch and
transformers (the GPU machine has both), the middle one with redhare:

    python3 tools/make_fp8_fixture.py base --out /tmp/llama_fp8_base
    redhare convert --model /tmp/llama_fp8_base --out fixtures/models/llama_fp8_block
    python3 tools/make_fp8_fixture.py golden fixtures/models/llama_fp8_block \
        [--drift-json fixtures/models/bf16_drift.json]

`base` writes a bf16 Llama whose projection shapes are multiples of 128 (the FP8 block), with the
golden fixtures' weight scales. `golden` writes golden.safetensors in the layout of
tools/make_golden_fixtures.py (prompt_i, logits_i, greedy_i, margin_i) from transformers running
the FP8 checkpoint's weights dequantized exactly (each e4m3 value times its block's
weight_scale_inv) in float32 on the CPU: the reference redhare's FP8 path must reproduce, as it
multiplies out the same values. It also prints how far transformers' own FP8 path (the checkpoint
loaded as it is, on a GPU: activations quantized to e4m3 per 128-value group) lands from that
reference, and the drift of the dequantized model run in bfloat16 (the bound the CUDA tensor-core
mode is held to; written into --drift-json under the fixture's name).
"""
import argparse
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden_fixtures import GREEDY_STEPS, randomize, record_prompts  # noqa: E402

CONFIG = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=False)
SEED = 2000


def base(out):
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    gen = torch.Generator().manual_seed(SEED)
    cfg = transformers.LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0, **CONFIG)
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    randomize(model, gen)
    model.to(torch.bfloat16).save_pretrained(out)
    model.generation_config.save_pretrained(out)
    print("wrote", out, sorted(os.listdir(out)))


def dequantized_state(fp8_dir, block):
    state = {}
    for f in sorted(os.listdir(fp8_dir)):
        if f.endswith(".safetensors") and f != "golden.safetensors":
            state.update(load_file(os.path.join(fp8_dir, f)))
    out = {}
    for name, t in state.items():
        if name.endswith("_scale_inv"):
            continue
        scale = state.get(name + "_scale_inv")
        if scale is None:
            out[name] = t.float()
            continue
        assert t.dtype == torch.float8_e4m3fn, (name, t.dtype)
        rows, cols = t.shape
        s = scale.float().repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
        out[name] = t.float() * s  # one rounding in float32, as redhare dequantizes
    return out


def max_drift(model, golden, device):
    worst = 0.0
    i = 0
    with torch.no_grad():
        while f"prompt_{i}" in golden:
            got = model(torch.tensor([golden[f"prompt_{i}"].tolist()], device=device)).logits[0].float().cpu()
            worst = max(worst, (got - golden[f"logits_{i}"]).abs().max().item())
            i += 1
    return worst


def make_golden(fp8_dir, drift_json):
    cfg_json = json.load(open(os.path.join(fp8_dir, "config.json")))
    q = cfg_json.get("quantization_config", {})
    assert q.get("quant_method") == "fp8", "not an FP8 checkpoint: " + fp8_dir
    block = q.get("weight_block_size", [128, 128])
    assert block[0] == block[1], block
    plain = {k: v for k, v in cfg_json.items() if k != "quantization_config"}
    cfg = transformers.LlamaConfig(**plain)
    ref = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    missing, unexpected = ref.load_state_dict(dequantized_state(fp8_dir, block[0]), strict=False)
    assert not unexpected, unexpected
    # Only buffers may be missing (rotary inv_freq is computed, not stored).
    assert all("rotary" in m for m in missing), missing

    golden, summary = record_prompts(ref, cfg.vocab_size, torch.Generator().manual_seed(SEED + 1))
    save_file(golden, os.path.join(fp8_dir, "golden.safetensors"),
              metadata={"transformers": transformers.__version__, "torch": torch.__version__,
                        "reference": "FP8 weights dequantized to float32"})
    print("golden", json.dumps(summary), f"greedy steps {GREEDY_STEPS}")

    name = os.path.basename(os.path.normpath(fp8_dir))
    drift = max_drift(ref.to(torch.bfloat16), golden, "cpu")
    print(f"{name}: dequantized weights in bfloat16, max |logit - float32 reference| {drift:.4f}")
    if drift_json:
        d = json.load(open(drift_json))
        d["max_abs_logit_drift_bf16"][name] = round(drift, 4)
        with open(drift_json, "w") as f:
            json.dump(d, f, indent=1, sort_keys=True)
            f.write("\n")

    if torch.cuda.is_available():
        try:
            native = transformers.AutoModelForCausalLM.from_pretrained(fp8_dir, device_map="cuda").eval()
            print(f"{name}: transformers' own FP8 path (GPU), max |logit - float32 reference| "
                  f"{max_drift(native, golden, 'cuda'):.4f}")
        except Exception as e:  # the comparison is informative only
            print(f"{name}: transformers could not run the FP8 checkpoint itself: {type(e).__name__}: {e}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("base")
    b.add_argument("--out", required=True)
    g = sub.add_parser("golden")
    g.add_argument("fp8_dir")
    g.add_argument("--drift-json")
    args = ap.parse_args()
    torch.set_num_threads(8)
    if args.cmd == "base":
        base(args.out)
    else:
        make_golden(args.fp8_dir, args.drift_json)


if __name__ == "__main__":
    main()
