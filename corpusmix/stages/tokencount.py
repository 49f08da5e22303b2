"""Token counts before tokenization, per document: exact with a tokenizer file, else an estimate.

Stages before ``tokenize`` must report token-weighted rates (a filter that drops
5 % of documents can drop 30 % of tokens), and a data engineer reads those counts
as the truth. With a tokenizer file, ingest counts every document's tokens with
the fast encoder (it runs at tens of MB/s per core, a fraction of ingest's own
cost) and stores them in the ``n_tokens`` column; every later stage sums that
column, so every funnel from ingest on is exact. One bytes-per-token ratio per
source cannot be: a source mixing English (~4.4 bytes per GPT-2 token) with
other scripts (~1 byte per token) is misjudged by a third whenever the mix of
what a stage keeps differs from the mix it was fitted on.

When the pipeline trains the tokenizer, nothing can count before it exists: each
document gets an estimate, linear in its bytes of six character classes (letters,
digits, spaces, other whitespace, ASCII punctuation, non-ASCII bytes) and three counts
(runs of letters, i.e. words; runs of digits; lines), with coefficients for the spec's
vocabulary size (interpolated in log2 of the size between the sizes fitted), and every
such number is labelled an estimate. Bytes per token alone cannot do it: code, math and
prose differ in how many tokens a byte of each class costs, and a larger vocabulary
merges whole words, so words count on their own. The coefficients were
fitted on ``../shared/corpus`` with tokenizers the pipeline trained there;
``benchmarks/token_estimate.py`` refits them and measures the error per source, in
sample and for a source left out of the fit. ``tokenize`` measures the error of every
build's estimate per source once the exact counts exist.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from corpusmix.core.storage import sha256_file

if TYPE_CHECKING:
    from corpusmix.stages.tokenizer import TokenizerInfo

CLASSES = ("letters", "digits", "spaces", "other_whitespace", "punctuation", "non_ascii")
FEATURES = (*CLASSES, "words", "digit_runs", "lines")  # bytes per class, then counts
# Tokens per unit of each feature for a byte-level BPE the pipeline trains, by vocabulary size
# (benchmarks/token_estimate.py --fit prints these: non-negative least squares on the dev corpus).
TOKENS_PER_BYTE: dict[int, tuple[float, ...]] = {
    8192: (0.3009, 0.4992, 0.0, 0.8407, 0.5065, 1.6208, 0.0, 0.3404, 0.9537),
    32768: (0.1472, 0.0126, 0.0, 0.7667, 0.4842, 1.0468, 0.4805, 1.2166, 0.9661),
}


def _byte_class_table() -> np.ndarray:
    table = np.full(256, 5, np.uint8)  # non-ASCII
    for b in range(128):
        c = chr(b)
        table[b] = (0 if c.isalpha() else 1 if c.isdigit() else 2 if c == " " else 3 if c.isspace()
                    else 4)  # punctuation and ASCII controls
    return table


_CLASS_OF_BYTE = _byte_class_table()


def coefficients(vocab_size: int) -> tuple[float, ...]:
    """Tokens per byte of each class for ``vocab_size``: linear in log2(size) between the fitted
    sizes, the nearest fitted size outside them."""
    sizes = sorted(TOKENS_PER_BYTE)
    x = float(np.clip(np.log2(vocab_size), np.log2(sizes[0]), np.log2(sizes[-1])))
    xs = np.log2(sizes)
    return tuple(float(np.interp(x, xs, [TOKENS_PER_BYTE[v][i] for v in sizes])) for i in range(len(FEATURES)))


@dataclass(frozen=True)
class TokenCounting:
    """How a build's token counts before ``tokenize`` were made; recorded in every manifest."""

    method: str  # "exact" (a tokenizer file) or "estimate" (the tokenizer is trained later)
    tokenizer_sha256: str | None = None
    vocab_size: int | None = None  # of the tokenizer to be trained (estimate only)
    tokens_per_byte: tuple[float, ...] | None = None  # per FEATURES (estimate only)

    @property
    def exact(self) -> bool:
        return self.method == "exact"

    def describe(self) -> str:
        if self.exact:
            return f"exact: every document encoded with the tokenizer file (sha256 {self.tokenizer_sha256[:12]})"
        per = ", ".join(f"{c} {t:.3f}" for c, t in zip(FEATURES, self.tokens_per_byte))
        return (f"estimate: per document, linear in its character-class bytes, words, digit runs and lines ({per}; "
                f"fitted on the dev corpus for a trained BPE of {self.vocab_size:,} ids); tokenize measures its "
                "error per source")

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None} | {"description": self.describe()}


def counting_of(loaded) -> TokenCounting:
    """How a build counts tokens before tokenize: exact with a tokenizer file, else the
    character-class estimate for the vocabulary size the build will train. Cheap (the file's
    checksum, cached): content keys and freshness checks ask for it on every build, no-op ones too."""
    tok = loaded.spec.tokenizer
    if tok.path:
        path = loaded.resolve(tok.path)
        return TokenCounting("exact", _sha256(str(path), path.stat().st_size, path.stat().st_mtime_ns))
    return TokenCounting("estimate", None, tok.train.vocab_size, coefficients(tok.train.vocab_size))


def counter_for(loaded) -> tuple[TokenCounting, TokenizerInfo | None]:
    """``counting_of``, and the tokenizer that counts when it is exact: with the encoder tokenize
    will use (tiktoken where it is checked to give the same ids: 7x faster than the tokenizers
    library, which made exact counting cost a third of a build). Only a build that counts needs
    the tokenizer loaded and its encoder probed."""
    counting = counting_of(loaded)
    if not counting.exact:
        return counting, None
    tok = loaded.spec.tokenizer
    path = loaded.resolve(tok.path)
    return counting, _tokenizer_info(str(path), path.stat().st_size, path.stat().st_mtime_ns, tok.eos_token,
                                     tok.encoder)


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


@functools.lru_cache(maxsize=4)
def _tokenizer_info(path: str, size: int, mtime_ns: int, eos_token: str, encoder: str) -> TokenizerInfo:
    """Once per process and file version: the encoder choice probes both encoders (~0.5 s)."""
    from corpusmix.stages.tokenizer import choose_encoder, describe

    return describe(Path(path), eos_token, choose_encoder(Path(path), encoder)[0])


def count_tokens(texts: pa.Array | pa.ChunkedArray, counting: TokenCounting, info: TokenizerInfo | None) -> np.ndarray:
    """Tokens of each text (int64; a null counts 0): exact or estimated as ``counting`` says."""
    if counting.exact:
        return info.count([v or "" for v in texts.to_pylist()])
    return np.rint(features(texts) @ np.asarray(counting.tokens_per_byte)).astype(np.int64)


def token_id_lists(texts: pa.Array | pa.ChunkedArray, info: TokenizerInfo) -> pa.LargeListArray:
    """Each text's ids (no EOS) as one Arrow list per text, exactly as tokenize stores them."""
    flat, lengths = info.encode_documents([v or "" for v in texts.to_pylist()])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))


def features(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per text, FEATURES (an n x 9 int64 array), read off Arrow's buffers without Python
    strings: one cumulative count per feature over the data buffer."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    out = [np.zeros((0, len(FEATURES)), np.int64)]
    for chunk in chunks:
        chunk = chunk.cast(pa.large_string()) if chunk.type == pa.string() else chunk
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = chunk.buffers()[2]
        raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        cls = _CLASS_OF_BYTE[raw]
        starts = np.zeros(len(cls), bool)  # a byte whose class differs from the byte before, or a text's first
        starts[1:] = cls[1:] != cls[:-1]
        starts[offsets[:-1][offsets[:-1] < len(cls)]] = True
        masks = [cls == c for c in range(len(CLASSES))]
        masks += [masks[0] & starts, masks[1] & starts, raw == 0x0A]
        counts = np.empty((len(chunk), len(FEATURES)), np.int64)
        for i, mask in enumerate(masks):
            cum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
            counts[:, i] = cum[offsets[1:]] - cum[offsets[:-1]]
        out.append(counts)
    return np.concatenate(out)


def count_raw(records: list[tuple[bytes, int]], counting: TokenCounting, info: TokenizerInfo | None) -> np.ndarray:
    """Tokens of quarantined records, from their raw bytes (decoded with replacement). ``records``
    holds (head, size): a record held only by its head (a line over the cap) is scaled by
    size / len(head), an estimate; the manifest says how many records were counted so."""
    if not records:
        return np.zeros(0, np.int64)
    heads = pa.array([h.decode("utf-8", errors="replace") for h, _ in records], pa.large_string())
    counted = count_tokens(heads, counting, info)
    lengths = np.array([len(h) for h, _ in records], dtype=np.int64)
    sizes = np.array([s for _, s in records], dtype=np.int64)
    scale = np.where(lengths < sizes, sizes / np.maximum(lengths, 1), 1.0)
    return np.rint(counted * scale).astype(np.int64)
