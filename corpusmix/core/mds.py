"""MosaicML streaming's MDS format (version 2, uncompressed), written without the library.

A dataset directory holds ``index.json`` and shards ``shard.NNNNN.mds``. A shard is
``[samples: u32][offsets: u32 x (samples + 1)][config: JSON][samples...]``, the offsets
absolute in the file; a sample is the u32 byte sizes of its variable-size columns, then
every column's bytes, columns in name order. The config (also in each shard's entry of
``index.json``) names the columns, their encodings and fixed sizes. Only the encodings
written here are supported: ``ndarray:<dtype>:<length>`` (fixed size), ``str``, ``json``
and ``int64``. The tests read these files with mosaicml-streaming's own reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INDEX = "index.json"
_SCALARS = {"int64": np.dtype("<i8")}


def _fixed_size(encoding: str) -> int | None:
    if encoding in _SCALARS:
        return _SCALARS[encoding].itemsize
    if encoding.startswith("ndarray:"):
        _, dtype, shape = encoding.split(":")
        return int(np.prod([int(n) for n in shape.split(",")])) * np.dtype(dtype).itemsize
    if encoding in ("str", "json"):
        return None
    raise ValueError(f"MDS encoding {encoding!r} is not one this writer supports")


def _encode(encoding: str, value) -> bytes:
    if encoding == "str":
        return value.encode("utf-8")
    if encoding == "json":
        return json.dumps(value).encode("utf-8")
    if encoding in _SCALARS:
        return np.asarray(value, _SCALARS[encoding]).tobytes()
    _, dtype, _ = encoding.split(":")
    return np.ascontiguousarray(value, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


class MdsWriter:
    """Writes one MDS dataset directory; ``close`` writes ``index.json`` and returns its shards."""

    def __init__(self, out: Path, columns: dict[str, str], shard_bytes: int):
        self.out, self.shard_bytes = Path(out), shard_bytes
        self.out.mkdir(parents=True, exist_ok=True)
        self.names = sorted(columns)
        self.encodings = [columns[n] for n in self.names]
        self.sizes = [_fixed_size(e) for e in self.encodings]
        self.config = {"column_encodings": self.encodings, "column_names": self.names, "column_sizes": self.sizes,
                       "compression": None, "format": "mds", "hashes": [], "size_limit": shard_bytes, "version": 2}
        self._config_bytes = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self.shards: list[dict] = []
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, sample: dict) -> None:
        body, head = [], []
        for name, encoding, size in zip(self.names, self.encodings, self.sizes):
            data = _encode(encoding, sample[name])
            if size is None:
                head.append(len(data))
            elif len(data) != size:
                raise ValueError(f"column {name!r}: {len(data)} bytes, but {encoding} is {size}")
            body.append(data)
        record = np.asarray(head, "<u4").tobytes() + b"".join(body)
        if self._pending and self._pending_bytes + len(record) + 4 > self.shard_bytes:
            self._flush()
        self._pending.append(record)
        self._pending_bytes += len(record) + 4

    def _flush(self) -> None:
        n = len(self._pending)
        lengths = np.fromiter(map(len, self._pending), np.int64, n)
        head = 4 + 4 * (n + 1) + len(self._config_bytes)
        offsets = (head + np.concatenate([[0], np.cumsum(lengths)])).astype("<u4")
        data = np.uint32(n).tobytes() + offsets.tobytes() + self._config_bytes + b"".join(self._pending)
        name = f"shard.{len(self.shards):05d}.mds"
        (self.out / name).write_bytes(data)
        self.shards.append(self.config | {"raw_data": {"basename": name, "bytes": len(data), "hashes": {}},
                                          "samples": n, "zip_data": None})
        self._pending, self._pending_bytes = [], 0

    def close(self) -> list[dict]:
        if self._pending:
            self._flush()
        (self.out / INDEX).write_text(json.dumps({"shards": self.shards, "version": 2}, sort_keys=True))
        return self.shards
