"""Build small tokenizer.json files that exercise the components the real files do not use.

Each is a BPE trained by the `tokenizers` library on the test corpus, wired to a different mix of
normalizers, pre-tokenizers, added-token options, post-processors and decoders. They are small
enough to commit (fixtures/tokenizer/synthetic/<name>/); record_fixtures.py then records the
reference's behaviour on them like on the real files.
"""
import json
import pathlib

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers as pre
from tokenizers import processors, trainers

from record_fixtures import corpus, text_of

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "fixtures" / "tokenizer" / "synthetic"

TEXT = [text_of(c) for c in corpus()] + [
    "the quick brown fox jumps over the lazy dog " * 3,
    "Tokenizers split text into pieces, then merge characters into tokens. " * 3,
]

ADDED = [
    AddedToken("<mask>", special=True, lstrip=True, rstrip=False, normalized=False),
    AddedToken("[SEP]", special=True, rstrip=True, normalized=False),
    AddedToken("word", special=False, single_word=True, normalized=True),
    AddedToken("Hello", special=False, normalized=True),
    AddedToken("<|endoftext|>", special=True, normalized=False),
]


def train(tok: Tokenizer, size: int, **kw) -> None:
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=size, show_progress=False, **kw))


def byte_level() -> Tokenizer:
    # GPT-2 style with a prefix space, NFKC, RoBERTa post-processing and lstrip/rstrip tokens.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    train(tok, 700, initial_alphabet=pre.ByteLevel.alphabet(), special_tokens=["<s>", "</s>"])
    tok.add_tokens(ADDED)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")))
    return tok


def split_behaviors() -> Tokenizer:
    # Every split behaviour, inverted splits, Digits, Punctuation, and a normalizer chain.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([
        normalizers.NFD(), normalizers.Lowercase(), normalizers.Strip(left=True, right=True),
        normalizers.Replace(Regex(r"\d{4,}"), "#"), normalizers.NFC()])
    tok.pre_tokenizer = pre.Sequence([
        pre.Split(" ", behavior="merged_with_previous"),
        pre.Split(Regex(r"[aeiou]+"), behavior="merged_with_next"),
        pre.Split(Regex(r"\s+"), behavior="removed", invert=True),
        pre.Punctuation(behavior="contiguous"),
        pre.Digits(individual_digits=False),
        pre.Split(Regex(r"x"), behavior="contiguous"),
        pre.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    train(tok, 600, initial_alphabet=pre.ByteLevel.alphabet(), special_tokens=["[CLS]", "[SEP]"])
    tok.add_tokens(ADDED)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def subword_affixes() -> Tokenizer:
    # Word-piece style affixes, Whitespace pre-tokenizer, unknown tokens (not fused), BPEDecoder.
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##",
                               end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre.Whitespace()
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    train(tok, 400, special_tokens=["[UNK]"], continuing_subword_prefix="##",
          end_of_word_suffix="</w>", limit_alphabet=40)
    return tok


def metaspace_split() -> Tokenizer:
    # Metaspace that splits, always prepends; fused unknowns; Metaspace decoder; no post-processor.
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Strip(left=False, right=True)])
    tok.pre_tokenizer = pre.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    train(tok, 500, special_tokens=["<unk>"], limit_alphabet=60)
    tok.add_tokens(ADDED)
    return tok


def byte_fallback() -> Tokenizer:
    # SentencePiece-like byte fallback with ignore_merges and the "first" prepend scheme.
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True,
                               ignore_merges=True))
    tok.pre_tokenizer = pre.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(content=" ", left=1)])
    train(tok, 500, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)],
          limit_alphabet=50)
    tok.add_tokens(ADDED)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B",
                                      special_tokens=[("<s>", tok.token_to_id("<s>")),
                                                      ("</s>", tok.token_to_id("</s>"))])])
    return tok


def no_decoder() -> Tokenizer:
    # WhitespaceSplit, a literal Replace and a Prepend normalizer, and no decoder at all.
    tok = Tokenizer(models.BPE(unk_token="?"))
    tok.normalizer = normalizers.Sequence([normalizers.Replace("o", "0"), normalizers.Prepend("^")])
    tok.pre_tokenizer = pre.WhitespaceSplit()
    train(tok, 300, special_tokens=["?"], limit_alphabet=30)
    tok.add_tokens(ADDED)
    return tok


BUILDERS = {"byte_level": byte_level, "split_behaviors": split_behaviors,
            "subword_affixes": subword_affixes, "metaspace_split": metaspace_split,
            "byte_fallback": byte_fallback, "no_decoder": no_decoder}


def main() -> None:
    for name, build in BUILDERS.items():
        out = OUT / name
        out.mkdir(parents=True, exist_ok=True)
        build().save(str(out / "tokenizer.json"), pretty=False)
        (out / "tokenizer_config.json").write_text(json.dumps({"unk_token": "<unk>", "bos_token": "<s>"}) + "\n")
        print(f"make_synthetic: {name}")


if __name__ == "__main__":
    main()
