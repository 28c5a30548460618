#!/usr/bin/env python3
"""The HTTP server's own overhead: requests/s and p50/p99 latency of max_tokens=1 completions
(token-id prompts, so no tokenizer time) against a real `redhare serve`, beside the same requests
run in-process by bench_offline --sequential 1 on the same model.

    python3 bench/server_overhead.py [--build build] [--requests 300] [--input 16]

The model is the tiny random-weight Llama over the SmolLM2 tokenizer that the end-to-end tests
use (tools/make_tiny_model.py; .cache/tokenizers/smollm2 from tools/tokenizer/fetch_tokenizers.sh).
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--input", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    binary = os.path.join(args.build, "apps", "redhare", "redhare")
    offline = os.path.join(args.build, "bench", "bench_offline")
    tmp = tempfile.mkdtemp()
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_model.py"), "--tokenizer-dir",
                    os.path.join(ROOT, ".cache", "tokenizers", "smollm2"), "--out", tmp], check=True,
                   stdout=subprocess.DEVNULL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([binary, "serve", f"models.ckpt_dir={tmp}", f"serve.port={port}", "log.level=warn"])
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        vocab = 49152

        def body(r):
            ids = [(r * 7919 + i * 104729) % vocab for i in range(args.input)]
            return json.dumps({"prompt": ids, "max_tokens": 1, "temperature": 0, "ignore_eos": True})

        def run(n, offset, lat):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for r in range(offset, offset + n):
                t = time.perf_counter()
                conn.request("POST", "/v1/completions", body(r), {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                assert resp.status == 200, data
                lat.append(time.perf_counter() - t)

        run(20, 10**6, [])  # warm-up
        lat = []
        t0 = time.perf_counter()
        run(args.requests, 0, lat)
        seq_rps = args.requests / (time.perf_counter() - t0)
        print(f"HTTP sequential        {args.requests} requests x ({args.input} in, 1 out): {seq_rps:.1f} requests/s, "
              f"latency p50 {1e3 * percentile(lat, 0.5):.3f} ms, p99 {1e3 * percentile(lat, 0.99):.3f} ms")
        clat = []
        per = args.requests // args.concurrency
        threads = [threading.Thread(target=run, args=(per, k * per, clat)) for k in range(args.concurrency)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        crps = len(clat) / (time.perf_counter() - t0)
        print(f"HTTP {args.concurrency} concurrent      {len(clat)} requests: {crps:.1f} requests/s, "
              f"latency p50 {1e3 * percentile(clat, 0.5):.3f} ms, p99 {1e3 * percentile(clat, 0.99):.3f} ms")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    subprocess.run([offline, "--model", tmp, "--load-format", "auto", "--requests", str(args.requests),
                    "--input", str(args.input), "--output", "1", "--sequential", "1"], check=True,
                   stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
