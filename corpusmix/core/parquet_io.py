"""Parquet output shared by the stages: one set of writer options and a rolling part writer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.storage import file_record, sha256_file

# zstd level 1: 1.7x faster to write than level 3 on this corpus for ~12 % larger files.
PARQUET_OPTS = dict(compression="zstd", compression_level=1, write_statistics=["doc_id", "record_no"],
                    use_dictionary=["source", "file"])


class PartWriter:
    """Rolls Parquet parts over at ``part_bytes`` of text so no file grows with the corpus."""

    def __init__(self, staging: Path, prefix: str, schema: pa.Schema, part_bytes: int):
        self.staging, self.prefix, self.schema, self.part_bytes = staging, prefix, schema, part_bytes
        self.parts: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self._cur: dict | None = None

    def write(self, table: pa.Table) -> None:
        """Append documents; each part records its rows, text bytes and tokens (the ``n_bytes`` and
        ``n_tokens`` columns), so a stage's counts are sums of its parts'."""
        if table.num_rows == 0:
            return
        if self._writer is None:
            name = f"{self.prefix}-{len(self.parts):03d}.parquet"
            self._writer = pq.ParquetWriter(self.staging / name, self.schema, **PARQUET_OPTS)
            self._cur = {"name": name, "rows": 0, "text_bytes": 0, "tokens": 0}
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._cur["rows"] += table.num_rows
        self._cur["text_bytes"] += pc.sum(table.column("n_bytes")).as_py() or 0
        self._cur["tokens"] += pc.sum(table.column("n_tokens")).as_py() or 0
        if self._cur["text_bytes"] >= self.part_bytes:
            self._close_part()

    def _close_part(self) -> None:
        if self._writer is not None:
            self._writer.close()
            path = self.staging / self._cur["name"]
            self._cur |= {"sha256": sha256_file(path), "bytes": path.stat().st_size}
            self.parts.append(self._cur)
            self._writer, self._cur = None, None

    def close(self) -> list[dict]:
        self._close_part()
        return self.parts


def write_parquet(table: pa.Table, path: Path) -> dict:
    """Write one whole table with the shared options; returns its name, rows, sha256 and size."""
    pq.write_table(table, path, row_group_size=max(1, table.num_rows), **PARQUET_OPTS)
    return file_record(path, table.num_rows)


def link_part(src: Path, staging: Path, name: str) -> dict:
    """An output part that is exactly an input part (a stage kept every row of it unchanged): a
    hard link to it, not a rewrite (a copy across filesystems), recorded as ``PartWriter`` records
    a part. Published files are never modified in place, so sharing the inode is safe."""
    path = staging / name
    try:
        os.link(src, path)
    except OSError:
        shutil.copyfile(src, path)
    counts = pq.read_table(path, columns=["n_bytes", "n_tokens"])
    return file_record(path, counts.num_rows) | {"text_bytes": pc.sum(counts.column("n_bytes")).as_py() or 0,
                                                 "tokens": pc.sum(counts.column("n_tokens")).as_py() or 0}
