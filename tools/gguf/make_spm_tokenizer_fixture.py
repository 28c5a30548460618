#!/usr/bin/env python3
"""Writes fixtures/gguf/spm_tokenizer.gguf: a GGUF holding only the tokenizer metadata that
llama.cpp's converter writes for a SentencePiece model (tokenizer.ggml.model = "llama", tokens,
scores, token types, special ids), made from Mistral 7B v0.1's real tokenizer.model (PyPI package
mistral-common==1.13.1). The test compares redhare's tokenizer rebuilt from this file with the
tokenizer.json that tools/tokenizer/fetch_tokenizers.sh builds from the same model (itself checked
against the Hugging Face tokenizers library).

    pip download --no-deps -d /tmp/mc mistral-common==1.13.1
    python3 tools/gguf/make_spm_tokenizer_fixture.py /tmp/mc/mistral_common-1.13.1-py3-none-any.whl
"""
import os
import sys
import tempfile
import zipfile

import gguf
import sentencepiece

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    wheel = sys.argv[1]
    with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
        path = z.extract("mistral_common/data/tokenizer.model.v1", tmp)
        sp = sentencepiece.SentencePieceProcessor(model_file=path)
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i).encode("utf-8"))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    out = os.path.join(ROOT, "fixtures", "gguf", "spm_tokenizer.gguf")
    w = gguf.GGUFWriter(out, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(out, os.path.getsize(out), "bytes,", n, "tokens")


if __name__ == "__main__":
    main()
