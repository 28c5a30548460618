"""Record reference encodes/decodes from the Hugging Face `tokenizers` library.

Writes fixtures/tokenizer/corpus.json (the hard-case inputs) and
fixtures/tokenizer/expected/<name>.json for every tokenizer fetched by fetch_tokenizers.sh.
The C++ tests (tests/text/test_tokenizer_reference.cpp) replay them.

Inputs that are not valid UTF-8 are stored as hex; the reference takes Python str, so it sees
them as bytes.decode("utf-8", "replace"), which is what redhare's encode() does with such bytes.
"""
import json
import pathlib
import random
import sys

import tokenizers
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tokenizers"
OUT = ROOT / "fixtures" / "tokenizer"
NAMES = ["llama3", "qwen2", "deepseek-v3", "gpt2", "smollm2", "mistral-v1", "mistral-v3"]
SYNTHETIC = ["byte_level", "split_behaviors", "subword_affixes", "metaspace_split", "byte_fallback",
             "no_decoder"]


def tokenizer_dir(name: str) -> pathlib.Path:
    # "synthetic-X" are the small committed files of make_synthetic.py; the rest are fetched.
    if name.startswith("synthetic-"):
        return OUT / "synthetic" / name[len("synthetic-"):]
    return CACHE / name


def corpus() -> list:
    c = []
    add = lambda name, text: c.append({"name": name, "text": text})
    add("empty", "")
    add("one_space", " ")
    add("hello", "Hello world")
    add("leading_space", " Hello world")
    add("sentence", "The quick brown fox jumps over the lazy dog.")
    add("whitespace_runs", "a  b   c    d\t\te\n\nf \n g\r\n h   ")
    add("only_spaces", "     ")
    add("only_newlines", "\n\n\n")
    add("tabs", "\tindented\t\tline\t")
    add("mixed_ws_end", "text   \n\t ")
    add("code", "def f(x):\n    return x ** 2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))\n")
    add("json", '{"key": [1, 2, 3], "nested": {"a": null, "b": true}}')
    add("digits", "0 1 12 123 1234 12345 123456 3.14159 1,000,000 2024-01-01 0x1F")
    add("digit_runs", "99999999999999999999")
    add("contractions", "I'm you're he's we've they'll she'd it's DON'T I'M We'Ve")
    add("contractions_unicode", "It\u2019s ſ'S 'S 'st")
    add("punctuation", "Hello!!! What?? ... --- (a) [b] {c} <d> @e #f $g %h ^i &j *k")
    add("url", "https://example.com/path?query=1&x=y#frag")
    add("emoji", "I love 🐍 and 🚀! 👍🏽 👨‍👩‍👧‍👦 🇫🇷")
    add("cjk", "你好，世界！这是一个测试。日本語のテキストです。한국어 텍스트")
    add("cjk_mixed", "abc中文def 123汉字456 カタカナ ひらがな")
    add("arabic", "مرحبا بالعالم! هذا اختبار.")
    add("hebrew_rtl", "שלום עולם")
    add("devanagari", "नमस्ते दुनिया")
    add("thai", "สวัสดีชาวโลก")
    add("cyrillic_greek", "Привет мир Γειά σου Κόσμε ΣΊΣΥΦΟΣ")
    add("combining", "e\u0301 a\u0300\u0301 n\u0303 Zalgo: Z\u0351\u036b\u0343a\u0352l\u0364g\u0315o")
    add("precomposed_vs_decomposed", "caf\u00e9 cafe\u0301 \u00c5ngstr\u00f6m A\u030angstro\u0308m")
    add("compat_chars", "ﬁ ﬂ ① ² ½ Ｆｕｌｌｗｉｄｔｈ ｶﾀｶﾅ ™ ㎏")
    add("special_space_chars", "a\u00a0b\u2009c\u3000d\u200be\u2028f\u0085g\ufeffh")
    add("control_chars", "a\x00b\x01c\x7fd\x1be[0m")
    add("math_symbols", "∀x ∈ ℝ: x² ≥ 0 → √x ∃ ∑ ∫ ≠ ≈ ∞")
    add("latin_ext", "Ærøskøbing Łódź Đurđevac ß ẞ İstanbul ı")
    add("special_llama3", "<|begin_of_text|>Hello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi")
    add("special_chatml", "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>")
    add("special_sp", "<s>[INST] What is 2+2? [/INST] 4</s>")
    add("special_deepseek", "<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>")
    add("special_endoftext", "one<|endoftext|>two <|endoftext|> three")
    add("special_partial", "<|im_st <|endoftext <s <<|im_start|>> <|eot_id|<|eot_id|>")
    add("special_adjacent", "<s><s></s><|endoftext|><|endoftext|>")
    add("metaspace_char", "▁ ▁▁ a▁b ▁hello")
    add("byte_tokens_text", "<0x41> <0xFF> <0x0A>")
    add("long_word", "a" * 3000)
    add("long_word_mixed", "Supercalifragilisticexpialidocious" * 40)
    add("long_space_run", " " * 2000 + "x")
    add("long_newline_run", "\n" * 500 + "end")
    add("long_digits", "1234567890" * 100)
    add("long_cjk", "漢字" * 500)
    add("long_emoji", "😀" * 300)
    add("mixed_paragraph",
        "In 2023, the model scored 95.5% on MMLU — a big jump! See https://arxiv.org/abs/1234.5678.\n"
        "«Quotes» „more“ ‚single‘ 'ascii' \"double\"\n- item 1\n- item 2\n\n## Heading\n")
    add("markdown_table", "| a | b |\n|---|---|\n| 1 | 2 |\n")
    add("trailing_newline", "line one\nline two\n")
    add("cr_only", "a\rb\r\rc")
    add("private_use", "\ue000\uf8ff\U000f0000")
    add("astral", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚 𐍈")
    add("lone_apostrophes", "' '' ''' 's 's's")
    add("underscore_words", "snake_case_name __dunder__ _x x_")
    # Found by random differential testing: what counts as a word character next to a
    # single_word token (marks do, "¼" does not), and U+180E, which PCRE2's \s matches but
    # Oniguruma's does not.
    add("single_word_neighbours", "¼word\u240a word\u0332 word\u0309 \u2460word _word word_ \u24b6word \u2167word a\u200dword")
    add("mongolian_vowel_separator", "a\u180eb \u180e\u180e x\u180e")
    # Assigned in Unicode 15.0, after PCRE2 10.42's tables: U+1F6DC (So), Kawi letters and
    # digits, CJK Extension H.
    add("unicode_15_chars", "\U0001f6dc\u05e0 x\U00011f04\U00011f05 \U00011f50\U00011f51 \U00031350\U00031351 a\U0001f6dcb")
    # After Unicode 15.0 (ICU's tables): U+2428 (16.0, So), U+2EBF0 (15.1, CJK), U+10940 (17.0,
    # unknown to the reference too); and characters the reference's older normalization tables
    # leave alone (U+32FF, U+A7F2, U+1E05C).
    add("unicode_16_chars", "\u2428<s \U0002ebf0x \U00010940y a\u2428\u2428b")
    add("normalization_table_age", "\u32ff \ua7f2 \U0001e05c x\u0301 \u00c5\u32ff\u0301")
    # A composition whose result the reference's tables do not know: it keeps the pieces.
    add("composition_into_new_char", "\U00011935\U00011930 a\U00011935\U00011930b")
    add("word_class_chars", "\u2188x \u2167x \u24b6x \u2460x \u00bcx a\u200db a\u200cb \u0332x")
    # Ill-formed UTF-8 (hex): stray continuation, truncated sequences, overlong, surrogate, >U+10FFFF.
    hexes = {
        "invalid_continuation": b"abc\x80def",
        "invalid_truncated": b"caf\xc3 x \xe4\xb8 y \xf0\x9f\x98",
        "invalid_overlong": b"\xc0\xaf \xe0\x80\xaf",
        "invalid_surrogate": b"\xed\xa0\x80 ok",
        "invalid_too_big": b"\xf4\x90\x80\x80 \xf5\xff\xfe",
        "invalid_at_end": b"hello \xe2\x82",
    }
    for name, raw in hexes.items():
        c.append({"name": name, "hex": raw.hex()})
    c.extend(random_cases(120))
    return c


def random_cases(count: int) -> list:
    # Short strings drawn from many scripts, spaces, marks, digits, symbols and special-token
    # texts: the mix that found the \w / \s / single_word differences between regex engines.
    rng = random.Random(20240601)
    pools = [
        [chr(c) for c in range(0x20, 0x7F)],
        list(" \t\n\r\x0b\x0c\u00a0\u1680\u2000\u2009\u200a\u200b\u2028\u2029\u202f\u205f"
             "\u3000\u0085\u180e\ufeff"),
        [chr(c) for c in range(0xA0, 0x250)],
        [chr(c) for c in range(0x300, 0x370)],
        [chr(c) for c in range(0x370, 0x530)],
        [chr(c) for c in range(0x590, 0x700)],
        [chr(c) for c in range(0x900, 0x980)],
        [chr(c) for c in range(0xE00, 0xE80)],
        [chr(c) for c in range(0x2000, 0x2BFF)],
        [chr(c) for c in range(0x3000, 0x30FF)],
        [chr(c) for c in range(0x4E00, 0x4F00)],
        [chr(c) for c in range(0xAC00, 0xAD00)],
        [chr(c) for c in range(0xFF00, 0xFFF0)],
        [chr(c) for c in range(0x1F300, 0x1F700)],
        [chr(c) for c in range(0x1D400, 0x1D800)],
        list("0123456789'sStTdDmM"),
        ["<s>", "</s>", "<|endoftext|>", "<|im_start|>", "<|begin_of_text|>", "[INST]", "<mask>",
         "[SEP]", "word", "Hello", "<0x41>", "\u2581", "'s", "'LL", "\u0130", "\u03a3"],
    ]
    out = []
    for k in range(count):
        parts = []
        for _ in range(rng.randint(1, 30)):
            ch = rng.choice(rng.choice(pools))
            parts.append(ch * (rng.randint(2, 5) if rng.random() < 0.1 else 1))
        out.append({"name": f"random_{k:03d}", "text": "".join(parts)})
    return out


def text_of(case: dict) -> str:
    if "hex" in case:
        return bytes.fromhex(case["hex"]).decode("utf-8", "replace")
    return case["text"]


def special_content(cfg: dict, key: str):
    v = cfg.get(key)
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def record(name: str, cases: list) -> dict:
    d = tokenizer_dir(name)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    cfg = {}
    for f in ("special_tokens_map.json", "tokenizer_config.json"):  # config wins over the map
        if (d / f).exists():
            cfg.update({k: v for k, v in json.loads((d / f).read_text()).items() if v is not None})
    out = {"tokenizer": name, "tokenizers_version": tokenizers.__version__,
           "vocab_size": tok.get_vocab_size(with_added_tokens=True), "special_ids": {}, "cases": [],
           "decode_cases": []}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        content = special_content(cfg, key)
        out["special_ids"][key] = tok.token_to_id(content) if content is not None else None
    probe = sorted(set(range(0, out["vocab_size"] + 3, 97)) | set(tok.get_added_tokens_decoder()))
    out["id_to_token"] = [[i, tok.id_to_token(i)] for i in probe]
    out["token_to_id"] = [[t, tok.token_to_id(t)] for _, t in out["id_to_token"] if t is not None]
    for t in [a.content for a in tok.get_added_tokens_decoder().values()] + ["not-a-token-xyz"]:
        out["token_to_id"].append([t, tok.token_to_id(t)])
    for case in cases:
        text = text_of(case)
        with_special = tok.encode(text, add_special_tokens=True).ids
        plain = tok.encode(text, add_special_tokens=False).ids
        out["cases"].append({
            "name": case["name"], "ids": with_special, "ids_no_special": plain,
            "decode": tok.decode(with_special, skip_special_tokens=False),
            "decode_skip_special": tok.decode(with_special, skip_special_tokens=True)})
    # Decoding arbitrary id sequences exercises the decoders beyond what encoding produces:
    # split characters, byte tokens out of order, special tokens in the middle, unknown ids.
    rng = random.Random(1234)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    specials = list(tok.get_added_tokens_decoder()) or [0]
    for k in range(40):
        n = rng.randint(1, 24)
        ids = [rng.randrange(vocab_size + 5) if rng.random() < 0.9 else rng.choice(specials)
               for _ in range(n)]
        if k % 4 == 0:  # low ids are bytes / byte tokens in most vocabularies
            ids = [rng.randrange(300) for _ in range(n)]
        out["decode_cases"].append({
            "ids": ids, "decode": tok.decode(ids, skip_special_tokens=False),
            "decode_skip_special": tok.decode(ids, skip_special_tokens=True)})
    return out


def main() -> None:
    cases = corpus()
    (OUT / "expected").mkdir(parents=True, exist_ok=True)
    (OUT / "corpus.json").write_text(json.dumps(cases, ensure_ascii=False, indent=0) + "\n",
                                     encoding="utf-8")
    for name in sys.argv[1:] or NAMES + [f"synthetic-{n}" for n in SYNTHETIC]:
        data = record(name, cases)
        (OUT / "expected" / f"{name}.json").write_text(
            json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
        print(f"record_fixtures: {name}: {len(data['cases'])} cases")


if __name__ == "__main__":
    main()
