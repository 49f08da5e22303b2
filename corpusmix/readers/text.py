"""Plain-text files: one document per file, its id the file's path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa

from corpusmix.core.spec import Source
from corpusmix.readers.common import (
    BOM,
    CANDIDATE_SCHEMA,
    BadRecord,
    FileReadResult,
    RawBatch,
    RawFile,
    UnreadableFileError,
    decompressed,
    utf8_only,
)


def read_text_files(paths: list[Path], rels: list[str], source: Source, info: FileReadResult,
                    max_text_bytes: int, max_expansion: float = 200.0) -> Iterator[RawBatch]:
    """One document per plain-text file; the id is the path relative to the source's glob base.

    A damaged compressed text file is one bad record (``unreadable_file``) when
    the source says ``on_unreadable: skip``: the other files of the unit go on. A
    file whose text passes ``max_text_bytes`` is quarantined (``text_too_long``) as
    soon as it does: it is never held whole (a 2 GB file costs its checksum pass).
    """
    ids, texts, metas, bad = [], [], [], []
    for p, rel in zip(paths, rels):
        try:
            with open(p, "rb") as f:
                raw_reader = RawFile(f)
                try:
                    data, damage = _bounded(utf8_only(decompressed(raw_reader, p, max_expansion), p), max_text_bytes), None
                except UnreadableFileError as e:
                    data, damage = b"", e.detail
                for _ in raw_reader.chunks():
                    pass
        except OSError as e:
            if source.on_unreadable == "fail":
                raise UnreadableFileError(str(p), f"cannot read: {e}") from e
            info.lines += 1
            bad.append(BadRecord(1, "unreadable_file", f"cannot read: {e}", b"", rel))
            continue
        info.files.append({"path": rel, "sha256": raw_reader.sha.hexdigest(), "bytes": raw_reader.nbytes})
        info.bytes += raw_reader.nbytes
        info.lines += 1
        if data is None:
            bad.append(BadRecord(1, "text_too_long", f"longer than ingest.max_text_bytes={max_text_bytes}", b"", rel))
            continue
        if damage is not None:
            if source.on_unreadable == "fail":
                raise UnreadableFileError(str(p), damage)
            bad.append(BadRecord(1, "unreadable_file", damage, b"", rel))
            continue
        if data.startswith(BOM):
            data = data[len(BOM):]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append(BadRecord(1, "invalid_utf8", str(e), data, rel))
            continue
        ids.append(rel)
        texts.append(text)
        metas.append(orjson.dumps({"path": rel}).decode() if source.metadata_fields != "none" else None)
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(texts, pa.string()), pa.array(metas, pa.string()),
         pa.array([1] * len(ids), pa.int64())], schema=CANDIDATE_SCHEMA)
    yield RawBatch(table, bad)


def _bounded(chunks: Iterator[bytes], limit: int) -> bytes | None:
    """The whole text, or None as soon as it passes ``limit`` bytes (the rest is not read here)."""
    parts, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)
