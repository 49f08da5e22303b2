"""Parquet: row batches of a bounded byte size, with every unusable row a bad record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.spec import Source
from corpusmix.core.storage import sha256_file
from corpusmix.readers.common import (
    CANDIDATE_SCHEMA,
    BadRecord,
    FileReadResult,
    RawBatch,
    UnreadableFileError,
    dump_json,
    id_column,
    meta_fields,
    metadata_json,
)


def read_parquet(path: Path, source: Source, block_bytes: int, info: FileReadResult) -> Iterator[RawBatch]:
    """Stream a Parquet file in record batches; rows whose text column is not a string are bad."""
    info.sha256 = sha256_file(path)
    info.bytes = path.stat().st_size
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        md = pf.metadata
        row_bytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)) / max(1, md.num_rows)
        rows_per_batch = int(max(1, min(65_536, block_bytes // max(1.0, row_bytes))))
        batches = pf.iter_batches(batch_size=rows_per_batch)
        row = 1
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            table = pa.Table.from_batches([batch])
            info.lines += table.num_rows
            yield _parquet_batch(table, names, row, source)
            row += table.num_rows
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise UnreadableFileError(str(path), f"not a readable Parquet file: {e}") from e


def _decoded(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One array, dictionary encoding undone (a dictionary of strings is still text)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def _row_is_valid(table: pa.Table, i: int) -> bool:
    try:
        table.slice(i, 1).validate(full=True)
        return True
    except pa.ArrowInvalid:
        return False


def _parquet_batch(table: pa.Table, names: list[str], first_row: int, source: Source) -> RawBatch:
    """Candidates from one Parquet batch. Rows are bad, in the documented order of reasons, when a
    string column holds invalid UTF-8 (non-validating writers produce that), the text column is
    not text, or the id column is neither text nor an integer."""
    n = table.num_rows
    record_no = pa.array(range(first_row, first_row + n), pa.int64())
    reasons: list[tuple[str, str] | None] = [None] * n
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        for i in range(n):
            if not _row_is_valid(table, i):
                reasons[i] = ("invalid_utf8", "a string column holds invalid UTF-8")
    text = _decoded(table.column(source.text_field)) if source.text_field in names else pa.nulls(n, pa.string())
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type) or pa.types.is_null(text.type)):
        for i in np.flatnonzero(pc.is_valid(text).to_numpy(zero_copy_only=False)):
            reasons[i] = reasons[i] or ("non_string_text", f"column {source.text_field!r} has type {text.type}")
        text = pa.nulls(n, pa.string())
    ids = id_column(table.set_column(table.schema.get_field_index(source.id_field), source.id_field,
                                      _decoded(table.column(source.id_field)))
                     if source.id_field in names else table, source)
    if ids is None:
        id_col = _decoded(table.column(source.id_field))
        for i in np.flatnonzero(pc.is_valid(id_col).to_numpy(zero_copy_only=False)):
            reasons[i] = reasons[i] or ("invalid_id", f"column {source.id_field!r} has type {id_col.type}")
        ids = pa.nulls(n, pa.string())
    bad_idx = [i for i, r in enumerate(reasons) if r is not None]
    bad: list[BadRecord] = []
    for i in bad_idx:
        raw = table.slice(i, 1).to_pylist()[0] if reasons[i][0] != "invalid_utf8" else {"row": first_row + i}
        bad.append(BadRecord(first_row + i, reasons[i][0], reasons[i][1], dump_json(raw).encode(),
                             doc_id=ids[i].as_py() if reasons[i][0] == "non_string_text" else None))
    keep = pa.array([r is None for r in reasons])
    good = table.filter(keep) if bad_idx else table
    meta = metadata_json(good, meta_fields(names, source))
    cand = pa.Table.from_arrays([ids.filter(keep), text.cast(pa.string()).filter(keep), meta,
                                 record_no.filter(keep)], schema=CANDIDATE_SCHEMA)
    return RawBatch(cand, bad)
