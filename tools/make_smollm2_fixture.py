#!/usr/bin/env python3
"""Records what Hugging Face transformers computes for the real SmolLM2-135M-Instruct GGUF (the
model redhare serves by default): transformers dequantizes every GGUF tensor to float and runs the
model in float32. For several chat conversations rendered with the GGUF's own chat template it
saves the prompt ids, the last-position logits and a 24-token greedy continuation with the top-1
/ top-2 margin of each step.

    python3 tools/make_smollm2_fixture.py --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out fixtures/smollm2/golden.safetensors

Needs torch, transformers and gguf (run it on the GPU machine; the reference runs on the CPU).
"""
import argparse
import json
import os

import torch
import transformers
from safetensors.torch import save_file

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Name three primary colors."}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "What is 12 + 30?"},
     {"role": "assistant", "content": "12 + 30 = 42."},
     {"role": "user", "content": "And 42 * 2?"}],
]
STEPS = 24


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    d, f = os.path.split(os.path.abspath(args.gguf))
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    torch.set_num_threads(16)
    out = {}
    for i, conv in enumerate(CONVERSATIONS):
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = list(ids)
        seq = list(ids)
        toks, margins = [], []
        with torch.no_grad():
            first = model(torch.tensor([ids])).logits[0, -1].float()
            for _ in range(STEPS):
                logits = model(torch.tensor([seq])).logits[0, -1].float()
                top = torch.topk(logits, 2)
                toks.append(int(top.indices[0]))
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(toks[-1])
        out[f"prompt_{i}"] = torch.tensor(ids, dtype=torch.int32)
        out[f"logits_{i}"] = first.contiguous()
        out[f"greedy_{i}"] = torch.tensor(toks, dtype=torch.int32)
        out[f"margin_{i}"] = torch.tensor(margins, dtype=torch.float32)
        print(i, json.dumps(conv), "->", repr(tok.decode(toks)), "min margin", min(margins))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    save_file(out, args.out, metadata={"transformers": transformers.__version__, "torch": torch.__version__,
                                       "gguf": os.path.basename(args.gguf),
                                       "conversations": json.dumps(CONVERSATIONS)})


if __name__ == "__main__":
    main()
