"""Trainer side: the mixed shards as ``seq_len``-token samples, in training order, without torch.

The shards' ``.bin`` files, in shard order, are one token stream of
``total_tokens + 1`` tokens. Sample k is the window of ``seq_len + 1`` tokens
starting at k * seq_len: its inputs are the first ``seq_len`` tokens and its
targets the last ``seq_len`` (the same window shifted by one). Windows overlap by
exactly one token, so over samples 0 .. S-1 (S = total_tokens // seq_len) every
token after the first is a target exactly once per pass, and no sample is padded.
Sample boundaries ignore document and shard boundaries, as in Megatron's GPT
dataset: EOS tokens separate documents inside a sample.

A trainer never reads damage silently: ``TokenStream.from_dir`` checks the set against
its shard manifests when it opens it (every shard of the set present, each ``.bin``
of the size its token count implies, each ``.idx`` with its sequence count), and by
default recomputes every file's sha256 and the largest token id of each shard
(``verify=True``; ~35 ms for the 20M-token dev set, see benchmarks/mix_throughput.py).
Opened with ``verify=False``, each sample is checked instead: a token id at or above
the vocabulary size stops the read of the sample that holds it.

Sources: ``SampleReader.target_sources(k)`` gives, for each target token of sample k,
the index (into ``TokenStream.sources``) of the source it came from, read from the
shards' lineage files (one row per document piece), never guessed: a trainer can
attribute its per-token loss to sources exactly. Lineage is loaded one shard at a time
and at most two shards are held, so memory is bounded by a shard's lineage.

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
import pyarrow.parquet as pq

from corpusmix.core.indexed import IndexedReader
from corpusmix.core.storage import sha256_file


class ShardSetError(ValueError):
    """The mixed shards on disk are not the set their manifests describe."""


class TokenStream:
    """The concatenated tokens of a run's shards, memory-mapped."""

    def __init__(self, shard_prefixes: list[Path], vocab_size: int | None = None, sources: list[str] | None = None):
        if not shard_prefixes:
            raise ValueError("no shards given")
        self.prefixes = list(shard_prefixes)
        self.sources = sources  # the names lineage's source codes index (None: a set from before they were recorded)
        self.readers = [IndexedReader(p) for p in shard_prefixes]
        dtypes = {r.index.dtype for r in self.readers}
        if len(dtypes) != 1:
            raise ValueError(f"shards mix token dtypes {sorted(map(str, dtypes))}")
        self.dtype = dtypes.pop()
        self.vocab_size = vocab_size
        self.ids_checked = False  # every id below vocab_size, checked when the set was opened
        self._arrays = [r.tokens for r in self.readers]
        self._offsets = [0]
        for a in self._arrays:
            self._offsets.append(self._offsets[-1] + len(a))

    @classmethod
    def from_dir(cls, directory: str | Path, verify: bool = True) -> TokenStream:
        """The shards of one mixed_shards output directory, checked against their manifests
        (``shard-*.json``): the whole set present, sizes and counts as recorded, and with
        ``verify`` every file's sha256. Raises ShardSetError naming the file and the fix."""
        directory = Path(directory)
        infos = {}
        for p in sorted(directory.glob("shard-*.json")):
            info = orjson.loads(p.read_bytes())
            infos[info["shard"]] = info
        if not infos:
            raise ShardSetError(f"{directory}: no shard manifests (shard-*.json): not a mixed_shards output")
        first = next(iter(infos.values()))
        if "shards_total" not in first:
            raise ShardSetError(f"{directory}: shards written before the set was recorded in each manifest; "
                                "fix: rebuild them (corpusmix build)")
        expected = first["shards_total"]
        missing = sorted(set(range(expected)) - set(infos))
        if missing or len(infos) != expected:
            raise ShardSetError(f"{directory}: {len(missing)} of the set's {expected} shards are missing "
                                f"(shard {', '.join(map(str, missing[:5]))}{'…' if len(missing) > 5 else ''}); "
                                "fix: restore them or rebuild the set (corpusmix build)")
        prefixes = [directory / f"shard-{k:05d}" for k in range(expected)]
        for k, prefix in enumerate(prefixes):
            _check_shard(prefix, infos[k], verify)
        stream = cls(prefixes, first.get("vocab_size"), first.get("sources"))
        if verify and stream.vocab_size is not None:  # once per shard here, so no sample needs it again
            for prefix, tokens in zip(prefixes, stream._arrays):
                if len(tokens) and int(tokens.max()) >= stream.vocab_size:
                    raise ShardSetError(f"{prefix.with_suffix('.bin')}: token id {int(tokens.max())} is beyond the "
                                        f"vocabulary of {stream.vocab_size}; fix: rebuild the set (corpusmix build)")
            stream.ids_checked = True
        if len(stream) != first["stream_tokens"]:
            raise ShardSetError(f"{directory}: {len(stream):,} tokens on disk, the set holds "
                                f"{first['stream_tokens']:,}; fix: rebuild it")
        return stream

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


def _check_shard(prefix: Path, info: dict, verify: bool) -> None:
    """One shard against its manifest: sizes and counts always, checksums when ``verify``."""
    binf, idxf = prefix.with_suffix(".bin"), prefix.with_suffix(".idx")
    for f in (binf, idxf):
        if not f.is_file():
            raise ShardSetError(f"{f}: missing; fix: restore it or rebuild the set (corpusmix build)")
    itemsize = np.dtype(info["dtype"]).itemsize
    if binf.stat().st_size != info["tokens"] * itemsize:
        raise ShardSetError(f"{binf}: {binf.stat().st_size:,} bytes, the manifest says {info['tokens']:,} tokens "
                            f"of {itemsize} bytes; fix: rebuild the set (corpusmix build)")
    if verify:
        for f, key in ((binf, "bin_sha256"), (idxf, "idx_sha256")):
            if sha256_file(f) != info[key]:
                raise ShardSetError(f"{f}: sha256 differs from its manifest {prefix.name}.json (damaged on disk or in "
                                    "transfer); fix: restore it or rebuild the set (corpusmix build)")
    reader = IndexedReader(prefix)
    if len(reader) != info["sequences"]:
        raise ShardSetError(f"{idxf}: {len(reader)} sequences, the manifest says {info['sequences']}; "
                            "fix: rebuild the set (corpusmix build)")


class SourceMap:
    """The source of every token of a stream, from its shards' lineage files (``lineage-NNNNN.parquet``
    beside each shard), loaded on demand and at most ``keep`` shards at a time."""

    def __init__(self, stream: TokenStream, keep: int = 2):
        if stream.sources is None:
            raise ShardSetError(f"{stream.prefixes[0].parent}: the shard manifests do not name their sources "
                                "(a set built before they did); fix: rebuild it (corpusmix build)")
        self.stream, self.keep = stream, keep
        self.code = {name: i for i, name in enumerate(stream.sources)}
        self._loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _shard(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(stream start, source index) of each lineage row of shard k."""
        if k not in self._loaded:
            path = self.stream.prefixes[k].parent / f"lineage-{self.stream.prefixes[k].name.split('-')[-1]}.parquet"
            if not path.is_file():
                raise ShardSetError(f"{path}: missing; the shards' sources cannot be told without it; fix: restore "
                                    "it or rebuild the set (corpusmix build)")
            table = pq.read_table(path, columns=["stream_start", "source"], read_dictionary=["source"])
            src = table.column("source").combine_chunks()
            index = np.asarray([self.code[n] for n in src.dictionary.to_pylist()], np.int16)  # file's -> set's
            codes = index[src.indices.to_numpy(zero_copy_only=False)]
            while len(self._loaded) >= self.keep:
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[k] = (table.column("stream_start").to_numpy(), codes)
        return self._loaded[k]

    def codes(self, start: int, stop: int) -> np.ndarray:
        """The source index of each token in [start, stop)."""
        offsets = self.stream._offsets
        k = bisect.bisect_right(offsets, start) - 1
        parts = []
        while start < stop:
            end = min(stop, offsets[k + 1])
            starts, codes = self._shard(k)
            parts.append(codes[np.searchsorted(starts, np.arange(start, end), side="right") - 1])
            start, k = end, k + 1
        return np.concatenate(parts) if len(parts) != 1 else parts[0]


class SampleReader:
    """``seq_len``-token samples with next-token targets, in training order."""

    def __init__(self, stream: TokenStream, seq_len: int):
        if seq_len <= 0:
            raise ValueError("seq_len must be positive")
        self.stream, self.seq_len = stream, seq_len
        self.num_samples = (len(stream) - 1) // seq_len
        self._sources: SourceMap | None = None

    def target_sources(self, k: int) -> np.ndarray:
        """For each target token of sample k, the index of its source in ``stream.sources`` (int16)."""
        if not 0 <= k < self.num_samples:
            raise IndexError(f"sample {k} outside 0..{self.num_samples - 1}")
        if self._sources is None:
            self._sources = SourceMap(self.stream)
        return self._sources.codes(k * self.seq_len + 1, (k + 1) * self.seq_len + 1)

    def source_counts(self, k: int) -> np.ndarray:
        """Target tokens of sample k per source (``stream.sources`` order): for a trainer that logs one
        loss per sample (``trainer.monitor``'s per-sample path)."""
        return np.bincount(self.target_sources(k), minlength=len(self.stream.sources))

    def __len__(self) -> int:
        return self.num_samples

    def window(self, k: int) -> np.ndarray:
        """The seq_len + 1 tokens of sample k (inputs = [:-1], targets = [1:])."""
        if not 0 <= k < self.num_samples:
            raise IndexError(f"sample {k} outside 0..{self.num_samples - 1}")
        start = k * self.seq_len
        return self._checked(k, self.stream.tokens(start, start + self.seq_len + 1))

    def _checked(self, k: int, window: np.ndarray) -> np.ndarray:
        """The window, unless it holds an id the tokenizer cannot have made (a damaged shard read
        without checksums): a model would index past its embedding table."""
        vocab = self.stream.vocab_size
        if vocab is not None and not self.stream.ids_checked and len(window) and int(window.max()) >= vocab:
            raise ShardSetError(f"sample {k} holds token id {int(window.max())}, beyond the vocabulary of {vocab}: "
                                "the shards are damaged; open them with verify=True to find which")
        return window

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
            w = self._checked(k, tokens(k * n, k * n + n + 1))
            yield k, w[:-1], w[1:]
