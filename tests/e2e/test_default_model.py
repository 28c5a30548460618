"""`redhare serve` with no model given serves the built-in SmolLM2-135M-Instruct, and it answers
simple factual questions plausibly (scripts/fetch_default_model.sh puts it in place)."""
import os
import subprocess

import pytest

from conftest import BIN, Server
from test_openai_api import client


def default_model():
    home = os.environ.get("REDHARE_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "redhare")
    return os.path.join(home, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    if not os.path.exists(default_model()):
        raise RuntimeError(f"{default_model()} is missing: run scripts/fetch_default_model.sh")
    # The Server helper passes models.ckpt_dir; an empty value means "the default model".
    s = Server(str(tmp_path_factory.mktemp("default")), "models.ckpt_dir=")
    yield s
    assert s.stop() == 0, s.read_log()


@pytest.mark.parametrize("question,answer", [
    ("What is the capital of France?", "Paris"),
    ("Name three primary colors.", "blue"),
])
def test_factual_answers(default_server, question, answer):
    r = client(default_server).chat.completions.create(
        model="", messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0)
    text = r.choices[0].message.content
    assert answer.lower() in text.lower(), text
    assert r.choices[0].finish_reason == "stop"  # the model ends its answer with <|im_end|>
    assert "<|im_end|>" not in text


def test_model_is_named_after_the_file(default_server):
    assert client(default_server).models.list().data[0].id == "SmolLM2-135M-Instruct.Q4_1"


def test_generate_uses_the_default_model():
    r = subprocess.run([BIN, "generate", "--chat", "--prompt", "What is the capital of France?",
                        "--max-tokens", "20"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
