"""The redhare binary's commands, as a user runs them."""
import json
import os
import shutil
import struct
import subprocess

from conftest import BIN, ROOT

FIXTURE = os.path.join(ROOT, "fixtures", "models", "llama_gqa")


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        fmt = {"I32": "i", "F32": "f"}[e["dtype"]]
        out[name] = list(struct.unpack(f"<{(end - b) // 4}{fmt}", data[b:end]))
    return out


def test_generate_json_matches_transformers_greedy():
    golden = read_safetensors(os.path.join(FIXTURE, "golden.safetensors"))
    prompt, want, margins = golden["prompt_2"], golden["greedy_2"], golden["margin_2"]
    r = run("generate", "--model", FIXTURE, "--prompt-ids", ",".join(map(str, prompt)),
            "--prompt-ids", ",".join(map(str, golden["prompt_1"])), "--max-tokens", str(len(want)),
            "--json", "--ignore-eos")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l["prompt_ids"] for l in lines] == [prompt, golden["prompt_1"]]
    got = lines[0]["output_ids"]
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"step {i}"
        if margins[i] < 2e-3:
            break


def test_info():
    r = run("info", "--model", FIXTURE, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["parameters"] == sum(info["parameters_by_dtype"].values())
    assert info["weight_bytes"] == 2 * info["parameters"]  # bf16
    r = run("info", "--model", os.path.join(ROOT, "configs", "llama-3.1-8b"))
    assert r.returncode == 0 and "8.03 B" in r.stdout, r.stdout


def test_dummy_weights_run_a_real_shape():
    r = run("generate", "--model", os.path.join(ROOT, "configs", "smollm2-135m"), "--load-format", "dummy",
            "--prompt-ids", "1,2,3", "--max-tokens", "3", "--json", "--ignore-eos")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["output_ids"]) == 3


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    cases = []
    d = tmp_path / "truncated"
    shutil.copytree(FIXTURE, d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases.append((d, "model.safetensors: tensor"))
    d = tmp_path / "arch"
    shutil.copytree(FIXTURE, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    cases.append((d, "architecture 'GPTNeoXForCausalLM' is not supported"))
    d = tmp_path / "shape"
    shutil.copytree(FIXTURE, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] += 1
    (d / "config.json").write_text(json.dumps(cfg))
    cases.append((d, "has shape"))
    d = tmp_path / "header"
    shutil.copytree(FIXTURE, d)
    (d / "model.safetensors").write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 100)
    cases.append((d, "header is not valid JSON"))
    for d, fragment in cases:
        r = run("generate", "--model", str(d), "--prompt-ids", "1,2", "--max-tokens", "2")
        assert r.returncode == 1, (d, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (d, r.stderr)
    r = run("generate", "--model", FIXTURE, "--prompt-ids", "1,x")
    assert r.returncode == 1 and "'x' is not a token id" in r.stderr


SMOL_TOKENIZER = os.path.join(ROOT, ".cache", "tokenizers", "smollm2")


def test_tokenize_matches_the_tokenizers_library():
    from tokenizers import Tokenizer
    ref = Tokenizer.from_file(os.path.join(SMOL_TOKENIZER, "tokenizer.json"))
    for text in ["Hello world", "  spaces\tand\nnewlines 12345 ünïcödé 日本語 🙂", "<|im_start|>user"]:
        r = run("tokenize", "--model", SMOL_TOKENIZER, "--json", text)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["ids"] == ref.encode(text).ids, text
        r = run("tokenize", "--model", SMOL_TOKENIZER, "--no-special", "--json", text)
        assert json.loads(r.stdout)["ids"] == ref.encode(text, add_special_tokens=False).ids, text


def test_chat_template_matches_jinja2(tmp_path):
    import jinja2.sandbox
    cfg = json.load(open(os.path.join(SMOL_TOKENIZER, "tokenizer_config.json")))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    f = tmp_path / "conv.json"
    f.write_text(json.dumps(messages))
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    want = env.from_string(cfg["chat_template"]).render(messages=messages, add_generation_prompt=True,
                                                        bos_token=cfg["bos_token"], eos_token=cfg["eos_token"])
    r = run("chat-template", "--model", SMOL_TOKENIZER, "--messages", str(f))
    assert r.returncode == 0, r.stderr
    assert r.stdout == want or r.stdout == want + "\n"
