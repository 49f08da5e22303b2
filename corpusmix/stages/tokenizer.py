"""The tokenizer asset: the spec's ``tokenizer.json``, or a byte-level BPE trained here.

Either way the stage publishes one versioned ``tokenizer.json`` under the
storage root and a manifest recording its sha256, vocabulary size, EOS id and
token dtype, so every token store and shard names the exact tokenizer that
made it. Nothing is downloaded.

Training (``tokenizer.train``) sees a seeded sample of the filtered documents
of every source: a document is in the sample when a keyed hash of
(seed, source, doc_id) falls below ``sample_bytes / total_bytes``, so the
choice is stable when other documents come and go, needs no shuffle, and
streams. The trainer is the ``tokenizers`` BPE trainer with a byte-level
pre-tokenizer and decoder (every UTF-8 text round-trips, no unknown tokens)
and the spec's special tokens first in the vocabulary. Its merges depend only
on pair counts and ids, so the same sample gives the same file bytes.

This module also decides where a long document may be cut before encoding
(``pieces``): a worker encoding one huge document would stall the batch, but a
cut is only allowed where the tokenizer provably starts a new token anyway.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq

from corpusmix.core.indexed import token_dtype
from corpusmix.core.manifest import input_refs, output_ref, require_manifest
from corpusmix.core.spec import LoadedSpec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import sha256_file
from corpusmix.stages import fast_bpe

NAME = "tokenizer"
FILE_NAME = "tokenizer.json"
PIECE_CHARS = 32_768  # longest piece sent to the encoder (~8k tokens: a few ms of one thread)
# Texts whose cut points stress a pre-tokenizer: whitespace runs, contractions, digits, punctuation, non-Latin.
_PROBES = (
    "def f(x):\n    return x  \n\nclass A:\n  pass\n'tis 12345 +=-> ok\n\tTabbed line\nend",
    "Hello world, it's 2024.\nNew paragraph here...\n\n\n   indented\nlast line's word",
    "数学 は 楽しい。\nЗдравствуй мир\n«Quoted» text — dash\nmixed123abc 456 def\n  \n x",
    "a\nb\nc d e f\n\n g h\n   i\nj k\nl",
)


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str):
    """Load a ``tokenizer.json`` once per process (the GPT-2 file takes ~0.1 s to parse)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


@dataclass(frozen=True)
class TokenizerInfo:
    """What the token-writing stages need to know about the built tokenizer."""

    path: Path
    sha256: str
    vocab_size: int
    eos_token: str
    eos_id: int
    dtype: np.dtype
    split_long_documents: bool
    encoder: str  # "tiktoken" or "huggingface" (``choose_encoder``)

    def load(self):
        return load_tokenizer(str(self.path))

    def warm(self) -> None:
        """Fill this process's caches (the parsed file, tiktoken's tables: ~0.25 s for GPT-2) before
        the first batch needs them: a pool worker calls it as it starts (``executor.warm_up``)."""
        self.load()
        if self.encoder == "tiktoken":
            fast_bpe.encoding(str(self.path))

    def encode(self, texts: list[str]) -> list:
        """Ids of each text, as arrays (tiktoken, spot-checked against the tokenizers library) or
        lists (tokenizers); no post-processor specials; added tokens matched where they occur."""
        if self.encoder == "tiktoken":
            return fast_bpe.checked_encode(str(self.path), self.load(), texts)
        return [e.ids for e in self.load().encode_batch_fast(texts, add_special_tokens=False)]

    def encode_pieces(self, texts: list[str]) -> tuple[list, list[int]]:
        """Ids of the pieces of ``texts`` (long documents cut where the tokenizer starts a new
        token anyway, so no encoder call stalls on one), and how many pieces each text has."""
        batch, n_pieces = [], []
        for text in texts:
            ps = pieces(text, PIECE_CHARS) if self.split_long_documents else [text]
            batch += ps
            n_pieces.append(len(ps))
        return self.encode(batch), n_pieces

    def encode_documents(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids (no EOS), concatenated in ``dtype``, and each text's token count: the
        pieces of a long text joined back, so these are exactly the ids tokenize stores."""
        ids, n_pieces = self.encode_pieces(texts)
        flat = np.concatenate(ids, dtype=self.dtype, casting="unsafe") if ids else np.empty(0, self.dtype)
        return flat, _per_text(ids, n_pieces)

    def count(self, texts: list[str]) -> np.ndarray:
        """Tokens of each text (no EOS), exactly as tokenize will store them, with its encoder."""
        return _per_text(*self.encode_pieces(texts))


def _per_text(ids: list, n_pieces: list[int]) -> np.ndarray:
    """Tokens per text from its pieces' ids (``n_pieces`` pieces each, in order)."""
    piece_lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    return np.bincount(np.repeat(np.arange(len(n_pieces)), n_pieces), weights=piece_lengths,
                       minlength=len(n_pieces)).astype(np.int64)


def _cut(text: str, lo: int, hi: int) -> int | None:
    """A cut in ``text[lo:hi]`` where a regex pre-tokenizer starts a new token anyway.

    First choice: right after a newline that has a non-space character on each
    side (so neither side's whitespace run changes); else before a space that has
    a non-space character on each side (the space then leads the next word, as
    in GPT-2 and Llama 3 pre-tokenization).
    """
    i = text.rfind("\n", lo, hi - 1)
    while i > lo:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        i = text.rfind("\n", lo, i)
    i = text.rfind(" ", lo + 1, hi - 1)
    while i > lo:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i
        i = text.rfind(" ", lo + 1, i)
    return None


def pieces(text: str, max_chars: int = PIECE_CHARS) -> list[str]:
    """Split a long text at safe cuts into pieces of at most ~``max_chars`` (a text
    without any safe cut in a window stays longer rather than being cut unsafely)."""
    if len(text) <= max_chars:
        return [text]
    out, start = [], 0
    while len(text) - start > max_chars:
        cut = _cut(text, start + max_chars // 2, start + max_chars)
        if cut is None:  # no safe cut in this window: look further on
            cut = _cut(text, start + max_chars, min(len(text), start + 8 * max_chars))
        if cut is None:
            break
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def split_is_exact(tok, max_chars: int = 16) -> bool:
    """Does encoding the pieces of a text give the same ids as encoding it whole?

    Checked on texts built to stress the cut rule, cut every few characters; a
    tokenizer that fails (e.g. SentencePiece's metaspace, which marks the start
    of each input) gets whole-document encoding instead.
    """
    for text in _PROBES:
        whole = tok.encode(text, add_special_tokens=False).ids
        parts = [i for e in tok.encode_batch(pieces(text, max_chars), add_special_tokens=False) for i in e.ids]
        if whole != parts:
            return False
    return True


def choose_encoder(path: Path, requested: str) -> tuple[str, str]:
    """The encoder the tokenize stage uses, and why: tiktoken only where ``fast_bpe`` finds it
    gives the ids of the tokenizers library (a file it cannot check falls back, it never fails).
    Decided once per tokenizer content in a process (~0.3 s of checks and probes): a build asks
    at its start, to warm its workers, and again in the tokenizer stage, of a copy of the file."""
    if requested == "huggingface":
        return "huggingface", "tokenizer.encoder: huggingface in the spec"
    data = path.read_bytes()
    key = hashlib.sha256(data).hexdigest()
    if key not in _CHOSEN:
        why = fast_bpe.incompatibility(orjson.loads(data))
        if why is None:
            why = fast_bpe.probe_mismatch(str(path), load_tokenizer(str(path)))
        _CHOSEN[key] = ("tiktoken", "byte-level BPE with GPT-2 split; same ids as tokenizers on every probe") \
            if why is None else ("huggingface", f"tiktoken not used: {why}")
    return _CHOSEN[key]


_CHOSEN: dict[str, tuple[str, str]] = {}  # choose_encoder's answers by the tokenizer file's sha256


def describe(path: Path, eos_token: str, encoder: str) -> TokenizerInfo:
    tok = load_tokenizer(str(path))
    eos_id = tok.token_to_id(eos_token)
    if eos_id is None:
        raise ValueError(f"{path}: EOS token {eos_token!r} is not in the vocabulary; set tokenizer.eos_token")
    vocab = tok.get_vocab_size(with_added_tokens=True)
    return TokenizerInfo(path, sha256_file(path), vocab, eos_token, eos_id, token_dtype(vocab), split_is_exact(tok),
                         encoder)


def _sample_threshold(fraction: float) -> int:
    return min(1 << 64, int(fraction * float(1 << 64)))


def _sampled(seed: int, source: str, doc_id: str, threshold: int) -> bool:
    key = hashlib.blake2b(f"{seed}\0{source}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(key, "little") < threshold


def training_sample(loaded: LoadedSpec, stats: dict[str, list[int]]) -> Iterator[str]:
    """Stream the sampled documents of every source (spec order, then file order).

    ``stats`` receives [documents, bytes] per source as the stream is consumed.
    """
    cfg = loaded.spec.tokenizer.train
    ups = [require_manifest(loaded.manifest_root, "quality", s)[1] for s in loaded.source_names]
    total = sum(u["counts"]["bytes_out"] for u in ups)
    threshold = _sample_threshold(cfg.sample_bytes / max(1, total))
    for name, up in zip(loaded.source_names, ups):
        stats[name] = [0, 0]
        for o in up["outputs"]:
            if o["kind"] != "documents":
                continue
            for batch in pq.ParquetFile(loaded.storage_root / o["path"]).iter_batches(
                    batch_size=1024, columns=["doc_id", "text", "n_bytes"]):
                for doc_id, text, size in zip(*(batch.column(c).to_pylist() for c in ("doc_id", "text", "n_bytes"))):
                    if _sampled(cfg.seed, name, doc_id, threshold):
                        stats[name][0] += 1
                        stats[name][1] += size
                        yield text


def train_bpe(texts: Iterator[str], vocab_size: int, special_tokens: list[str], min_frequency: int):
    """A byte-level BPE (GPT-2 style: no normalizer, byte-level pre-tokenizer and decoder)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer_config(loaded: LoadedSpec, partition: None) -> dict:
    """The file's sha256 (its path does not matter), or the training settings."""
    spec_tok = loaded.spec.tokenizer
    if spec_tok.path is not None:
        return {"origin": "file", "sha256": sha256_file(loaded.resolve(spec_tok.path)), "eos_token": spec_tok.eos_token,
                "encoder": spec_tok.encoder}
    return {"origin": "trained", "train": spec_tok.train.model_dump(mode="json"), "eos_token": spec_tok.eos_token,
            "encoder": spec_tok.encoder}


def tokenizer_upstream(spec) -> tuple[str, ...]:
    """A trained tokenizer reads every source's filtered documents; a tokenizer file reads nothing."""
    return ("quality",) if spec.tokenizer.path is None else ()


def build_tokenizer(ctx: StageRun) -> Built:
    """Publish the build's tokenizer (copied or trained)."""
    loaded, spec_tok, staging = ctx.loaded, ctx.loaded.spec.tokenizer, ctx.staging
    details: dict = {"eos_token": spec_tok.eos_token}
    counts: dict[str, int] = {}
    if spec_tok.path is not None:
        src = loaded.resolve(spec_tok.path)
        inputs = [{"path": str(src), "sha256": ctx.config["sha256"], "bytes": src.stat().st_size,
                   "upstream_manifest": None}]
        shutil.copyfile(src, staging / FILE_NAME)
        details["origin"] = f"file {src}"
        ctx.say(f"using {src} (sha256 {ctx.config['sha256'][:16]}…)")
    else:
        ups = [ctx.upstream("quality", s) for s in loaded.source_names]
        inputs = [ref for path, m in ups for ref in input_refs(loaded, path, m)]
        cfg = spec_tok.train
        ctx.say(f"training a byte-level BPE (vocab {cfg.vocab_size}) on a seeded ~{cfg.sample_bytes / 2**20:.0f} MiB "
                f"sample of {len(loaded.source_names)} sources")
        stats: dict[str, list[int]] = {}
        t_train = time.perf_counter()
        tok = train_bpe(training_sample(loaded, stats), cfg.vocab_size, cfg.special_tokens, cfg.min_frequency)
        tok.save(str(staging / FILE_NAME))
        counts = {"documents_in": sum(d for d, _ in stats.values()), "bytes_in": sum(b for _, b in stats.values())}
        details |= {"origin": "trained", "train": ctx.config["train"],
                    "sample": {s: {"documents": d, "bytes": b} for s, (d, b) in stats.items()},
                    "train_seconds": round(time.perf_counter() - t_train, 3)}
        ctx.say(f"trained on {counts['documents_in']} documents ({counts['bytes_in']} bytes) "
                f"in {details['train_seconds']} s")
    encoder, encoder_note = choose_encoder(staging / FILE_NAME, spec_tok.encoder)
    info = describe(staging / FILE_NAME, spec_tok.eos_token, encoder)
    out = {"name": FILE_NAME, "rows": info.vocab_size, "sha256": info.sha256, "bytes": (staging / FILE_NAME).stat().st_size}
    details |= {"eos_id": info.eos_id, "vocab_size": info.vocab_size, "dtype": info.dtype.name,
                "split_long_documents": info.split_long_documents, "encoder": encoder, "encoder_note": encoder_note}
    return Built(
        inputs=inputs, outputs=[output_ref(out, "tokenizer")], counts=counts | {"vocab_size": info.vocab_size},
        token_counting={"method": "exact", "tokenizer_sha256": info.sha256}, details=details,
        summary=f"vocab {info.vocab_size}, EOS {spec_tok.eos_token!r} = {info.eos_id}, dtype {info.dtype.name}, "
                f"long documents {'split at safe cuts' if info.split_long_documents else 'kept whole'}; "
                f"encoder {encoder} ({encoder_note})")


def built_tokenizer(loaded: LoadedSpec) -> tuple[TokenizerInfo, dict]:
    """The tokenizer the ``tokenizer`` asset published, checked against its manifest."""
    path, m = require_manifest(loaded.manifest_root, NAME, None)
    out = next(o for o in m["outputs"] if o["kind"] == "tokenizer")
    file = loaded.storage_root / out["path"]
    if not file.is_file() or sha256_file(file) != out["sha256"]:
        raise ValueError(f"{file}: missing or not the tokenizer its manifest {path} records (sha256 "
                         f"{out['sha256'][:16]}…); rematerialize the {NAME} asset")
    d = m["details"]
    return TokenizerInfo(file, out["sha256"], d["vocab_size"], d["eos_token"], d["eos_id"], np.dtype(d["dtype"]),
                         d["split_long_documents"], d.get("encoder", "huggingface")), m


STAGE = Stage(name=NAME, scope="global", upstream=tokenizer_upstream, config=tokenizer_config, build=build_tokenizer,
              module=__name__)
