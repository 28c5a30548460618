#!/usr/bin/env python3
"""Writes the GGUF fixtures of tests/formats/test_gguf*.cpp and tests/backends/test_quant*.cpp.

The files are written by the `gguf` package (gguf-py, pinned in tools/requirements-test.txt), so
the reader is tested against an independent writer, and the expected dequantized values come from
gguf-py's own numpy dequantization, not from redhare's code.

  quant_blocks.gguf  for every weight type redhare handles: '<type>.raw', random blocks of that
                     type, and '<type>.expected', gguf-py's dequantization of them as F32.
                     Also one tensor of a type redhare does not support (Q2_K) and a 3-D tensor.
  quant_reference.bin  the same raw blocks and expected values in a plain container for the backend
                     tests, which do not link the GGUF reader: "RHQR", u32 count, then per entry
                     u32 name length, name (ggml type name), u32 rows, u32 k, u64 raw bytes, the
                     raw blocks, rows * k little-endian f32 expected values.
  metadata.gguf      one key of every metadata value type, arrays of each, an array of strings,
                     nested arrays, general.alignment = 64 and a few small tensors.

Usage: python3 tools/gguf/make_fixtures.py [output dir, default fixtures/gguf]
"""

import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

SEED = 20261121

# Byte offsets of the f16 scale fields in each block; random bytes there could be NaN or
# infinite, so they are overwritten with ordinary values.
SCALE_OFFSETS = {
    Q.Q8_0: [0],
    Q.Q4_0: [0],
    Q.Q4_1: [0, 2],
    Q.Q5_0: [0],
    Q.Q5_1: [0, 2],
    Q.Q4_K: [0, 2],
    Q.Q5_K: [0, 2],
    Q.Q6_K: [208],
}


def random_blocks(rng, qtype, rows, k):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * k // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        scales = rng.normal(0.0, 0.05, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, -1)


def write_quant_blocks(out_dir: Path):
    rng = np.random.default_rng(SEED)
    w = gguf.GGUFWriter(out_dir / "quant_blocks.gguf", arch="redhare-test")
    entries = []
    # 32-value types: 3 rows of 96 values; K types: 2 rows of 512 values.
    for qtype in [Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K]:
        rows, k = (3, 96) if gguf.GGML_QUANT_SIZES[qtype][0] == 32 else (2, 512)
        raw = random_blocks(rng, qtype, rows, k)
        expected = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        assert expected.shape == (rows, k) and np.all(np.isfinite(expected))
        w.add_tensor(f"{qtype.name}.raw", raw, raw_dtype=qtype)
        w.add_tensor(f"{qtype.name}.expected", expected)
        entries.append((qtype.name, raw, expected))
    values = rng.normal(0.0, 1.0, size=(3, 40)).astype(np.float32)
    values[0, :4] = [0.0, -0.0, 65504.0, 1e-6]  # f16 max and a subnormal
    for qtype in [Q.F16, Q.BF16, Q.F32]:
        raw = gguf.quants.quantize(values, qtype)
        expected = gguf.quants.dequantize(raw, qtype).astype(np.float32)
        w.add_tensor(f"{qtype.name}.raw", raw, raw_dtype=qtype)
        w.add_tensor(f"{qtype.name}.expected", expected)
        entries.append((qtype.name, raw, expected))
    q2k = rng.integers(0, 256, size=(1, 84), dtype=np.uint8)
    w.add_tensor("unsupported.q2_k", q2k, raw_dtype=Q.Q2_K)
    # numpy shape (2, 3, 4) is stored as ne = [4, 3, 2].
    w.add_tensor("shape3d", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    finish(w)
    write_reference(out_dir / "quant_reference.bin", entries)


def write_reference(path: Path, entries):
    out = bytearray(b"RHQR") + struct.pack("<I", len(entries))
    for name, raw, expected in entries:
        rows, k = expected.shape
        raw_bytes = np.ascontiguousarray(raw).tobytes()
        out += struct.pack("<I", len(name)) + name.encode() + struct.pack("<IIQ", rows, k, len(raw_bytes))
        out += raw_bytes + expected.astype("<f4").tobytes()
    path.write_bytes(bytes(out))


def write_metadata(out_dir: Path):
    w = gguf.GGUFWriter(out_dir / "metadata.gguf", arch="redhare-test")
    w.add_custom_alignment(64)
    w.add_key_value("test.u8", 200, V.UINT8)
    w.add_key_value("test.i8", -100, V.INT8)
    w.add_key_value("test.u16", 60000, V.UINT16)
    w.add_key_value("test.i16", -30000, V.INT16)
    w.add_key_value("test.u32", 4000000000, V.UINT32)
    w.add_key_value("test.i32", -2000000000, V.INT32)
    w.add_key_value("test.u64", 18000000000000000000, V.UINT64)
    w.add_key_value("test.i64", -9000000000000000000, V.INT64)
    w.add_key_value("test.f32", 0.15625, V.FLOAT32)
    w.add_key_value("test.f64", 2.718281828459045, V.FLOAT64)
    w.add_key_value("test.bool_true", True, V.BOOL)
    w.add_key_value("test.bool_false", False, V.BOOL)
    w.add_key_value("test.string", "redhare \u00e9\u00e8 \U0001f407", V.STRING)
    w.add_key_value("test.arr_u8", [1, 2, 255], V.ARRAY, V.UINT8)
    w.add_key_value("test.arr_i16", [-1, 2, -3], V.ARRAY, V.INT16)
    w.add_key_value("test.arr_i32", [-1, 0, 7, 2147483647], V.ARRAY, V.INT32)
    w.add_key_value("test.arr_u32", [0, 1, 4294967295], V.ARRAY, V.UINT32)
    w.add_key_value("test.arr_i64", [-5, 5, 1 << 40], V.ARRAY, V.INT64)
    w.add_key_value("test.arr_f32", [0.5, -1.25, 3.0], V.ARRAY, V.FLOAT32)
    w.add_key_value("test.arr_f64", [0.1, 0.2], V.ARRAY, V.FLOAT64)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, V.BOOL)
    w.add_key_value("test.nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY)
    tokens = [f"tok{i}" for i in range(1000)] + ["", "\u2581hello", "<|end|>"]
    w.add_key_value("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING)
    w.add_uint32("llama.block_count", 16)
    w.add_float32("llama.rope.freq_base", 500000.0)
    w.add_string("general.name", "fixture")
    w.add_tensor("token_embd.weight", np.arange(4 * 8, dtype=np.float32).reshape(4, 8))
    w.add_tensor("output_norm.weight", np.ones(5, dtype=np.float16))
    w.add_tensor("blk.0.attn_q.weight", np.full((2, 3), 7, dtype=np.float32))
    finish(w)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("fixtures/gguf")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_quant_blocks(out_dir)
    write_metadata(out_dir)
    print(f"wrote fixtures to {out_dir}")


if __name__ == "__main__":
    main()
