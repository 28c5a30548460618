"""The OpenAI API as the official `openai` client sees it, against a real redhare server."""
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest


def client(server, key="unused"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def http(server, method, path, body=None, headers=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.url + path, data=data, method=method)
    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def metrics(server):
    status, text, _ = http(server, "GET", "/metrics")
    assert status == 200
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of France?"}]


def test_models_health_version(server, tiny_model):
    models = client(server).models.list()
    assert [m.id for m in models.data] == [os.path.basename(tiny_model)]
    assert http(server, "GET", "/health")[0] == 200
    status, body, _ = http(server, "GET", "/version")
    assert status == 200 and "version" in json.loads(body)


def test_chat_non_streaming(server):
    r = client(server).chat.completions.create(model=client(server).models.list().data[0].id,
                                               messages=MESSAGES, max_tokens=7, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7
    assert r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7


def test_chat_streaming_matches_non_streaming(server):
    c = client(server)
    whole = c.chat.completions.create(model="", messages=MESSAGES, max_tokens=12, temperature=0)
    chunks = list(c.chat.completions.create(model="", messages=MESSAGES, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_completions_prompt_forms(server):
    c = client(server)
    ids = json.loads(http(server, "POST", "/tokenize", {"prompt": "Hello there"})[1])["tokens"]
    for prompt, n_choices in [("Hello there", 1), (["Hello there", "Bye"], 2), (ids, 1), ([ids, ids[:1]], 2)]:
        r = c.completions.create(model="", prompt=prompt, max_tokens=3, temperature=0)
        assert len(r.choices) == n_choices
        assert sorted(ch.index for ch in r.choices) == list(range(n_choices))
    # The same prompt as text and as ids gives the same continuation.
    a = c.completions.create(model="", prompt="Hello there", max_tokens=5, temperature=0)
    b = c.completions.create(model="", prompt=ids, max_tokens=5, temperature=0)
    assert a.choices[0].text == b.choices[0].text
    e = c.completions.create(model="", prompt="Hello there", max_tokens=2, temperature=0, echo=True)
    assert e.choices[0].text.startswith("Hello there")


def test_logprobs(server):
    c = client(server)
    r = c.chat.completions.create(model="", messages=MESSAGES, max_tokens=4, temperature=0,
                                  logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    for tok in content:
        assert tok.logprob <= 0
        tops = [t.logprob for t in tok.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert tok.logprob == pytest.approx(tops[0])  # greedy takes the most likely token
    r = c.completions.create(model="", prompt="Hello", max_tokens=3, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and len(lp.top_logprobs) == 3
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    ids = c.completions.create(model="", prompt="Hello", max_tokens=2, temperature=0, logprobs=1,
                               extra_body={"return_tokens_as_token_ids": True})
    assert all(re.fullmatch(r"token_id:\d+", t) for t in ids.choices[0].logprobs.tokens)


def test_stop_strings(server):
    c = client(server)
    full = c.completions.create(model="", prompt="Once upon a time", max_tokens=20, temperature=0).choices[0].text
    assert len(full) > 6
    stop = full[3:6]
    r = c.completions.create(model="", prompt="Once upon a time", max_tokens=20, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[:full.index(stop)]
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="", prompt="Once upon a time", max_tokens=20, temperature=0, stop=[stop], stream=True))
    assert streamed == r.choices[0].text


def test_seed_and_n(server):
    c = client(server)
    kw = dict(model="", messages=MESSAGES, max_tokens=10, temperature=1.0, seed=1234)
    a = c.chat.completions.create(**kw)
    b = c.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    r = c.chat.completions.create(n=3, **kw)
    assert len(r.choices) == 3
    assert r.choices[0].message.content == a.choices[0].message.content
    assert r.usage.completion_tokens == 30


def test_64_concurrent_streaming_clients(server):
    c = client(server)
    # Distinct random token-id prompts, so that a stream mixed up with another would show.
    prompts = [tuple((i * 7919 + k * 104729 + 17) % 49000 for k in range(6)) for i in range(64)]
    expected = {p: c.completions.create(model="", prompt=list(p), max_tokens=8, temperature=0).choices[0].text
                for p in prompts}
    results, errors = {}, []

    def run(p):
        try:
            text = "".join(ch.choices[0].text for ch in client(server).completions.create(
                model="", prompt=list(p), max_tokens=8, temperature=0, stream=True))
            results[p] = text
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(f"{p}: {e!r}")

    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert len(results) == 64
    for p, text in expected.items():
        assert results[p] == text, p  # batching never changes a greedy result
    assert len(set(results.values())) > 32  # the outputs really differ


@pytest.mark.parametrize("body,param", [
    ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
    ({"messages": MESSAGES, "temperature": 5}, "temperature"),
    ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    ({"messages": MESSAGES, "top_p": 1.5}, "top_p"),
    ({"messages": MESSAGES, "n": 0}, "n"),
    ({"messages": MESSAGES, "stop": 5}, "stop"),
    ({"messages": "hi"}, "messages"),
    ({}, "messages"),
    ({"messages": MESSAGES, "logprobs": True, "top_logprobs": 50}, "top_logprobs"),
])
def test_bad_parameters_are_400_naming_the_field(server, body, param):
    status, text, _ = http(server, "POST", "/v1/chat/completions", body)
    assert status == 400, text
    err = json.loads(text)["error"]
    assert err["param"] == param and err["message"]


def test_malformed_requests(server):
    assert http(server, "POST", "/v1/chat/completions", raw=b"{not json")[0] == 400
    assert http(server, "POST", "/v1/completions", raw=b'{"prompt": "\xff\xfe", "max_tokens": 1}')[0] == 400
    status, _, _ = http(server, "POST", "/v1/completions", raw=b"prompt=hi",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    status, text, _ = http(server, "POST", "/v1/completions", raw=b'{"prompt": "' + b"a" * 1_100_000 + b'"}')
    assert status == 413, text
    status, text, _ = http(server, "POST", "/v1/completions", {"prompt": "hi", "model": "other-model"})
    assert status == 404
    assert http(server, "GET", "/v1/nothing")[0] == 404


def test_prompt_longer_than_context_is_400_with_both_numbers(server):
    status, text, _ = http(server, "POST", "/v1/completions", {"prompt": "hello " * 2100, "max_tokens": 5})
    assert status == 400
    msg = json.loads(text)["error"]["message"]
    assert "2048" in msg and re.search(r"\b2\d{3}\b.*in the prompt", msg), msg


def test_tokenize_detokenize(server):
    status, text, _ = http(server, "POST", "/tokenize", {"prompt": "The capital of France"})
    tok = json.loads(text)
    assert status == 200 and tok["count"] == len(tok["tokens"]) and tok["max_model_len"] == 2048
    status, text, _ = http(server, "POST", "/detokenize", {"tokens": tok["tokens"]})
    assert json.loads(text)["prompt"] == "The capital of France"
    status, text, _ = http(server, "POST", "/tokenize", {"messages": MESSAGES})
    chat = json.loads(text)
    r = client(server).chat.completions.create(model="", messages=MESSAGES, max_tokens=1)
    assert chat["count"] == r.usage.prompt_tokens
    assert http(server, "POST", "/detokenize", {"tokens": [10 ** 9]})[0] == 400


def test_disconnect_mid_stream_frees_the_request(server):
    drop_stream_and_wait_for_release(server)


def drop_stream_and_wait_for_release(server):
    """Starts a long stream, hangs up after three events, and checks that the server frees it."""
    # ignore_eos: a sampled EOS must not end the stream before the client hangs up.
    body = json.dumps({"prompt": "Tell me everything", "max_tokens": 1500, "stream": True,
                       "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.settimeout(60)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 3:
        chunk = s.recv(4096)
        assert chunk, f"the server ended the stream before three events: {got!r}"
        got += chunk
    s.close()
    deadline = time.time() + 30
    while time.time() < deadline:
        m = metrics(server)
        if m["redhare_num_requests_running"] == 0 and m["redhare_kv_blocks_used"] == 0:
            break
        time.sleep(0.1)
    m = metrics(server)
    assert m["redhare_num_requests_running"] == 0
    assert m["redhare_kv_blocks_used"] == 0


def test_slow_half_open_client_does_not_stall_others(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
    r = client(server).completions.create(model="", prompt="still serving?", max_tokens=2)
    assert len(r.choices) == 1
    s.close()


def test_metrics_count_what_was_sent(server):
    before = metrics(server)
    c = client(server)
    total = 0
    for i in range(5):
        total += c.completions.create(model="", prompt=f"count {i}", max_tokens=3 + i).usage.completion_tokens
    http(server, "POST", "/v1/completions", {"prompt": "x", "temperature": -1})
    after = metrics(server)
    ok = 'redhare_requests_total{status="200"}'
    bad = 'redhare_requests_total{status="400"}'
    assert after[ok] - before.get(ok, 0) == 5
    assert after[bad] - before.get(bad, 0) == 1
    assert after["redhare_generation_tokens_total"] - before["redhare_generation_tokens_total"] == total
    assert after["redhare_time_to_first_token_seconds_count"] - before["redhare_time_to_first_token_seconds_count"] == 5
    assert after["redhare_e2e_request_latency_seconds_count"] - before["redhare_e2e_request_latency_seconds_count"] >= 5
    assert 0 <= after["redhare_prefix_cache_hit_rate"] <= 1


def test_echo_with_logprobs_scores_the_prompt(server):
    c = client(server)
    prompt = json.loads(http(server, "POST", "/tokenize", {"prompt": "The quick brown fox"})[1])["tokens"]
    r = c.completions.create(model="", prompt=prompt, max_tokens=2, temperature=0, echo=True, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(prompt) + 2
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert r.choices[0].text.startswith("The quick brown fox")
    # The generated tokens' logprobs equal those of the same request without echo.
    plain = c.completions.create(model="", prompt=prompt, max_tokens=2, temperature=0, logprobs=2)
    assert lp.token_logprobs[len(prompt):] == pytest.approx(plain.choices[0].logprobs.token_logprobs)
