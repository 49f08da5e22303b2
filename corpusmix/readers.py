"""Readers: turn one input file into batches of candidate documents plus bad records.

Every reader yields ``RawBatch`` objects: an Arrow table of candidates
(``doc_id``, ``text``, ``metadata``, ``record_no``) and the records that could
not even become candidates (bad JSON, bad UTF-8, a non-string text ...), each
with its reason. Checks that apply to every format (empty text, NUL bytes,
missing ids, size limits) run later, once, in ``ingest``.

JSON Lines take one of two paths per block of lines:

* fast: Arrow's multithreaded JSON parser, used only when the block is valid
  UTF-8 (Arrow would silently replace bad bytes with U+FFFD), has no blank
  lines (so row i is line i), and yields a string text column;
* exact: a per-line parse with orjson that can say what is wrong with each
  line. Any block the fast path cannot vouch for goes here, so a bad record
  costs its block some speed but never its neighbours.

Memory is bounded by the block size (plus the longest single line).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import zstandard

from .spec import Format, Source
from .storage import sha256_file

BOM = b"\xef\xbb\xbf"

CANDIDATE_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    ("text", pa.string()),
    ("metadata", pa.string()),
    ("record_no", pa.int64()),
])


class UnreadableFileError(Exception):
    """A file that cannot be read to the end: damaged compression, corrupt Parquet, I/O error."""

    def __init__(self, path: str, detail: str, records_before: int = 0):
        self.path = path
        self.detail = detail
        self.records_before = records_before
        super().__init__(f"{path}: {detail}")


@dataclass
class BadRecord:
    record_no: int
    reason: str
    detail: str
    raw: bytes
    file: str | None = None  # set where a unit spans several files (plain text)


@dataclass
class RawBatch:
    candidates: pa.Table
    bad: list[BadRecord] = field(default_factory=list)


class _HashingReader(io.RawIOBase):
    """File wrapper that hashes and counts every byte read from disk."""

    def __init__(self, f):
        self._f = f
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        if n:
            self.sha.update(memoryview(b)[:n])
            self.nbytes += n
        return n

    def drain(self) -> None:
        """Hash the rest of the file (after damage), so the input checksum is still whole."""
        while chunk := self._f.read(1 << 20):
            self.sha.update(chunk)
            self.nbytes += len(chunk)


def _open_decompressed(raw: _HashingReader, path: Path):
    name = path.name.lower()
    buffered = io.BufferedReader(raw, buffer_size=1 << 20)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=buffered, mode="rb")
    if name.endswith((".zst", ".zstd")):
        return zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
    return buffered


_DAMAGE = (EOFError, OSError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile)


def _read_blocks(stream, block_bytes: int, path: Path) -> Iterator[tuple[bytes, bool]]:
    """Yield (block of whole lines, is_final_unterminated_tail) from a decompressed stream.

    A line longer than the block is carried until its newline, so a 20 MB
    one-line document arrives whole. Damage in the stream raises
    UnreadableFileError after the complete lines before it were yielded; the
    half line at the damage point is yielded as a tail flagged True.
    """
    pending: list[bytes] = []
    first = True
    while True:
        try:
            chunk = stream.read(block_bytes)
        except _DAMAGE as e:
            tail = b"".join(pending)
            if tail:
                yield tail, True
            raise UnreadableFileError(str(path), f"{type(e).__name__}: {e}") from e
        if first:
            if chunk.startswith(BOM):
                chunk = chunk[len(BOM):]
            first = False
        if not chunk:
            tail = b"".join(pending)
            if tail:
                yield tail, False
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending.append(chunk)
            continue
        pending.append(chunk[: cut + 1])
        yield b"".join(pending), False
        pending = [chunk[cut + 1:]] if cut + 1 < len(chunk) else []


def metadata_json(table: pa.Table, fields: list[str] | None) -> pa.Array:
    """One JSON object string per row from the given columns (None = no metadata).

    DuckDB's ``to_json`` serialises nested Arrow columns (lists, structs) in
    C++, which keeps metadata off the per-row Python path.
    """
    if not fields:
        return pa.nulls(table.num_rows, pa.string())
    cols = {f"c{i}": table.column(name) for i, name in enumerate(fields)}
    t = pa.table(cols)  # noqa: F841  (read by DuckDB's replacement scan)
    pack = ", ".join(f'"{name.replace(chr(34), chr(34) * 2)}" := c{i}' for i, name in enumerate(fields))
    con = duckdb.connect()
    try:
        out = con.sql(f"SELECT to_json(struct_pack({pack}))::VARCHAR AS m FROM t").to_arrow_table()
    finally:
        con.close()
    return out.column("m").combine_chunks().cast(pa.string())


def _meta_fields(available: list[str], source: Source) -> list[str]:
    skip = {source.text_field, source.id_field}
    if source.metadata_fields == "none":
        return []
    if source.metadata_fields == "all":
        return sorted(c for c in available if c not in skip)
    return [c for c in source.metadata_fields if c in available and c not in skip]


def _id_column(table: pa.Table, source: Source) -> pa.Array | None:
    """The id column as strings, or None when the fast path cannot vouch for its type."""
    if source.id_field is None:
        return pa.nulls(table.num_rows, pa.string())
    if source.id_field not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    col = table.column(source.id_field)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.combine_chunks().cast(pa.string())
    if pa.types.is_integer(col.type) or pa.types.is_null(col.type):
        return col.combine_chunks().cast(pa.string())
    return None


def _is_valid_utf8(block: bytes) -> bool:
    try:
        pa.array([block], pa.binary()).cast(pa.string()).validate(full=True)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False


def _fast_block(block: bytes, first_line: int, source: Source) -> pa.Table | None:
    """Parse a block with Arrow's JSON reader, or None if only the exact path can judge it."""
    if block.startswith((b"\n", b"\r\n")) or b"\n\n" in block or b"\n\r\n" in block:
        return None
    if not _is_valid_utf8(block):
        return None
    n_lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    try:
        table = pajson.read_json(
            io.BytesIO(block),
            read_options=pajson.ReadOptions(block_size=max(len(block) + 1, 1 << 20)),
            parse_options=pajson.ParseOptions(newlines_in_values=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != n_lines:
        return None
    if source.text_field in table.column_names:
        text = table.column(source.text_field)
        if not (pa.types.is_string(text.type) or pa.types.is_null(text.type)):
            return None
        text = text.combine_chunks().cast(pa.string())
    else:
        text = pa.nulls(table.num_rows, pa.string())
    ids = _id_column(table, source)
    if ids is None:
        return None
    meta = metadata_json(table, _meta_fields(table.column_names, source))
    record_no = pa.array(range(first_line, first_line + table.num_rows), pa.int64())
    return pa.Table.from_arrays([ids, text, meta, record_no], schema=CANDIDATE_SCHEMA)


def _exact_block(block: bytes, first_line: int, source: Source) -> RawBatch:
    """Parse line by line, naming the problem with each line that is not a usable record."""
    ids: list[str | None] = []
    texts: list[str | None] = []
    metas: list[str | None] = []
    nos: list[int] = []
    bad: list[BadRecord] = []
    meta_mode = source.metadata_fields
    for offset, line in enumerate(block.split(b"\n")):
        no = first_line + offset
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line.strip():
            continue  # blank lines separate nothing in JSON Lines; they are counted by the caller
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            try:
                line.decode("utf-8")
                bad.append(BadRecord(no, "invalid_json", str(e), line))
            except UnicodeDecodeError as ue:
                bad.append(BadRecord(no, "invalid_utf8", str(ue), line))
            continue
        if not isinstance(rec, dict):
            bad.append(BadRecord(no, "not_an_object", f"a JSON {type(rec).__name__}, not an object", line))
            continue
        text = rec.get(source.text_field)
        if text is not None and not isinstance(text, str):
            bad.append(BadRecord(no, "non_string_text",
                                 f"field {source.text_field!r} is a {type(text).__name__}", line))
            continue
        doc_id = None
        if source.id_field is not None and rec.get(source.id_field) is not None:
            raw_id = rec[source.id_field]
            if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
                bad.append(BadRecord(no, "invalid_id",
                                     f"field {source.id_field!r} is a {type(raw_id).__name__}", line))
                continue
            doc_id = str(raw_id)
        fields = _meta_fields(list(rec), source) if meta_mode != "none" else []
        ids.append(doc_id)
        texts.append(text)
        metas.append(orjson.dumps({k: rec[k] for k in fields}).decode() if fields else None)
        nos.append(no)
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(texts, pa.string()),
         pa.array(metas, pa.string()), pa.array(nos, pa.int64())],
        schema=CANDIDATE_SCHEMA)
    return RawBatch(table, bad)


@dataclass
class FileReadResult:
    """What reading one file told us besides its records."""

    sha256: str = ""
    bytes: int = 0
    lines: int = 0
    blank_lines: int = 0
    fast_blocks: int = 0
    exact_blocks: int = 0
    files: list[dict] = field(default_factory=list)  # per-file inputs, for units of many files


def read_jsonl(path: Path, source: Source, block_bytes: int, info: FileReadResult) -> Iterator[RawBatch]:
    """Stream a .jsonl / .jsonl.gz / .jsonl.zst file as RawBatches (see module docstring)."""
    with open(path, "rb") as f:
        raw = _HashingReader(f)
        stream = _open_decompressed(raw, path)
        line = 1
        try:
            for block, damaged_tail in _read_blocks(stream, block_bytes, path):
                if damaged_tail:
                    info.lines += 1
                    yield RawBatch(CANDIDATE_SCHEMA.empty_table(), [BadRecord(
                        line, "truncated_record", "the file ends (damaged) inside this record", block)])
                    continue
                n = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                info.blank_lines += sum(1 for ln in block.split(b"\n")[:n] if not ln.strip())
                fast = _fast_block(block, line, source)
                if fast is not None:
                    info.fast_blocks += 1
                    yield RawBatch(fast)
                else:
                    info.exact_blocks += 1
                    yield _exact_block(block.rstrip(b"\n") if block.endswith(b"\n") else block, line, source)
                line += n
                info.lines += n
        finally:
            raw.drain()
            info.sha256 = raw.sha.hexdigest()
            info.bytes = raw.nbytes


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


def _parquet_batch(table: pa.Table, names: list[str], first_row: int, source: Source) -> RawBatch:
    """Candidates from one Parquet batch; a column of the wrong type makes its non-null rows bad."""
    n = table.num_rows
    record_no = pa.array(range(first_row, first_row + n), pa.int64())
    meta = metadata_json(table, _meta_fields(names, source))
    text = table.column(source.text_field).combine_chunks() if source.text_field in names else pa.nulls(n, pa.string())
    bad_mask = pa.array([False] * n)
    bad: list[BadRecord] = []
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type) or pa.types.is_null(text.type)):
        bad_mask = pc.is_valid(text)
        reason, col_name, col_type = "non_string_text", source.text_field, text.type
        text = pa.nulls(n, pa.string())
    else:
        text = text.cast(pa.string())
    ids = _id_column(table, source)
    if ids is None:
        id_col = table.column(source.id_field).combine_chunks()
        bad_mask = pc.or_(bad_mask, pc.is_valid(id_col))
        reason, col_name, col_type = "invalid_id", source.id_field, id_col.type
        ids = pa.nulls(n, pa.string())
    if pc.any(bad_mask).as_py():
        rows = table.filter(bad_mask).to_pylist()
        nos = record_no.filter(bad_mask).to_pylist()
        for no, row in zip(nos, rows):
            bad.append(BadRecord(no, reason, f"column {col_name!r} has type {col_type}",
                                 orjson.dumps(row, default=str)))
    keep = pc.invert(bad_mask)
    cand = pa.Table.from_arrays([ids, text, meta, record_no], schema=CANDIDATE_SCHEMA).filter(keep)
    return RawBatch(cand, bad)


def read_text_files(paths: list[Path], rels: list[str], source: Source, info: FileReadResult) -> Iterator[RawBatch]:
    """One document per plain-text file; the id is the path relative to the source's glob base.

    A damaged compressed text file is one bad record (``unreadable_file``) when
    the source says ``on_unreadable: skip``: the other files of the unit go on.
    """
    ids, texts, metas, bad = [], [], [], []
    for p, rel in zip(paths, rels):
        try:
            with open(p, "rb") as f:
                raw_reader = _HashingReader(f)
                try:
                    data, damage = _open_decompressed(raw_reader, p).read(), None
                except _DAMAGE as e:
                    data, damage = b"", f"{type(e).__name__}: {e}"
                raw_reader.drain()
        except OSError as e:
            raise UnreadableFileError(str(p), f"cannot read: {e}") from e
        info.files.append({"path": rel, "sha256": raw_reader.sha.hexdigest(), "bytes": raw_reader.nbytes})
        info.bytes += raw_reader.nbytes
        info.lines += 1
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


def read_unit(fmt: Format, paths: list[Path], rels: list[str], source: Source, block_bytes: int,
              info: FileReadResult) -> Iterator[RawBatch]:
    """Dispatch one unit of work (a JSONL/Parquet file, or a group of text files) to its reader."""
    if fmt is Format.JSONL:
        return read_jsonl(paths[0], source, block_bytes, info)
    if fmt is Format.PARQUET:
        return read_parquet(paths[0], source, block_bytes, info)
    return read_text_files(paths, rels, source, info)
