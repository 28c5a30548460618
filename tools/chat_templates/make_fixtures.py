#!/usr/bin/env python3
"""Render the expected outputs the C++ chat-template tests compare against, byte for byte.

Everything is rendered by transformers itself (render_jinja_template / _compile_jinja_template,
pinned in tools/requirements-test.txt), after the same message clean-up apply_chat_template does,
so the fixtures are what a transformers user would get.

    python tools/chat_templates/make_fixtures.py
writes fixtures/chat_templates/{chat_cases.json,language_cases.json}.
"""
import json
import os
import sys

import datetime

import jinja2
import transformers
import transformers.utils.chat_template_utils as chat_template_utils
from transformers.utils.chat_template_utils import _compile_jinja_template, render_jinja_template

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conversations import CONVERSATIONS, TOOLS  # noqa: E402
from language_cases import LANGUAGE_CASES  # noqa: E402

# Templates that print today's date (strftime_now) are rendered at this fixed instant; the C++
# tests pass the same instant as RenderOptions::fixed_unix_time.
FIXED_NOW = datetime.datetime(2024, 7, 26, 12, 0, 0, tzinfo=datetime.timezone.utc)


class _FixedClock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW if tz is None else FIXED_NOW.astimezone(tz)


chat_template_utils.datetime = _FixedClock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "fixtures", "chat_templates")

# Per template: the special tokens its model's tokenizer_config.json names, and extra kwargs
# sets to render with. Templates that print today's date get a fixed date_string.
MODELS = {
    "llama-3.1": ("<|begin_of_text|>", "<|eot_id|>", [{}]),
    "llama-3.2": ("<|begin_of_text|>", "<|eot_id|>", [{"date_string": "26 Jul 2024"}]),
    "qwen2.5": ("", "<|im_end|>", [{}]),
    "qwen3": ("", "<|im_end|>", [{}, {"enable_thinking": False}, {"enable_thinking": True}]),
    "qwen3-coder": ("", "<|im_end|>", [{}]),
    "deepseek-r1-distill-qwen": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}]),
    "deepseek-v3.1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}, {"thinking": True}]),
    "mistral-nemo": ("<s>", "</s>", [{}]),
    "glm-4.6": ("", "<|endoftext|>", [{}, {"enable_thinking": False}]),
    "gemma-2": ("<bos>", "<eos>", [{}]),
    "gemma-7b": ("<bos>", "<eos>", [{}]),
    "smollm2": ("<|im_start|>", "<|im_end|>", [{}]),
    "smollm3": ("", "<|im_end|>", [{}, {"enable_thinking": False}]),
    "phi-3.5": ("<s>", "<|endoftext|>", [{}]),
    "hermes-3-tool-use": ("<|begin_of_text|>", "<|im_end|>", [{}]),
    "granite-3.3": ("<|end_of_text|>", "<|end_of_text|>", [{}]),
    "gpt-oss": ("<|startoftext|>", "<|return|>", [{}, {"reasoning_effort": "high"}]),
    "kimi-k2": ("[BOS]", "[EOS]", [{}]),
    "llama-2-style-mistral-v0.2": ("<s>", "</s>", [{}]),
    "deepseek-v2": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}]),
    "chatglm4": ("", "<|endoftext|>", [{}]),
    "mistral-large-v7": ("<s>", "</s>", [{}]),
    "functionary-v3.1": ("<|begin_of_text|>", "<|eot_id|>", [{}]),
    "command-r-plus-tool-use": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", [{}]),
    "llama-cpp-deepseek-r1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}]),
    "mistral-small-3.2": ("<s>", "</s>", [{}]),
    "nemotron-nano-v2": ("<SPECIAL_10>", "<SPECIAL_11>", [{}]),
    "granite-4.0": ("<|start_of_role|>", "<|end_of_text|>", [{}]),
    "seed-oss": ("<seed:bos>", "<seed:eos>", [{}]),
    "minimax-m2": ("]~!b[", "[e~[", [{}]),
}


def render_like_apply_chat_template(template, messages, tools, add_generation_prompt, kwargs, bos, eos):
    # apply_chat_template drops None-valued message keys, then hands special tokens and kwargs on.
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=tools,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **{"bos_token": bos, "eos_token": eos, **kwargs},
    )
    return rendered[0]


def chat_cases():
    cases = []
    for model, (bos, eos, kwarg_sets) in MODELS.items():
        with open(os.path.join(FIX, "templates", model + ".jinja"), encoding="utf-8", newline="") as f:
            template = f.read()
        for conv_name, conv in CONVERSATIONS.items():
            for kwargs in kwarg_sets:
                for agp in (True, False):
                    tools = TOOLS if conv.get("tools") else None
                    case = {
                        "template": model,
                        "conversation": conv_name,
                        "add_generation_prompt": agp,
                        "kwargs": kwargs,
                        "bos_token": bos,
                        "eos_token": eos,
                    }
                    try:
                        case["expected"] = render_like_apply_chat_template(
                            template, conv["messages"], tools, agp, kwargs, bos, eos
                        )
                    except Exception as e:  # the template rejects this conversation
                        case["error"] = f"{type(e).__name__}: {e}"
                    cases.append(case)
    return cases


def language_cases():
    out = []
    for name, template, context in LANGUAGE_CASES:
        case = {"name": name, "template": template, "context": context}
        try:
            case["expected"] = _compile_jinja_template(template).render(**context)
        except Exception as e:
            case["error"] = f"{type(e).__name__}: {e}"
        out.append(case)
    return out


def main():
    meta = {
        "jinja2": jinja2.__version__,
        "transformers": transformers.__version__,
        "fixed_unix_time": int(FIXED_NOW.timestamp()),
    }
    with open(os.path.join(FIX, "conversations.json"), "w", encoding="utf-8") as f:
        json.dump({"tools": TOOLS, "conversations": CONVERSATIONS}, f, ensure_ascii=False, indent=1)
    for file, cases in (("chat_cases.json", chat_cases()), ("language_cases.json", language_cases())):
        with open(os.path.join(FIX, file), "w", encoding="utf-8") as f:
            json.dump({"generated_with": meta, "cases": cases}, f, ensure_ascii=False, indent=1)
        ok = sum("expected" in c for c in cases)
        print(f"{file}: {len(cases)} cases, {ok} rendered, {len(cases) - ok} errors")


if __name__ == "__main__":
    main()
