"""Auth with priorities, queue limits and graceful shutdown, each on its own server process."""
import json
import signal
import threading
import time

import openai
import pytest

from conftest import Server
from test_openai_api import client, http


def test_api_keys(tiny_model):
    s = Server(tiny_model, 'serve.api_keys=[{key: alpha-secret, priority: 0}, {key: beta, priority: 5}]')
    try:
        with pytest.raises(openai.AuthenticationError):
            client(s, key="wrong").completions.create(model="", prompt="hi", max_tokens=1)
        assert http(s, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1})[0] == 401
        for key in ("alpha-secret", "beta"):
            assert len(client(s, key=key).completions.create(model="", prompt="hi", max_tokens=1).choices) == 1
        assert http(s, "GET", "/health")[0] == 200  # health stays open for load balancers
    finally:
        assert s.stop() == 0


def test_queue_full_is_429_with_retry_after(tiny_model):
    s = Server(tiny_model, "infer.max_waiting=2", "infer.max_reqs=1")
    try:
        results = []

        def long_request():
            results.append(http(s, "POST", "/v1/completions", {"prompt": "go", "max_tokens": 300}))

        threads = [threading.Thread(target=long_request) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        codes = sorted(r[0] for r in results)
        assert 429 in codes and 200 in codes, codes
        limited = [r for r in results if r[0] == 429][0]
        assert limited[2].get("Retry-After") == "1"
        assert json.loads(limited[1])["error"]["type"] == "rate_limit_error"
    finally:
        assert s.stop() == 0


def test_sigterm_drains_running_requests(tiny_model):
    s = Server(tiny_model)
    out = {}

    def run():
        out["r"] = client(s).completions.create(model="", prompt="drain me", max_tokens=200, temperature=0)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGTERM)
    t.join(120)
    assert s.proc.wait(60) == 0
    assert out["r"].usage.completion_tokens == 200
    assert "draining" in s.read_log()


def test_fp8_kv_cache_holds_more_blocks_and_serves(tiny_model):
    """infer.cache_type=fp8: the same KV budget holds blocks of 1 + 4 / head_dim bytes per value
    instead of 2, requests are served from it, and a seeded sampled request repeats exactly."""
    import os
    import re
    with open(os.path.join(tiny_model, "config.json")) as f:
        cfg = json.load(f)
    layers, kv_heads = cfg["num_hidden_layers"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    budget, block = 4 << 20, 16
    blocks = {}
    for cache_type, per_value in (("bf16", 2 * head_dim), ("fp8", head_dim + 4)):
        s = Server(tiny_model, f"infer.cache_type={cache_type}", f"infer.kv_cache_bytes={budget}",
                   f"infer.block_size={block}")
        try:
            log = s.read_log()
            m = re.search(r"KV cache: (\d+) blocks", log)
            assert m, log
            blocks[cache_type] = int(m.group(1))
            assert blocks[cache_type] == budget // (2 * layers * block * kv_heads * per_value), log
            if cache_type == "fp8":
                assert "f8_e4m3" in log
                c = client(s)
                kw = dict(model="", prompt="The weather today", max_tokens=12, temperature=0.8, top_p=0.9,
                          seed=7, logprobs=2)
                a, b = c.completions.create(**kw), c.completions.create(**kw)
                assert a.choices[0].text == b.choices[0].text and a.usage.completion_tokens == 12
                assert len(a.choices[0].logprobs.top_logprobs) == 12
        finally:
            assert s.stop() == 0
    assert blocks["fp8"] > 1.5 * blocks["bf16"]


def test_bad_kv_cache_type_is_refused(tiny_model):
    import subprocess
    from conftest import BIN
    r = subprocess.run([BIN, "serve", f"models.ckpt_dir={tiny_model}", "infer.cache_type=fp4"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "'fp4' is not one of f32, bf16, f16, fp8" in r.stderr + r.stdout
