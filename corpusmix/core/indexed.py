"""Token stores in the Megatron indexed-dataset format (``.bin`` + ``.idx``).

Megatron-LM, Megatron-Core, NeMo and GPT-NeoX read token data from a pair of
files sharing a path prefix. corpusmix writes that format so its outputs go to
those trainers without conversion, and reads it back without torch.

``PREFIX.bin`` is the tokens of every sequence, back to back, in the token
dtype, native little-endian, with no header and no padding.

``PREFIX.idx`` is, in order (all integers little-endian):

====================  ==========================  =====================================
bytes                 type                        meaning
====================  ==========================  =====================================
9                     ``b"MMIDIDX\\x00\\x00"``     magic
8                     uint64                      format version, always 1
1                     uint8                       dtype code (below)
8                     uint64                      S, the number of sequences
8                     uint64                      D, the length of the document index
4 * S                 int32[S]                    tokens per sequence
8 * S                 int64[S]                    byte offset of each sequence in .bin
8 * D                 int64[D]                    document index: 0, then after every
                                                  document the number of sequences so far
====================  ==========================  =====================================

Dtype codes: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
7 float32, 8 uint16. corpusmix stores one sequence per document, so
D = S + 1 and the document index is 0, 1, ..., S. (Megatron's multimodal
variant appends an int8 mode per sequence; corpusmix never writes it.)

The writer streams: tokens go to ``.bin`` as they come, sequence lengths to a
spill file, and the index is assembled at ``close`` in fixed-size chunks, so
memory does not grow with the number of documents. Files are written inside a
stage's staging directory, which is published atomically as a whole.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
               np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7, np.dtype(np.uint16): 8}
CODE_DTYPES = {code: dt for dt, code in DTYPE_CODES.items()}
_CHUNK = 1 << 20  # sequences per chunk when assembling the index


class IndexedFormatError(ValueError):
    """A .bin/.idx pair that is not a valid indexed dataset (the message names the file and the fix)."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits with room to spare (Megatron's 65,500 cut-off), else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


def paths(prefix: Path) -> tuple[Path, Path]:
    prefix = Path(prefix)
    return prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")


class IndexedWriter:
    """Append documents (one sequence each); ``close`` writes the index."""

    def __init__(self, prefix: Path, dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"dtype {self.dtype} has no Megatron code; use one of {sorted(map(str, DTYPE_CODES))}")
        self.bin_path, self.idx_path = paths(prefix)
        self._sizes_path = self.idx_path.with_name(self.idx_path.name + ".sizes")
        self._bin = open(self.bin_path, "wb")
        self._sizes = open(self._sizes_path, "wb")
        self.sequences = 0
        self.tokens = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append ``len(lengths)`` documents whose tokens are concatenated in ``tokens``."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens):
            raise ValueError(f"lengths sum to {int(lengths.sum())} but {len(tokens)} tokens were given")
        if len(lengths) and (lengths.min() < 0 or lengths.max() > np.iinfo(np.int32).max):
            raise ValueError("a sequence length is negative or does not fit the format's int32")
        self._bin.write(memoryview(np.ascontiguousarray(tokens, dtype=self.dtype)))
        self._sizes.write(lengths.astype(np.int32).tobytes())
        self.sequences += len(lengths)
        self.tokens += len(tokens)

    def close(self) -> None:
        self._bin.close()
        self._sizes.close()
        n, item = self.sequences, self.dtype.itemsize
        with open(self.idx_path, "wb") as idx, open(self._sizes_path, "rb") as sizes:
            idx.write(HEADER.pack(MAGIC, VERSION, DTYPE_CODES[self.dtype], n, n + 1))
            while chunk := sizes.read(4 * _CHUNK):
                idx.write(chunk)
            sizes.seek(0)
            offset = 0
            while chunk := sizes.read(4 * _CHUNK):
                lengths = np.frombuffer(chunk, dtype=np.int32).astype(np.int64) * item
                pointers = np.empty_like(lengths)
                pointers[0] = offset
                np.cumsum(lengths[:-1], out=pointers[1:])
                pointers[1:] += offset
                offset += int(lengths.sum())
                idx.write(pointers.tobytes())
            for start in range(0, n + 1, _CHUNK):
                idx.write(np.arange(start, min(n + 1, start + _CHUNK), dtype=np.int64).tobytes())
        os.unlink(self._sizes_path)

    def abort(self) -> None:
        for f in (self._bin, self._sizes):
            f.close()
        for p in (self.bin_path, self.idx_path, self._sizes_path):
            p.unlink(missing_ok=True)


@dataclass(frozen=True)
class Index:
    dtype: np.dtype
    sizes: np.ndarray          # int32[S], memory-mapped
    pointers: np.ndarray       # int64[S], memory-mapped
    document_index: np.ndarray  # int64[D]

    def __len__(self) -> int:
        return len(self.sizes)


def read_index(prefix: Path) -> Index:
    """Memory-map an ``.idx`` and check it against its ``.bin``; raises IndexedFormatError."""
    bin_path, idx_path = paths(prefix)
    for p in (bin_path, idx_path):
        if not p.is_file():
            raise IndexedFormatError(f"{p}: missing; an indexed dataset needs both .bin and .idx (rebuild the stage)")
    size = idx_path.stat().st_size
    if size < HEADER.size:
        raise IndexedFormatError(f"{idx_path}: {size} bytes, shorter than the {HEADER.size}-byte header")
    raw = np.memmap(idx_path, mode="r", dtype=np.uint8)
    magic, version, code, n, d = HEADER.unpack(bytes(raw[:HEADER.size]))
    if magic != MAGIC or version != VERSION:
        raise IndexedFormatError(f"{idx_path}: not a Megatron index (magic {magic!r}, version {version})")
    if code not in CODE_DTYPES:
        raise IndexedFormatError(f"{idx_path}: unknown dtype code {code}")
    want = HEADER.size + 4 * n + 8 * n + 8 * d
    if size not in (want, want + n):  # + n: Megatron's multimodal mode bytes
        raise IndexedFormatError(f"{idx_path}: {size} bytes, but its header (S={n}, D={d}) implies {want}")
    off = HEADER.size
    sizes = raw[off:off + 4 * n].view(np.int32)
    pointers = raw[off + 4 * n:off + 12 * n].view(np.int64)
    doc_index = raw[off + 12 * n:off + 12 * n + 8 * d].view(np.int64)
    dtype = CODE_DTYPES[code]
    if n and int(pointers[-1]) + int(sizes[-1]) * dtype.itemsize != bin_path.stat().st_size:
        raise IndexedFormatError(f"{bin_path}: {bin_path.stat().st_size} bytes, but {idx_path.name} "
                                 f"says {int(pointers[-1]) + int(sizes[-1]) * dtype.itemsize}")
    return Index(dtype, sizes, pointers, doc_index)


class IndexedReader:
    """Random access to the sequences of an indexed dataset (numpy memmap, no torch)."""

    def __init__(self, prefix: Path):
        self.prefix = Path(prefix)
        self.index = read_index(self.prefix)
        bin_path, _ = paths(self.prefix)
        # a plain ndarray view of the memmap: slicing it skips np.memmap's per-slice bookkeeping
        self.tokens = (np.asarray(np.memmap(bin_path, mode="r", dtype=self.index.dtype)) if bin_path.stat().st_size
                       else np.empty(0, self.index.dtype))
        self.starts = np.asarray(self.index.pointers) // self.index.dtype.itemsize  # first token of each sequence

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.starts[i])
        return self.tokens[start:start + int(self.index.sizes[i])]
