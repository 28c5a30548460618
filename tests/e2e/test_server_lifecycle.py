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
