"""Overlapped decoding (infer.overlap_steps=on) through the real server and the official client:
every response is the one the server stepping one at a time gives, streams included, and a
request dropped mid-stream still frees its blocks."""
import threading

from test_openai_api import MESSAGES, client, drop_stream_and_wait_for_release, metrics


def completions(server, **kw):
    r = client(server).completions.create(model="", **kw)
    return ([(c.text, c.finish_reason, c.logprobs.model_dump() if c.logprobs else None) for c in r.choices],
            r.usage.completion_tokens)


def test_same_responses_as_one_step_at_a_time(server, overlap_server):
    full = client(server).completions.create(model="", prompt="Once upon a time", max_tokens=24,
                                             temperature=0).choices[0].text
    assert len(full) > 8
    cases = [
        dict(prompt="Once upon a time", max_tokens=24, temperature=0),
        dict(prompt="Once upon a time", max_tokens=24, temperature=0, stop=[full[4:8]]),
        dict(prompt="The quick brown fox", max_tokens=16, temperature=0.9, seed=77, n=3),
        dict(prompt="Numbers:", max_tokens=12, temperature=0, logprobs=3),
        dict(prompt="Penalised", max_tokens=12, temperature=0, frequency_penalty=0.8),
        dict(prompt=[17, 2024, 3, 99, 1000], max_tokens=1, temperature=0),
    ]
    for kw in cases:
        assert completions(overlap_server, **kw) == completions(server, **kw), kw
    kw = dict(model="", messages=MESSAGES, max_tokens=20, temperature=0)
    a = client(server).chat.completions.create(**kw).choices[0].message.content
    b = client(overlap_server).chat.completions.create(**kw).choices[0].message.content
    streamed = "".join(ch.choices[0].delta.content or "" for ch in client(overlap_server).chat.completions.create(
        stream=True, **kw))
    assert a == b == streamed
    m = metrics(overlap_server)
    assert m["redhare_overlapped_steps_total"] > 0
    assert metrics(server)["redhare_overlapped_steps_total"] == 0


def test_concurrent_streams(server, overlap_server):
    prompts = [[(i * 7919 + k * 104729 + 17) % 49000 for k in range(5)] for i in range(24)]
    expected = [client(server).completions.create(model="", prompt=p, max_tokens=10, temperature=0).choices[0].text
                for p in prompts]
    results, errors = {}, []

    def run(i):
        try:
            results[i] = "".join(ch.choices[0].text for ch in client(overlap_server).completions.create(
                model="", prompt=prompts[i], max_tokens=10, temperature=0, stream=True))
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors
    assert [results.get(i) for i in range(len(prompts))] == expected


def test_disconnect_mid_stream_frees_the_request(overlap_server):
    drop_stream_and_wait_for_release(overlap_server)
