"""JSON Lines: blocks of lines, each parsed on the fast path (Arrow) or the exact one (orjson).

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

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pajson

from corpusmix.core.spec import Source
from corpusmix.readers.common import (
    BOM,
    CANDIDATE_SCHEMA,
    BadRecord,
    FileReadResult,
    RawBatch,
    RawFile,
    UnpairedSurrogate,
    UnreadableFileError,
    decompressed,
    dump_json,
    id_column,
    load_json,
    long_digit_run,
    meta_fields,
    utf8_only,
)


def _head(pieces: list[bytes], n: int) -> bytes:
    """The first ``n`` bytes of the concatenation of ``pieces``, without concatenating them all."""
    head = b""
    for piece in pieces:
        head += piece[:n - len(head)]
        if len(head) >= n:
            break
    return head


def _joined(pieces: list[bytes]) -> tuple[bytes, None, int]:
    block = b"".join(pieces)
    return block, None, len(block)


def _read_blocks(chunks: Iterator[bytes], block_bytes: int, max_line: int,
                 path: Path) -> Iterator[tuple[bytes, str | None, int]]:
    """Yield (block of whole lines, None, its size) of roughly ``block_bytes``, or (head, reason,
    size) for a piece that cannot be a record: only its first 4 KiB are kept, never a copy of it.

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
                        yield _joined(lines)
                        lines, lines_size = [], 0
                    yield _head(partial, 4096), "line_too_long", partial_size
                    partial, partial_size, skipping = [], 0, True
                continue
            lines += partial
            lines.append(chunk[: cut + 1])
            lines_size += partial_size + cut + 1
            partial, partial_size = ([chunk[cut + 1:]], len(chunk) - cut - 1) if cut + 1 < len(chunk) else ([], 0)
            if lines_size >= block_bytes:
                yield _joined(lines)
                lines, lines_size = [], 0
    except UnreadableFileError:
        if lines:
            yield _joined(lines)
        if partial:
            yield _head(partial, 4096), "truncated_record", partial_size
        raise
    if lines or partial:
        yield _joined(lines + partial)


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
    return _is_valid_utf8(block) and not long_digit_run(block)


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
    ids = id_column(table, source)
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
    fields = meta_fields(list(rec), source)
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


_NOT_NEWLINE = re.compile(rb"[^\n]")


def _numbered_lines(block: bytes, first: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) of a block, without a list of every line (a block of blank lines would
    make millions); a run of empty lines comes as one (count, None)."""
    pos, no, end = 0, first, len(block)
    while pos <= end:
        if block[pos:pos + 1] == b"\n":
            m = _NOT_NEWLINE.search(block, pos)
            run = (m.start() if m else end) - pos
            yield run, None
            pos, no = pos + run, no + run
            if m is None:  # the block ended in newlines: the empty text after the last one is one more line
                yield 1, None
                return
            continue
        nl = block.find(b"\n", pos)
        stop = nl if nl >= 0 else end
        yield no, block[pos:stop]
        pos, no = stop + 1, no + 1


def _exact_block(block: bytes, first_line: int, source: Source) -> RawBatch:
    """Parse line by line, naming the problem with each line that is not a usable record."""
    ids: list[str | None] = []
    texts: list[str | None] = []
    metas: list[str | None] = []
    nos: list[int] = []
    bad: list[BadRecord] = []
    blank = 0
    for no, line in _numbered_lines(block, first_line):
        if line is None:  # a run of empty lines, counted at once
            blank += no
            continue
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(BOM):  # files concatenated with `cat` keep each one's BOM
            line = line[len(BOM):]
        if not line.strip():
            blank += 1  # blank lines separate nothing in JSON Lines: counted, not quarantined
            continue
        try:
            rec = load_json(line)
        except (orjson.JSONDecodeError, json.JSONDecodeError, UnicodeDecodeError, UnpairedSurrogate) as e:
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
            raw_id = rec.get(source.id_field) if source.id_field is not None else None
            bad.append(BadRecord(no, "non_string_text", f"field {source.text_field!r} is a {type(text).__name__}",
                                 line, doc_id=str(raw_id) if isinstance(raw_id, (str, int)) and
                                 not isinstance(raw_id, bool) else None))
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


def read_jsonl(path: Path, source: Source, block_bytes: int, max_line: int,
               info: FileReadResult, max_expansion: float = 200.0) -> Iterator[RawBatch]:
    """Stream a .jsonl / .jsonl.gz / .jsonl.zst file as RawBatches (see module docstring)."""
    with open(path, "rb") as f:
        raw = RawFile(f)
        line = 1
        try:
            for block, problem, size in _read_blocks(utf8_only(decompressed(raw, path, max_expansion), path), block_bytes,
                                                 max_line, path):
                if problem is not None:
                    info.lines += 1
                    detail = ("the file is damaged inside this record" if problem == "truncated_record" else
                              f"a line longer than {max_line} bytes (ingest.max_text_bytes allows for escaping)")
                    yield RawBatch(CANDIDATE_SCHEMA.empty_table(), [BadRecord(line, problem, detail, block, size=size)])
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
            if raw.nbytes == 0 and path.name.lower().endswith((".gz", ".zst", ".zstd")):
                info.warnings.append(f"{path.name} is empty (0 bytes, not even a compression header): "
                                     "no records; a copy or a download that did not finish?")
