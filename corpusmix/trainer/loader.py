"""Trainer side: the mixed shards as ``seq_len``-token samples, in training order, without torch.

The shards' ``.bin`` files, in shard order, are one token stream of
``total_tokens + 1`` tokens. Sample k is the window of ``seq_len + 1`` tokens
starting at k * seq_len: its inputs are the first ``seq_len`` tokens and its
targets the last ``seq_len`` (the same window shifted by one). Windows overlap by
exactly one token, so over samples 0 .. S-1 (S = total_tokens // seq_len) every
token after the first is a target exactly once per pass, and no sample is padded.
Sample boundaries ignore document and shard boundaries, as in Megatron's GPT
dataset: EOS tokens separate documents inside a sample.

Data parallelism: rank r of a world of size W reads samples start + r,
start + r + W, ... so the ranks partition the samples with no overlap and no gap,
and a run resumed at ``start`` (the number of samples already consumed, a multiple
of W when the world size stays the same) continues exactly where it stopped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from corpusmix.core.indexed import IndexedReader


class TokenStream:
    """The concatenated tokens of a run's shards, memory-mapped."""

    def __init__(self, shard_prefixes: list[Path]):
        if not shard_prefixes:
            raise ValueError("no shards given")
        self.readers = [IndexedReader(p) for p in shard_prefixes]
        dtypes = {r.index.dtype for r in self.readers}
        if len(dtypes) != 1:
            raise ValueError(f"shards mix token dtypes {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self._arrays = [r.tokens for r in self.readers]
        self._offsets = [0]
        for a in self._arrays:
            self._offsets.append(self._offsets[-1] + len(a))

    @classmethod
    def from_dir(cls, directory: str | Path) -> TokenStream:
        """The shards of one mixed_shards output directory (``shard-*.json`` say which, in order)."""
        directory = Path(directory)
        infos = sorted(orjson.loads(p.read_bytes())["shard"] for p in directory.glob("shard-*.json"))
        if infos != list(range(len(infos))) or not infos:
            raise ValueError(f"{directory}: shard manifests are missing or not numbered 0..n-1 ({infos[:5]}…)")
        return cls([directory / f"shard-{k:05d}" for k in infos])

    def __len__(self) -> int:
        return self._offsets[-1]

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the stream: a view inside one shard, a copy across shards."""
        k = bisect.bisect_right(self._offsets, start) - 1
        base = self._offsets[k]
        if stop <= self._offsets[k + 1]:
            return self._arrays[k][start - base:stop - base]
        parts, pos = [], start
        while pos < stop:
            base, end = self._offsets[k], min(stop, self._offsets[k + 1])
            parts.append(self._arrays[k][pos - base:end - base])
            pos = end
            k += 1
        return np.concatenate(parts)


class SampleReader:
    """``seq_len``-token samples with next-token targets, in training order."""

    def __init__(self, stream: TokenStream, seq_len: int):
        if seq_len <= 0:
            raise ValueError("seq_len must be positive")
        self.stream, self.seq_len = stream, seq_len
        self.num_samples = (len(stream) - 1) // seq_len

    def __len__(self) -> int:
        return self.num_samples

    def window(self, k: int) -> np.ndarray:
        """The seq_len + 1 tokens of sample k (inputs = [:-1], targets = [1:])."""
        if not 0 <= k < self.num_samples:
            raise IndexError(f"sample {k} outside 0..{self.num_samples - 1}")
        start = k * self.seq_len
        return self.stream.tokens(start, start + self.seq_len + 1)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        w = self.window(k)
        return w[:-1], w[1:]

    def indices(self, start: int = 0, rank: int = 0, world: int = 1) -> range:
        """The samples rank ``rank`` of ``world`` reads, resuming after ``start`` consumed samples."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        return range(start + rank, self.num_samples, world)

    def iter(self, start: int = 0, rank: int = 0, world: int = 1) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(sample index, inputs, targets) for this rank, in training order."""
        n, tokens = self.seq_len, self.stream.tokens
        for k in self.indices(start, rank, world):
            w = tokens(k * n, k * n + n + 1)
            yield k, w[:-1], w[1:]
