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
    # The FP8-products choice is checked even where no GPU uses it.
    r = run("generate", "--model", os.path.join(ROOT, "configs", "smollm2-135m"), "--load-format", "dummy",
            "--prompt-ids", "1,2,3", "--max-tokens", "1", "--fp8-products", "int4")
    assert r.returncode != 0 and "'int4' is not one of auto, bf16, fp8" in r.stderr, r.stderr


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


def write_safetensors(path, tensors):
    """tensors: name -> (shape, list of float32 values)."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def e4m3(byte):
    """An e4m3 ("fn") byte as a float, written out from the format's definition."""
    sign = -1.0 if byte & 0x80 else 1.0
    e, m = (byte >> 3) & 0xF, byte & 7
    assert not (e == 15 and m == 7), "NaN code"
    return sign * (m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))


def test_convert_writes_block_scaled_fp8_that_serves(tmp_path):
    import random
    rnd = random.Random(7)
    H, I, V = 128, 256, 64
    src, out = tmp_path / "src", tmp_path / "fp8"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": H, "intermediate_size": I,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": V,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
        "torch_dtype": "float32"}))
    def mat(n, k, scale):
        return ([n, k], [rnd.gauss(0, scale) for _ in range(n * k)])
    p = "model.layers.0."
    tensors = {"model.embed_tokens.weight": mat(V, H, 1.0), "model.norm.weight": ([H], [1.0] * H),
               p + "input_layernorm.weight": ([H], [1.0] * H), p + "post_attention_layernorm.weight": ([H], [1.0] * H),
               p + "self_attn.q_proj.weight": mat(H, H, 0.09), p + "self_attn.k_proj.weight": mat(64, H, 0.09),
               p + "self_attn.v_proj.weight": mat(64, H, 0.09), p + "self_attn.o_proj.weight": mat(H, H, 0.09),
               p + "mlp.gate_proj.weight": mat(I, H, 0.09), p + "mlp.up_proj.weight": mat(I, H, 0.09),
               p + "mlp.down_proj.weight": mat(H, I, 0.06)}
    tensors[p + "self_attn.o_proj.weight"][1][5] = 2.5  # an outlier in one 128x128 block
    write_safetensors(src / "model.safetensors", tensors)

    r = run("convert", "--model", str(src), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "7 weights quantized to FP8" in r.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                             "weight_block_size": [128, 128]}

    # Read the FP8 tensors back and check them against the format, independently of redhare.
    with open(out / "model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    for name, (shape, values) in tensors.items():
        if not name.endswith("_proj.weight"):
            assert header[name]["dtype"] == "F32"
            continue
        e, s = header[name], header[name + "_scale_inv"]
        rows, cols = shape
        assert e["dtype"] == "F8_E4M3" and e["shape"] == shape
        assert s["dtype"] == "F32" and s["shape"] == [(rows + 127) // 128, cols // 128]
        q = data[e["data_offsets"][0]:e["data_offsets"][1]]
        sb, se = s["data_offsets"]
        scales = struct.unpack(f"<{(se - sb) // 4}f", data[sb:se])
        for br in range(s["shape"][0]):
            for bc in range(s["shape"][1]):
                block = [(r, c) for r in range(br * 128, min(rows, br * 128 + 128)) for c in range(bc * 128, bc * 128 + 128)]
                amax = max(abs(values[r * cols + c]) for r, c in block)
                scale = scales[br * s["shape"][1] + bc]
                assert abs(scale - amax / 448) <= 1e-6 * scale
                for r, c in block[::7]:
                    v, back = values[r * cols + c], e4m3(q[r * cols + c]) * scale
                    assert abs(back - v) <= max(abs(v) / 16, 2.0 ** -10 * scale) * 1.001, (name, r, c)

    r = run("info", "--model", str(out), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["parameters_by_dtype"]["f8_e4m3"] == 2 * H * H + 2 * 64 * H + 3 * H * I
    r = run("generate", "--model", str(out), "--prompt-ids", "1,2,3", "--max-tokens", "4", "--json", "--ignore-eos")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["output_ids"]) == 4
    r = run("convert", "--model", str(src), "--out", str(out))
    assert r.returncode != 0 and "already holds model.safetensors" in r.stderr and len(r.stderr.strip().splitlines()) == 1
