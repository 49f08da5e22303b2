"""Readers: turn one input file into batches of candidate documents plus bad records.

Every reader yields ``RawBatch`` objects: an Arrow table of candidates
(``doc_id``, ``text``, ``metadata``, ``record_no``) and the records that could
not even become candidates (bad JSON, bad UTF-8, a non-string text ...), each
with its reason. Checks that apply to every format (empty text, NUL bytes,
missing ids, size limits) run later, once, in ``ingest``.

JSON Lines take one of two paths per block of lines:

* fast: Arrow's JSON parser, used only when the block is valid UTF-8 (Arrow
  would silently replace bad bytes with U+FFFD), yields one row per line (a
  blank line makes Arrow skip a row, so row i is line i) and a string text
  column;
* exact: a per-line parse with orjson that can say what is wrong with each
  line. Any block the fast path cannot vouch for goes here, so a bad record
  costs its block some speed but never its neighbours.

Memory is bounded by the block size (plus the longest single line).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import zstandard
from isal import isal_zlib

from corpusmix.core.spec import Format, Source
from corpusmix.core.storage import sha256_file

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
    blank_lines: int = 0


RAW_CHUNK = 1 << 20


class _RawFile:
    """Reads a file in chunks while hashing and counting every byte, so the input checksum
    costs no second pass and stays whole even when decoding stops at damage."""

    def __init__(self, f):
        self._f = f
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def chunks(self) -> Iterator[bytes]:
        while chunk := self._f.read(RAW_CHUNK):
            self.sha.update(chunk)
            self.nbytes += len(chunk)
            yield chunk


def _new_decoder(name: str):
    if name.endswith(".gz"):
        return isal_zlib.decompressobj(wbits=31)  # gzip framing; ISA-L inflates ~2.7x faster than zlib here
    if name.endswith((".zst", ".zstd")):
        return zstandard.ZstdDecompressor().decompressobj()
    return None


def _decompressed(raw: _RawFile, path: Path) -> Iterator[bytes]:
    """Decompressed bytes of a .gz / .zst / plain file, incrementally.

    Incremental decoding yields everything before a damaged or truncated point
    (``gzip.GzipFile.read`` would drop the last buffer), then raises
    UnreadableFileError. Multi-member gzip and multi-frame zstd are followed.
    """
    name = path.name.lower()
    dec = _new_decoder(name)
    if dec is None:
        yield from raw.chunks()
        return
    started = produced = False
    members = 0
    padding = False
    for chunk in raw.chunks():
        if padding:
            if chunk.strip(b"\0"):
                raise UnreadableFileError(str(path), "non-zero bytes after the zero padding that follows the "
                                                     "last compressed member")
            continue
        while chunk:
            try:
                out = dec.decompress(chunk)
            except (isal_zlib.error, zlib.error, zstandard.ZstdError) as e:
                what = ("trailing data after the last complete compressed member is not a valid stream"
                        if members else f"not a valid {name.rsplit('.', 1)[-1]} stream")
                raise UnreadableFileError(str(path), f"{what}: {e}") from e
            started = True
            if out:
                produced = True
                yield out
            if dec.eof:
                members += 1
                produced = False
                chunk = dec.unused_data
                dec = _new_decoder(name)
                started = False
                if chunk and not chunk.strip(b"\0"):
                    padding, chunk = True, b""  # block-device / tape padding after the stream: gzip -d accepts it
            else:
                chunk = b""
    if started and not dec.eof:
        raise UnreadableFileError(str(path), "trailing data after the last complete compressed member is not a "
                                             "valid stream" if members and not produced else
                                             "compressed stream is truncated (ends before its end marker)")


def _read_blocks(chunks: Iterator[bytes], block_bytes: int, max_line: int,
                 path: Path) -> Iterator[tuple[bytes, str | None]]:
    """Yield (block of whole lines, None) of roughly ``block_bytes``, or (head, reason) for a
    piece that cannot be a record.

    A line longer than a block is carried until its newline, so a 20 MB
    one-line document arrives whole; only each new chunk is searched, so this
    stays linear. A line longer than ``max_line`` is not held in memory: its
    head is yielded with reason ``line_too_long`` and the rest skipped up to
    the next newline. Damage raises UnreadableFileError after the complete lines
    before it were yielded; the half line at the damage point is yielded first
    with reason ``truncated_record``, so it can be quarantined rather than lost.
    """
    lines: list[bytes] = []      # whole lines waiting to fill a block
    lines_size = 0
    partial: list[bytes] = []    # the line being read
    partial_size = 0
    first = True
    skipping = False
    try:
        for chunk in chunks:
            if first:
                chunk = chunk[len(BOM):] if chunk.startswith(BOM) else chunk
                first = False
            if skipping:
                nl = chunk.find(b"\n")
                if nl < 0:
                    continue
                chunk, skipping = chunk[nl + 1:], False
            cut = chunk.rfind(b"\n")
            if cut < 0:
                partial.append(chunk)
                partial_size += len(chunk)
                if partial_size > max_line:
                    if lines:
                        yield b"".join(lines), None
                        lines, lines_size = [], 0
                    yield b"".join(partial)[:4096], "line_too_long"
                    partial, partial_size, skipping = [], 0, True
                continue
            lines += partial
            lines.append(chunk[: cut + 1])
            lines_size += partial_size + cut + 1
            partial, partial_size = ([chunk[cut + 1:]], len(chunk) - cut - 1) if cut + 1 < len(chunk) else ([], 0)
            if lines_size >= block_bytes:
                yield b"".join(lines), None
                lines, lines_size = [], 0
    except UnreadableFileError:
        if lines:
            yield b"".join(lines), None
        if partial:
            yield b"".join(partial), "truncated_record"
        raise
    tail = b"".join(lines + partial)
    if tail:
        yield tail, None


def _json_default(value):
    """JSON for what Parquet holds and JSON lacks: bytes as base64, the rest as text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    return str(value)  # Decimal, timedelta, time, ... : their exact textual form


def dump_json(obj) -> str:
    """Canonical compact JSON (sorted keys, UTF-8): orjson, or the standard library for what
    orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_json_default).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def load_json(line: bytes):
    """Parse one JSON value; a line with a 20+ digit integer goes to the standard library,
    which keeps it exact (orjson would make it a float)."""
    if _long_digit_run(line):
        return json.loads(line.decode("utf-8"))
    return orjson.loads(line)


def metadata_json(table: pa.Table, fields: list[str] | None) -> pa.Array:
    """One JSON object string per row from the given columns (None when there are none).

    Serialised with orjson with sorted keys, as the JSON Lines paths do.
    """
    if not fields:
        return pa.nulls(table.num_rows, pa.string())
    rows = table.select(fields).to_pylist()
    return pa.array([dump_json(r) for r in rows], pa.string())


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
    """UTF-8 validation by Arrow, on the block's own memory (a one-element string array over it)."""
    offsets = pa.py_buffer(np.array([0, len(block)], np.int64 if len(block) >= 2**31 else np.int32).tobytes())
    kind = pa.large_string() if len(block) >= 2**31 else pa.string()
    try:
        pa.Array.from_buffers(kind, 1, [None, offsets, pa.py_buffer(block)]).validate(full=True)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False


def _arrow_text_and_id(block: bytes, source: Source) -> pa.Table | None:
    """Parse only the text and id columns with Arrow (others are tokenised, not built).

    First as strings (the common case); if the id turns out to be a number,
    again with the id's type inferred. None when Arrow cannot parse the block.
    """
    opts = pajson.ReadOptions(block_size=max(len(block) + 1, 1 << 20), use_threads=False)  # threads cost here
    wanted = [(source.text_field, pa.string())] + ([(source.id_field, pa.string())] if source.id_field else [])
    for schema in (pa.schema(wanted), pa.schema(wanted[:1])):
        behaviour = "ignore" if len(schema) == len(wanted) else "infer"
        try:
            table = pajson.read_json(io.BytesIO(block), read_options=opts, parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior=behaviour))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        keep = [c for c in (source.text_field, source.id_field) if c in table.column_names]
        return table.select(keep)
    return None


_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)


def _long_digit_run(block: bytes, n: int = 19) -> bool:
    """Does the block hold a JSON number with more than ``n`` digits (orjson would turn it into
    a float)? Runs of digits inside strings are common (code, math) and are skipped: a run counts
    when a JSON delimiter precedes it (``:``, ``,`` or ``[``, after spaces and a sign) and
    a number's end follows it. Digits are mapped to "0" so runs are found at memchr speed."""
    mapped = block.translate(_DIGITS_AS_ZERO)
    run = b"0" * (n + 1)
    pos = mapped.find(run)
    while pos >= 0:  # pos is where a run starts: the search resumes after the previous run
        more = _NOT_ZERO.search(mapped, pos + n + 1)
        end = more.start() if more else len(mapped)
        before = block[max(0, pos - 64):pos].rstrip(b" \t-")[-1:]
        after = block[end:end + 1]
        if before in (b":", b",", b"[") and after in (b"", b",", b"}", b"]", b" ", b"\t", b"\r", b"\n", b".", b"e", b"E"):
            return True
        pos = mapped.find(run, end)
    return False


_NOT_ZERO = re.compile(rb"[^0]")


def _arrow_safe(block: bytes, n_lines: int, lines_checked_later: bool) -> bool:
    """Can Arrow's reader be trusted with this block? Cheap byte-level checks, all needed:

    * valid UTF-8 (Arrow would silently replace bad bytes with U+FFFD);
    * the block starts with ``{`` (a block whose first value is ``null`` crashes
      pyarrow 26's reader, apache/arrow#47409);
    * every line starts with ``{`` (rules out blank lines and several objects on
      one line, which would misalign rows and lines) - unless
      ``lines_checked_later``: the metadata pass parses every line alone with
      orjson, which refuses both;
    * no bare CR (Arrow treats it as a line break, JSON Lines does not);
    * no integer of 20+ digits (it would lose precision; the exact path keeps it).
    """
    if not block.startswith(b"{"):
        return False
    if not lines_checked_later and block.count(b"\n{") + 1 != n_lines:
        return False
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        return False
    return _is_valid_utf8(block) and not _long_digit_run(block)


_NONFINITE = re.compile(rb"[:\[,]\s*-?(?:NaN|Infinity)")


def _fast_block(block: bytes, first_line: int, source: Source, n_lines: int) -> pa.Table | None:
    """Parse a block with Arrow's JSON reader, or None if only the exact path can judge it."""
    if not _arrow_safe(block, n_lines, lines_checked_later=source.metadata_fields != "none"):
        return None
    if source.metadata_fields == "none" and (b"NaN" in block or b"Infinity" in block) and _NONFINITE.search(block):
        return None  # Arrow accepts NaN/Infinity, strict JSON does not; otherwise orjson's metadata parse refuses them
    table = _arrow_text_and_id(block, source)
    if table is None:
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
    meta = _metadata_of_lines(block, source, table.num_rows)
    if meta is None:
        return None
    record_no = pa.array(range(first_line, first_line + table.num_rows), pa.int64())
    return pa.Table.from_arrays([ids, text, meta, record_no], schema=CANDIDATE_SCHEMA)


def _record_metadata(rec: dict, source: Source) -> str | None:
    """The metadata JSON of one parsed record: canonical (sorted keys), as both JSON paths write it."""
    if source.metadata_fields == "all":
        rec.pop(source.text_field, None)
        if source.id_field is not None:
            rec.pop(source.id_field, None)
        return dump_json(rec) if rec else None
    fields = _meta_fields(list(rec), source)
    return dump_json({k: rec[k] for k in fields}) if fields else None


def _lines(block: bytes) -> list[bytes]:
    """The lines of a block without copying it (a final newline ends the last line)."""
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def _metadata_of_lines(block: bytes, source: Source, n_rows: int) -> pa.Array | None:
    """Metadata of every line of a clean block, parsed with orjson.

    Arrow gives the text column without a detour through Python strings, but
    its type inference would rewrite metadata (ISO strings become timestamps,
    ints in a float column become floats); orjson keeps values as written.
    None when orjson rejects a line Arrow accepted (the exact path decides).
    """
    if source.metadata_fields == "none":
        return pa.nulls(n_rows, pa.string())
    try:
        return pa.array([_record_metadata(orjson.loads(line), source)
                         for line in _lines(block)], pa.string())
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        return None


def _exact_block(block: bytes, first_line: int, source: Source) -> RawBatch:
    """Parse line by line, naming the problem with each line that is not a usable record."""
    ids: list[str | None] = []
    texts: list[str | None] = []
    metas: list[str | None] = []
    nos: list[int] = []
    bad: list[BadRecord] = []
    blank = 0
    for offset, line in enumerate(block.split(b"\n")):
        no = first_line + offset
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(BOM):  # files concatenated with `cat` keep each one's BOM
            line = line[len(BOM):]
        if not line.strip():
            blank += 1  # blank lines separate nothing in JSON Lines: counted, not quarantined
            continue
        try:
            rec = load_json(line)
        except (orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
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
        ids.append(doc_id)
        texts.append(text)
        metas.append(_record_metadata(rec, source))
        nos.append(no)
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(texts, pa.string()),
         pa.array(metas, pa.string()), pa.array(nos, pa.int64())],
        schema=CANDIDATE_SCHEMA)
    return RawBatch(table, bad, blank)


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


def read_jsonl(path: Path, source: Source, block_bytes: int, max_line: int,
               info: FileReadResult) -> Iterator[RawBatch]:
    """Stream a .jsonl / .jsonl.gz / .jsonl.zst file as RawBatches (see module docstring)."""
    with open(path, "rb") as f:
        raw = _RawFile(f)
        line = 1
        try:
            for block, problem in _read_blocks(_decompressed(raw, path), block_bytes, max_line, path):
                if problem is not None:
                    info.lines += 1
                    detail = ("the file is damaged inside this record" if problem == "truncated_record" else
                              f"a line longer than {max_line} bytes (ingest.max_text_bytes allows for escaping)")
                    yield RawBatch(CANDIDATE_SCHEMA.empty_table(), [BadRecord(line, problem, detail, block)])
                    line += 1
                    continue
                n = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
                fast = _fast_block(block, line, source, n)
                if fast is not None:
                    info.fast_blocks += 1
                    yield RawBatch(fast)
                else:
                    info.exact_blocks += 1
                    batch = _exact_block(block[:-1] if block.endswith(b"\n") else block, line, source)
                    info.blank_lines += batch.blank_lines
                    yield batch
                line += n
                info.lines += n
        finally:
            for _ in raw.chunks():  # hash the rest (after damage) so the input checksum is whole
                pass
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
    ids = _id_column(table.set_column(table.schema.get_field_index(source.id_field), source.id_field,
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
        bad.append(BadRecord(first_row + i, reasons[i][0], reasons[i][1], dump_json(raw).encode()))
    keep = pa.array([r is None for r in reasons])
    good = table.filter(keep) if bad_idx else table
    meta = metadata_json(good, _meta_fields(names, source))
    cand = pa.Table.from_arrays([ids.filter(keep), text.cast(pa.string()).filter(keep), meta,
                                 record_no.filter(keep)], schema=CANDIDATE_SCHEMA)
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
                raw_reader = _RawFile(f)
                try:
                    data, damage = b"".join(_decompressed(raw_reader, p)), None
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
              max_text_bytes: int, info: FileReadResult) -> Iterator[RawBatch]:
    """Dispatch one unit of work (a JSONL/Parquet file, or a group of text files) to its reader."""
    if fmt is Format.JSONL:
        # JSON escaping can grow text up to 6x (\u00XX); a longer line cannot hold an acceptable text
        return read_jsonl(paths[0], source, block_bytes, 6 * max_text_bytes + (1 << 20), info)
    if fmt is Format.PARQUET:
        return read_parquet(paths[0], source, block_bytes, info)
    return read_text_files(paths, rels, source, info)
