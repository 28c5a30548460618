"""`redhare bench` against a real `redhare serve` on the tiny model, and in-process.

Timings are never asserted (they are what the tool measures, not what it must produce). What is
asserted is accounting: every request the workload holds was sent, answered and counted, with
the token counts the workload asked for, and the server's own counters (/metrics) agree with
the benchmark's report.
"""
import json
import os
import re
import subprocess
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import BIN, ROOT, Server, free_port

METRIC_KEYS = ["completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
               "request_throughput", "input_throughput", "output_throughput", "total_token_throughput"] + [
    f"{stat}_{name}_ms" for name in ("ttft", "tpot", "itl", "e2el")
    for stat in ("mean", "median", "std", "p90", "p99")]


@pytest.fixture(scope="module")
def bench_server(tiny_model):
    # Its own server, so the /metrics deltas below count only this module's requests.
    s = Server(tiny_model, "serve.max_body_bytes=1000000")
    yield s
    assert s.stop() == 0, s.read_log()


def bench(*args, timeout=300):
    return subprocess.run([BIN, "bench", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def serve(server, *args, **kw):
    return bench("serve", "--base-url", server.url, *args, **kw)


def server_counters(server):
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def ok_requests(counters):
    return counters.get('redhare_requests_total{status="200"}', 0)


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_serve_random_counts_every_request(bench_server, tmp_path):
    result = tmp_path / "results.jsonl"
    before = server_counters(bench_server)
    r = serve(bench_server, "--num-prompts", 20, "--input-len", 16, "--output-len", 8, "--max-concurrency", 4,
              "--warmup", 3, "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Serving Benchmark Result" in r.stdout
    after = server_counters(bench_server)
    # 3 warm-up + 20 measured requests reached the server and were answered there.
    assert ok_requests(after) - ok_requests(before) == 23
    assert after["redhare_generation_tokens_total"] - before["redhare_generation_tokens_total"] == 23 * 8

    [line] = read_lines(result)
    assert list(line) == ["date", "redhare_version", "config", "machine", "server", "metrics"]
    m = line["metrics"]
    for k in METRIC_KEYS:
        assert isinstance(m[k], (int, float)), k
    assert m["completed"] == 20 and m["failed"] == 0 and m["errors"] == []
    # Token-id prompts have exactly --input-len tokens; ignore_eos makes outputs exactly --output-len.
    assert m["total_input_tokens"] == 20 * 16
    assert m["total_output_tokens"] == 20 * 8
    # Orderings that hold for any timings: a percentile table is monotone, TTFT is part of E2E.
    for name in ("ttft", "tpot", "itl", "e2el"):
        assert 0 <= m[f"median_{name}_ms"] <= m[f"p90_{name}_ms"] <= m[f"p99_{name}_ms"]
    assert m["mean_ttft_ms"] <= m["mean_e2el_ms"]
    assert line["config"]["num_prompts"] == 20 and line["config"]["max_concurrency"] == 4
    assert line["config"]["prompt_format"] == "ids"
    assert line["machine"]["cpu_cores"] >= 1 and line["machine"]["cpu_model"]
    assert line["server"]["version"] and line["server"]["model"] == os.path.basename(bench_server_model(bench_server))


def bench_server_model(server):
    with urllib.request.urlopen(server.url + "/v1/models", timeout=10) as r:
        return json.loads(r.read())["data"][0]["id"]


def check_metrics_against_numpy(line):
    """Recomputes every summary figure from the per-request arrays (--save-detailed) as vLLM's
    benchmark does with numpy, and compares."""
    m, q = line["metrics"], line["requests"]
    ok = np.array(q["ok"])
    assert m["completed"] == ok.sum() and m["failed"] == (~ok).sum()
    out = np.array(q["output_tokens"])[ok]
    ttft, e2el = np.array(q["ttft_s"])[ok], np.array(q["e2el_s"])[ok]
    tpot = ((e2el - ttft) / np.maximum(out - 1, 1))[out > 1]
    itl = np.array([x for i, gaps in enumerate(q["itl_s"]) if ok[i] for x in gaps])
    assert m["total_output_tokens"] == out.sum()
    assert m["total_input_tokens"] == np.array(q["prompt_tokens"])[ok].sum()
    assert m["output_throughput"] == pytest.approx(out.sum() / m["duration"], rel=1e-9)
    assert m["request_throughput"] == pytest.approx(ok.sum() / m["duration"], rel=1e-9)
    for name, v in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        assert len(v) > 0, name
        assert m[f"mean_{name}_ms"] == pytest.approx(np.mean(v) * 1e3, rel=1e-9, abs=1e-9), name
        assert m[f"median_{name}_ms"] == pytest.approx(np.median(v) * 1e3, rel=1e-9, abs=1e-9), name
        assert m[f"std_{name}_ms"] == pytest.approx(np.std(v) * 1e3, rel=1e-6, abs=1e-9), name
        for p in (90, 99):
            assert m[f"p{p}_{name}_ms"] == pytest.approx(np.percentile(v, p) * 1e3, rel=1e-9, abs=1e-9), name
    # Each request's first token comes before its last, and no gap is negative.
    assert (ttft <= e2el).all() and (itl >= 0).all()


def test_metrics_are_vllms_definitions(bench_server, tmp_path):
    result = tmp_path / "r.jsonl"
    # Uneven lengths (range ratio) so that means, medians and percentiles differ.
    r = serve(bench_server, "--num-prompts", 12, "--input-len", 20, "--output-len", 10, "--range-ratio", 0.5,
              "--max-concurrency", 3, "--save-detailed", "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    [line] = read_lines(result)
    assert len(set(line["requests"]["output_tokens"])) > 1
    check_metrics_against_numpy(line)
    # --max-concurrency 3: whenever a request was sent, at most 3 (itself included) were in flight.
    q = line["requests"]
    spans = [(s, s + e) for s, e in zip(q["start_s"], q["e2el_s"])]
    for s0, _ in spans:
        assert sum(1 for a, b in spans if a <= s0 < b) <= 3


def test_text_prompts_have_the_requested_length(bench_server, tmp_path):
    # Text prompts are cut and checked with the server's /tokenize; the server's usage then
    # reports the prompt length (the SmolLM2 tokenizer adds no BOS).
    result = tmp_path / "r.jsonl"
    r = serve(bench_server, "--prompt-format", "text", "--num-prompts", 6, "--input-len", 40, "--output-len", 3,
              "--request-rate", 50, "--burstiness", 0.5, "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_lines(result)[0]["metrics"]
    assert m["completed"] == 6 and m["total_output_tokens"] == 18
    assert m["total_input_tokens"] == 6 * 40
    assert read_lines(result)[0]["config"]["request_rate"] == 50


def test_chat_endpoint(bench_server, tmp_path):
    result = tmp_path / "r.jsonl"
    r = serve(bench_server, "--endpoint", "/v1/chat/completions", "--num-prompts", 5, "--input-len", 20,
              "--output-len", 6, "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_lines(result)[0]["metrics"]
    assert m["completed"] == 5 and m["failed"] == 0
    assert m["total_output_tokens"] == 5 * 6
    # The chat template wraps the 20-token message, and usage counts the whole prompt.
    assert m["total_input_tokens"] > 5 * 20


def test_shared_prefix_hits_the_prefix_cache(bench_server, tmp_path):
    result = tmp_path / "r.jsonl"
    before = server_counters(bench_server)
    # One request at a time, so each group's first prompt is cached before the next one arrives.
    r = serve(bench_server, "--dataset", "shared-prefix", "--prefix-len", 48, "--num-groups", 2, "--input-len", 8,
              "--num-prompts", 6, "--output-len", 2, "--max-concurrency", 1, "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_lines(result)[0]["metrics"]
    assert m["completed"] == 6 and m["total_input_tokens"] == 6 * (48 + 8)
    hits = server_counters(bench_server)["redhare_prefix_cache_hits_total"] - before["redhare_prefix_cache_hits_total"]
    # 4 of the 6 prompts find their group's 48-token prefix (3 blocks of 16) already cached.
    assert hits >= 4 * 48


def test_jsonl_dataset(bench_server, tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "The capital of France is"}\n\n'
                    '{"prompt": "Once upon a time", "max_tokens": 3}\n'
                    '{"prompt": "1, 2, 3,"}\n')
    result = tmp_path / "r.jsonl"
    r = serve(bench_server, "--dataset", "jsonl", "--dataset-path", data, "--num-prompts", 0, "--output-len", 5,
              "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_lines(result)[0]["metrics"]
    assert m["completed"] == 3 and m["total_output_tokens"] == 5 + 3 + 5

    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "system", "content": "Be terse."},
                                             {"role": "user", "content": "Hi"}], "max_tokens": 4}) + "\n")
    r = serve(bench_server, "--endpoint", "/v1/chat/completions", "--dataset", "jsonl", "--dataset-path", chat,
              "--num-prompts", 3, "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    m = read_lines(result)[1]["metrics"]
    assert m["completed"] == 3 and m["total_output_tokens"] == 12

    # "messages" cannot go to /v1/completions: a clear error before anything is sent.
    r = serve(bench_server, "--dataset", "jsonl", "--dataset-path", chat)
    assert r.returncode == 1 and "needs --endpoint /v1/chat/completions" in r.stderr


def test_chitu_rounds(bench_server, tmp_path):
    result = tmp_path / "r.jsonl"
    r = serve(bench_server, "--batch-size", 3, "--iterations", 3, "--input-len", 12, "--output-len", 4,
              "--save-detailed", "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    line = read_lines(result)[0]
    assert line["config"]["batch_size"] == 3 and line["config"]["iterations"] == 3
    assert line["metrics"]["completed"] == 9 and line["metrics"]["total_output_tokens"] == 36
    # A round starts only when every request of the round before has finished.
    q = line["requests"]
    ends = [s + e for s, e in zip(q["start_s"], q["e2el_s"])]
    for k in (1, 2):
        assert min(q["start_s"][3 * k:3 * k + 3]) >= max(ends[3 * k - 3:3 * k])


def test_sweep_rows_result_lines_and_svg(bench_server, tmp_path):
    plot, result = tmp_path / "sweep.svg", tmp_path / "r.jsonl"
    before = server_counters(bench_server)
    r = bench("sweep", "--base-url", bench_server.url, "--max-concurrency", 4, "--num-prompts", 4,
              "--input-len", 40, "--output-len", 4, "--plot", plot, "--result-file", result, "--seed", 1000)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [l.split() for l in r.stdout.splitlines()[1:] if l.strip()]
    assert [row[0] for row in rows] == ["1", "2", "4"]
    assert all(row[1] == "4" and row[2] == "0" for row in rows)  # completed, failed
    lines = read_lines(result)
    assert [l["config"]["max_concurrency"] for l in lines] == [1, 2, 4]
    assert all(l["metrics"]["total_output_tokens"] == 16 for l in lines)
    # Each level sends fresh random prompts (its own seed), so none is served from the prefix
    # cache filled by the level before.
    assert [l["config"]["seed"] for l in lines] == [1000, 1001, 1002]
    after = server_counters(bench_server)
    assert after["redhare_prefix_cache_hits_total"] == before["redhare_prefix_cache_hits_total"]
    svg = ET.parse(plot).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == ns + "svg"
    # Two panels (throughput vs TPOT, vs TTFT), each with one point and one label per level.
    panels = svg.findall(f"{ns}g")
    assert len(panels) == 2
    for p in panels:
        assert len(p.findall(f"{ns}circle")) == 3
        assert len(p.find(f"{ns}polyline").get("points").split()) == 3
        labels = [t.text for t in p.findall(f"{ns}text")]
        assert {"c=1", "c=2", "c=4"} <= set(labels)
        assert "output throughput (tok/s)" in labels


def test_failed_requests_are_counted_with_their_error(bench_server, tmp_path):
    result = tmp_path / "r.jsonl"
    r = serve(bench_server, "--model", "no-such-model", "--num-prompts", 3, "--input-len", 4, "--output-len", 2,
              "--result-file", result)
    assert r.returncode == 1
    m = read_lines(result)[0]["metrics"]
    assert m["completed"] == 0 and m["failed"] == 3
    assert "does not exist" in m["errors"][0] and "HTTP 404" in m["errors"][0]
    assert "does not exist" in r.stdout


def test_unreachable_server_is_a_clear_error():
    port = free_port()
    r = serve(type("S", (), {"url": f"http://127.0.0.1:{port}"})(), "--num-prompts", 2)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "redhare bench: error: cannot reach" in r.stderr and f"127.0.0.1:{port}/v1/models" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--request-rate", "fast"], "--request-rate"),
    (["--dataset", "sharegpt"], "is not one of random, shared-prefix, jsonl"),
    (["--batch-size", "4"], "needs both --batch-size and --iterations"),
    (["--dataset", "jsonl", "--dataset-path", "/nonexistent.jsonl"], "cannot open"),
])
def test_bad_options(bench_server, args, message):
    r = serve(bench_server, *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr


def test_offline_dummy_model(tmp_path):
    result = tmp_path / "r.jsonl"
    r = bench("offline", "--model", os.path.join(ROOT, "configs", "smollm2-135m"), "--load-format", "dummy",
              "--threads", 2, "--num-prompts", 4, "--input-len", 8, "--output-len", 3, "--max-concurrency", 2,
              "--kv-cache-gb", 0.05, "--save-detailed", "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Offline Benchmark Result" in r.stdout
    line = read_lines(result)[0]
    assert line["config"]["mode"] == "offline" and line["server"]["architecture"] == "LlamaForCausalLM"
    m = line["metrics"]
    assert m["completed"] == 4 and m["failed"] == 0
    assert m["total_input_tokens"] == 32 and m["total_output_tokens"] == 12
    check_metrics_against_numpy(line)


def test_offline_text_workloads_with_tokenizer(tiny_model, tmp_path):
    # The tiny model has the SmolLM2 tokenizer: text prompts of exact length, shared prefixes.
    result = tmp_path / "r.jsonl"
    r = bench("offline", "--model", tiny_model, "--threads", 2, "--prompt-format", "text", "--num-prompts", 3,
              "--input-len", 30, "--output-len", 2, "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    r = bench("offline", "--model", tiny_model, "--threads", 2, "--dataset", "shared-prefix", "--prefix-len", 32,
              "--num-groups", 1, "--input-len", 4, "--num-prompts", 3, "--output-len", 2, "--result-file", result)
    assert r.returncode == 0, r.stdout + r.stderr
    text, shared = read_lines(result)
    # encode(text, add_special=True) adds nothing for SmolLM2, so the engine sees exactly 30.
    assert text["metrics"]["completed"] == 3 and text["metrics"]["total_input_tokens"] == 90
    assert shared["metrics"]["completed"] == 3 and shared["metrics"]["total_input_tokens"] == 3 * 36


def test_api_key(tiny_model, tmp_path):
    s = Server(tiny_model, "serve.api_keys=[bench-secret]")
    try:
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        args = [BIN, "bench", "serve", "--base-url", s.url, "--num-prompts", 2, "--input-len", 4, "--output-len", 2]
        args = list(map(str, args))
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 1 and "HTTP 401" in r.stderr and "API key" in r.stderr, r.stderr
        r = subprocess.run(args + ["--api-key", "bench-secret"], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0 and re.search(r"Successful requests:\s+2\n", r.stdout), r.stdout + r.stderr
        # As the openai client does, OPENAI_API_KEY is the default key.
        r = subprocess.run(args, capture_output=True, text=True, env={**env, "OPENAI_API_KEY": "bench-secret"}, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        assert s.stop() == 0, s.read_log()
