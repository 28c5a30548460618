"""Encode throughput of the Hugging Face `tokenizers` library, single thread, one text at a time.

Writes the benchmark text to .cache/bench/tokenizer_docs.json (if missing) so that
bench/bench_tokenizer measures redhare on exactly the same documents, then prints MB/s and the
total token count (the C++ benchmark prints both too; the counts must agree).

  python3 tools/tokenizer/bench_reference.py [tokenizer-name, default llama3] [--rounds N]
"""
import json
import os
import pathlib
import random
import sys
import sysconfig
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / ".cache" / "bench" / "tokenizer_docs.json"
TARGET_BYTES = 4 << 20


def make_docs() -> list:
    # Mixed text: Python's own sources (code, English comments and docstrings) plus multilingual
    # prose, emoji and numbers assembled from the test corpus.
    rng = random.Random(7)
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py"))
    docs, size = [], 0
    corpus = json.loads((ROOT / "fixtures" / "tokenizer" / "corpus.json").read_text())
    snippets = [c["text"] for c in corpus if "text" in c and not c["name"].startswith("long_")]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for start in range(0, len(text), 4096):
            docs.append(text[start:start + 4096])
            size += len(docs[-1].encode())
            if rng.random() < 0.25:
                doc = " ".join(rng.choice(snippets) for _ in range(40))
                docs.append(doc)
                size += len(doc.encode())
        if size >= TARGET_BYTES:
            break
    return docs


def main() -> None:
    name = next((a for a in sys.argv[1:] if not a.startswith("--")), "llama3")
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
    if not DOCS.exists():
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(json.dumps(make_docs(), ensure_ascii=False), encoding="utf-8")
    docs = json.loads(DOCS.read_text(encoding="utf-8"))
    nbytes = sum(len(d.encode()) for d in docs)
    tok = Tokenizer.from_file(str(ROOT / ".cache" / "tokenizers" / name / "tokenizer.json"))
    best, tokens = float("inf"), 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        tokens = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
        best = min(best, time.perf_counter() - t0)
    print(f"hf-tokenizers {name}: {len(docs)} docs, {nbytes / 1e6:.2f} MB, {tokens} tokens, "
          f"best of {rounds}: {best:.3f} s = {nbytes / 1e6 / best:.2f} MB/s single thread")


if __name__ == "__main__":
    main()
