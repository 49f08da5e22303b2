"""A PyTorch dataset over the mixed shards (torch is optional: only this module imports it).

It wraps ``loader.SampleReader``: rank ``rank`` of ``world`` reads samples
start + rank, start + rank + world, ... in training order; inside a rank, DataLoader
workers take turns (worker w of n reads every n-th of the rank's samples, starting
at its w-th), so any number of workers yields the rank's samples exactly once.
With ``num_workers > 1`` the DataLoader interleaves the workers' outputs in turn,
which restores the rank's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from corpusmix.trainer.loader import SampleReader, TokenStream


class MixedShardsDataset(IterableDataset):
    """Yields {"sample": k, "input_ids": int64[seq_len], "labels": int64[seq_len]} and, with ``sources``,
    "sources": int64[seq_len], the source of each label (an index into ``reader.stream.sources``, from
    the lineage): what ``trainer.monitor.SourceLossMonitor`` attributes per-token loss by."""

    def __init__(self, shards_dir: str | Path, seq_len: int, rank: int = 0, world: int = 1, start: int = 0,
                 sources: bool = True):
        super().__init__()
        self.shards_dir, self.seq_len, self.rank, self.world, self.start = Path(shards_dir), seq_len, rank, world, start
        self.sources = sources
        self._reader: SampleReader | None = None

    @property
    def reader(self) -> SampleReader:
        if self._reader is None:  # opened lazily, so each DataLoader worker maps the files itself
            self._reader = SampleReader(TokenStream.from_dir(self.shards_dir), self.seq_len)
        return self._reader

    def __len__(self) -> int:
        return len(self.reader.indices(self.start, self.rank, self.world))

    def __iter__(self):
        indices = self.reader.indices(self.start, self.rank, self.world)
        info = get_worker_info()
        if info is not None:
            indices = indices[info.id::info.num_workers]
        for k in indices:
            w = self.reader.window(k).astype(np.int64)
            item = {"sample": k, "input_ids": torch.from_numpy(w[:-1]), "labels": torch.from_numpy(w[1:])}
            if self.sources:
                item["sources"] = torch.from_numpy(self.reader.target_sources(k).astype(np.int64))
            yield item
