"""Readers: turn one input file into batches of candidate documents plus bad records.

Every reader yields ``RawBatch`` objects: an Arrow table of candidates
(``doc_id``, ``text``, ``metadata``, ``record_no``) and the records that could
not even become candidates (bad JSON, bad UTF-8, a non-string text ...), each
with its reason. Checks that apply to every format (empty text, NUL bytes,
missing ids, size limits) run later, once, in ``ingest``.

One module per format (``jsonl``, ``parquet``, ``text``), sharing ``common``;
``read_unit`` picks the reader for a unit of ingest work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from corpusmix.core.spec import Format, Ingest, Source
from corpusmix.readers.common import BadRecord, FileReadResult, RawBatch, UnreadableFileError
from corpusmix.readers.jsonl import read_jsonl
from corpusmix.readers.parquet import read_parquet
from corpusmix.readers.text import read_text_files

__all__ = ["BadRecord", "FileReadResult", "RawBatch", "UnreadableFileError", "read_unit"]


def read_unit(fmt: Format, paths: list[Path], rels: list[str], source: Source, cfg: Ingest,
              info: FileReadResult) -> Iterator[RawBatch]:
    """Dispatch one unit of work (a JSONL/Parquet file, or a group of text files) to its reader."""
    if fmt is Format.JSONL:
        # JSON escaping can grow text up to 6x (\u00XX); a longer line cannot hold an acceptable text
        return read_jsonl(paths[0], source, cfg.block_bytes, 6 * cfg.max_text_bytes + (1 << 20), info,
                          cfg.max_expansion)
    if fmt is Format.PARQUET:
        return read_parquet(paths[0], source, cfg.block_bytes, info)
    return read_text_files(paths, rels, source, info, cfg.max_text_bytes, cfg.max_expansion)
