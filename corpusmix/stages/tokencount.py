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
document gets an estimate from its ASCII and non-ASCII bytes, each with its own
bytes-per-token ratio (the ones below were fitted on ``../shared/corpus`` with a
tokenizer the pipeline trained there; ``benchmarks/token_estimate.py`` refits and
measures them), and every such number is labelled an estimate. ``tokenize``
measures the error of the estimate per source once the exact counts exist.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

# Bytes per token of a pipeline-trained BPE, fitted by benchmarks/token_estimate.py (see its output).
ASCII_BYTES_PER_TOKEN = 4.0
OTHER_BYTES_PER_TOKEN = 2.0


@dataclass(frozen=True)
class TokenCounting:
    """How a build's token counts before ``tokenize`` were made; recorded in every manifest."""

    method: str  # "exact" (a tokenizer file) or "estimate" (the tokenizer is trained later)
    tokenizer_sha256: str | None = None
    ascii_bytes_per_token: float | None = None
    other_bytes_per_token: float | None = None

    @property
    def exact(self) -> bool:
        return self.method == "exact"

    def describe(self) -> str:
        if self.exact:
            return f"exact: every document encoded with the tokenizer file (sha256 {self.tokenizer_sha256[:12]})"
        return (f"estimate: ASCII bytes / {self.ascii_bytes_per_token:g} + other bytes / "
                f"{self.other_bytes_per_token:g} per document (the tokenizer is trained later; tokenize "
                "measures this estimate's error per source)")

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None} | {"description": self.describe()}


def counting_for(tokenizer_path: str | None, tokenizer_sha256: str | None) -> TokenCounting:
    """Exact when the spec names a tokenizer file, else the script-aware estimate."""
    if tokenizer_path:
        return TokenCounting("exact", tokenizer_sha256)
    return TokenCounting("estimate", None, ASCII_BYTES_PER_TOKEN, OTHER_BYTES_PER_TOKEN)


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def count_tokens(texts: pa.Array | pa.ChunkedArray, counting: TokenCounting, tokenizer_path: str | None) -> np.ndarray:
    """Tokens of each text (int64; a null counts 0): exact or estimated as ``counting`` says."""
    if counting.exact:
        values = texts.to_pylist()
        encoded = _tokenizer(tokenizer_path).encode_batch_fast([v or "" for v in values], add_special_tokens=False)
        return np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(values))
    ascii_bytes, other_bytes = _byte_classes(texts)
    return np.rint(ascii_bytes / counting.ascii_bytes_per_token
                   + other_bytes / counting.other_bytes_per_token).astype(np.int64)


def _byte_classes(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Per text: (ASCII bytes, other bytes), read off Arrow's buffers without Python strings."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    ascii_out, other_out = [], []
    for chunk in chunks:
        chunk = chunk.cast(pa.large_string()) if chunk.type == pa.string() else chunk
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = chunk.buffers()[2]
        high = np.frombuffer(data, dtype=np.uint8) >= 0x80 if data is not None else np.zeros(0, bool)
        cum = np.concatenate([[0], np.cumsum(high, dtype=np.int64)])
        total = np.diff(offsets)
        other = cum[offsets[1:]] - cum[offsets[:-1]]
        ascii_out.append(total - other)
        other_out.append(other)
    if not ascii_out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ascii_out), np.concatenate(other_out)


def count_raw(records: list[tuple[bytes, int]], counting: TokenCounting, tokenizer_path: str | None) -> np.ndarray:
    """Tokens of quarantined records, from their raw bytes (decoded with replacement). ``records``
    holds (head, size): a record held only by its head (a line over the cap) is scaled by
    size / len(head), an estimate; the manifest says how many records were counted so."""
    if not records:
        return np.zeros(0, np.int64)
    heads = pa.array([h.decode("utf-8", errors="replace") for h, _ in records], pa.large_string())
    counted = count_tokens(heads, counting, tokenizer_path)
    lengths = np.array([len(h) for h, _ in records], dtype=np.int64)
    sizes = np.array([s for _, s in records], dtype=np.int64)
    scale = np.where(lengths < sizes, sizes / np.maximum(lengths, 1), 1.0)
    return np.rint(counted * scale).astype(np.int64)
