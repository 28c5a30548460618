"""Fixtures for end-to-end tests: a real `redhare serve` process on a tiny random-weight model
that uses the real SmolLM2 tokenizer and chat template (made by tools/make_tiny_model.py from
the tokenizer files tools/tokenizer/fetch_tokenizers.sh puts in .cache/tokenizers/)."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("REDHARE_BIN", os.path.join(ROOT, "build-test", "apps", "redhare", "redhare"))
TOKENIZER_DIR = os.path.join(ROOT, ".cache", "tokenizers", "smollm2")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir, *overrides):
        if not os.path.exists(BIN):
            raise RuntimeError(f"{BIN} is missing: build redhare first (scripts/test.sh does)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir),
                                     f"serve-{self.port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [BIN, "serve", f"models.ckpt_dir={model_dir}", f"serve.port={self.port}",
             "infer.threads=2", "log.level=info", *overrides],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redhare serve exited with {self.proc.returncode}: {self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("redhare serve did not become ready: " + self.read_log())

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    if not os.path.exists(os.path.join(TOKENIZER_DIR, "tokenizer.json")):
        raise RuntimeError(f"{TOKENIZER_DIR} is missing: run tools/tokenizer/fetch_tokenizers.sh")
    out = str(tmp_path_factory.mktemp("tiny-chat"))
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_tiny_model.py"),
                    "--tokenizer-dir", TOKENIZER_DIR, "--out", out], check=True)
    return out


@pytest.fixture(scope="session")
def server(tiny_model):
    s = Server(tiny_model, "serve.max_body_bytes=1000000")
    yield s
    assert s.stop() == 0, s.read_log()


@pytest.fixture(scope="session")
def overlap_server(tiny_model):
    """The same model with overlapped decoding forced on (on the CPU it is off by default)."""
    s = Server(tiny_model, "infer.overlap_steps=on")
    yield s
    assert s.stop() == 0, s.read_log()
