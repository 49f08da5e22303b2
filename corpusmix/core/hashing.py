"""Vectorised, portable hashing shared by stages (numpy uint64 arithmetic wraps mod 2^64)."""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import pyarrow as pa

_U = np.uint64


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-spread bijection of uint64 values."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + _U(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
        return x ^ (x >> _U(31))


_BASE = 0x100000001B3          # odd, so invertible mod 2^64
_BASE_INV = pow(_BASE, -1, 1 << 64)


@functools.lru_cache(maxsize=1)
def _powers_cache() -> dict:
    return {"n": 0, "pow": np.ones(1, np.uint64), "inv": np.ones(1, np.uint64)}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE^j and BASE^-j (mod 2^64) for j < n, grown on demand and reused."""
    cache = _powers_cache()
    if cache["n"] < n:
        size = max(n, 2 * cache["n"], 1 << 16)
        with np.errstate(over="ignore"):
            for key, base in (("pow", _BASE), ("inv", _BASE_INV)):
                factors = np.full(size, base, dtype=np.uint64)
                factors[0] = 1
                cache[key] = np.cumprod(factors, dtype=np.uint64)
        cache["n"] = size
    return cache["pow"][:n], cache["inv"][:n]


def word_hashes(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A 64-bit hash of every whitespace-separated word of UTF-8 ``data``, in order, and the
    byte offset where each word starts; no Python call per word: a polynomial prefix hash
    over the bytes, read off at word bounds."""
    b = np.frombuffer(data, dtype=np.uint8)
    empty = (np.empty(0, np.uint64), np.empty(0, np.int64))
    if len(b) == 0:
        return empty
    space = (b == 32) | ((b >= 9) & (b <= 13))
    word = ~space
    starts = np.flatnonzero(word & np.concatenate(([True], space[:-1])))
    ends = np.flatnonzero(word & np.concatenate((space[1:], [True]))) + 1
    if len(starts) == 0:
        return empty
    pw, inv = _powers(len(b) + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(b) + 1, dtype=np.uint64)
        np.cumsum((b.astype(np.uint64) + _U(1)) * pw[: len(b)], dtype=np.uint64, out=prefix[1:])
        return mix64((prefix[ends] - prefix[starts]) * inv[starts]), starts


NGRAM_MULT = np.uint64(0x9E3779B97F4A7C15)


def ngram_hashes(words: np.ndarray, owner: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every run of ``k`` consecutive (mixed) word hashes that belong to one
    owner (document), and the index of each run's first word. A polynomial in the word hashes,
    so order matters, as in a k-gram; dedup's shingles and decontamination's n-grams share it."""
    m = len(words) - k + 1
    if m <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    acc = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            acc = acc * NGRAM_MULT + words[j:j + m]
    inside = np.flatnonzero(owner[:m] == owner[k - 1:])
    return acc[inside], inside


def text_digests(texts: pa.Array | pa.ChunkedArray) -> pa.FixedSizeBinaryArray:
    """A 128-bit BLAKE2b digest of each text's UTF-8 bytes (a null hashes as no bytes), read off
    Arrow's data buffer without building Python strings: cheap enough (~1 GB/s) to prove a text
    unchanged where re-deriving something from it (its token ids) costs 50x more."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    out = []
    for chunk in chunks:
        chunk = chunk.cast(pa.large_string()) if chunk.type == pa.string() else chunk
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = memoryview(chunk.buffers()[2] or b"")
        out += [hashlib.blake2b(data[a:b], digest_size=16).digest() for a, b in zip(offsets[:-1], offsets[1:])]
    return pa.array(out, pa.binary(16))
