"""Ingest stage: raw files of one source -> validated Parquet documents + a quarantine table.

Map: each unit (one JSONL or Parquet file, or a group of plain-text files) is
read, screened, counted in tokens (``tokencount``: exact with a tokenizer file)
and written by one worker into a staging directory. Reduce: duplicate ids
across units are moved to quarantine, the staging directory is published under
a content key and the manifest is written last.

A record is either kept or quarantined with exactly one reason (the first of
the order below), so ``records_read == documents_out + quarantined`` always:

    invalid_utf8, invalid_json, not_an_object, non_string_text, invalid_id,
    truncated_record   (decided by the reader, see ``readers``)
    missing_text, empty_text, nul_byte, text_too_long, missing_id, duplicate_id
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.globs import glob_base
from corpusmix.core.hashing import text_digests
from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.parquet_io import PARQUET_OPTS, PartWriter
from corpusmix.core.spec import Format, Ingest, LoadedSpec, Source, file_format
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import file_record, sha256_file
from corpusmix.readers import BadRecord, FileReadResult, UnreadableFileError, read_unit
from corpusmix.stages.tokencount import TokenCounting, count_raw, count_tokens, counter_for, counting_of, token_id_lists
from corpusmix.stages.tokenizer import TokenizerInfo
from schemas.tables import (
    ARROW_SCHEMAS,
    INGEST_DOCUMENTS,
    QUARANTINE,
    TOKEN_IDS_FILE,
    TOKEN_REF_UNIT_SHIFT,
    nul_mask,
    token_ids_schema,
    validate_table,
)

NAME = "ingest"
DOCS_SCHEMA = ARROW_SCHEMAS["ingest_documents"]
QUAR_SCHEMA = ARROW_SCHEMAS["quarantine"]
TEXT_UNIT_BYTES = 32 << 20
# the token-id cache: ids are near-random 16/32-bit values, so zstd's fastest level is enough
CACHE_OPTS = dict(compression="zstd", compression_level=1, write_statistics=False)


class IngestError(Exception):
    """The partition cannot be built; the message names the file and the fix."""


@dataclass
class Unit:
    """One independent piece of work for a worker (picklable)."""

    index: int
    fmt: Format
    paths: list[str]
    rels: list[str]
    source: Source
    cfg: Ingest
    staging: str
    counting: TokenCounting
    tokenizer: TokenizerInfo | None  # the tokenizer that counts exactly, when there is one


@dataclass
class UnitResult:
    index: int
    inputs: list[dict]
    parts: list[dict] = field(default_factory=list)      # {name, rows, bytes_text, sha256, bytes}
    quarantine: dict | None = None
    records_read: int = 0
    docs_out: int = 0
    bytes_out: int = 0
    tokens_out: int = 0
    reasons: dict[str, list[int]] = field(default_factory=dict)  # reason -> [records, bytes, tokens]
    scaled_records: int = 0  # quarantined records held by their head only: their tokens are scaled up
    skipped: dict | None = None
    fast_blocks: int = 0
    exact_blocks: int = 0
    blank_lines: int = 0
    extra_quarantine: dict | None = None
    id_hashes: bytes = b""  # 64-bit hashes of the kept ids, for the cross-unit duplicate check
    cache: dict | None = None  # the unit's token-id cache file (with a tokenizer file)
    warnings: list[str] = field(default_factory=list)


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")


def _content_id(text: str) -> str:
    return "sha1:" + hashlib.sha1(text.encode("utf-8")).hexdigest()


def _snippet(raw: bytes | str, chars: int) -> str:
    s = raw if isinstance(raw, str) else raw[: chars * 4].decode("utf-8", "backslashreplace")
    return s[:chars]


def _screen(cand: pa.Table, unit: Unit, seen_ids: set[str],
            first_row: int) -> tuple[pa.Table, pa.Table | None, list[tuple[int, str, str, str | None, str, int]]]:
    """Split candidates into kept rows and quarantined rows (one reason each, first in order).

    Returns the kept table (ingest_documents columns), its rows of the token-id cache (with a
    tokenizer file: the ids that counted the tokens, kept for tokenize; ``first_row`` is the
    unit's cache row of the first kept document), and rows for quarantine:
    (record_no, reason, detail, doc_id, snippet, n_bytes, n_tokens).
    """
    src, cfg = unit.source, unit.cfg
    n = cand.num_rows
    text = cand.column("text")
    n_bytes = pc.fill_null(pc.binary_length(text), 0).cast(pa.int64())
    reason = pa.nulls(n, pa.string())

    def mark(mask, name: str):
        nonlocal reason
        mask = pc.fill_null(mask, False)
        reason = pc.if_else(pc.and_(mask, pc.is_null(reason)), pa.scalar(name), reason)

    mark(pc.is_null(text), "missing_text")
    mark(pc.or_(pc.equal(n_bytes, 0), pc.utf8_is_space(text)), "empty_text")
    mark(nul_mask(text), "nul_byte")
    mark(pc.greater(n_bytes, cfg.max_text_bytes), "text_too_long")
    ids = cand.column("doc_id")
    if src.id_field is not None:
        mark(pc.or_kleene(pc.is_null(ids), pc.equal(pc.binary_length(ids), 0)), "missing_id")
    # Ids: content hashes where the source has none; duplicates (first wins) are quarantined.
    id_list = ids.to_pylist()
    reasons = reason.to_pylist()
    texts = None
    for i, r in enumerate(reasons):
        if r is not None:
            continue
        if id_list[i] is None:
            texts = texts if texts is not None else text
            id_list[i] = _content_id(texts[i].as_py())
        if id_list[i] in seen_ids:
            reasons[i] = "duplicate_id"
        else:
            seen_ids.add(id_list[i])
    ids = pa.array(id_list, pa.string())
    keep = pc.is_null(pa.array(reasons, pa.string()))
    n_keep = pc.sum(keep.cast(pa.int64())).as_py() or 0
    kept_ids = ids.filter(keep)
    files = kept_ids if unit.fmt is Format.TEXT else pa.array([unit.rels[0]] * n_keep, pa.string())
    kept_text = text.filter(keep)
    cache = refs = None
    if unit.counting.exact and unit.cfg.token_id_cache:
        ids = token_id_lists(kept_text, unit.tokenizer)
        n_tokens = ids.value_lengths().cast(pa.int64())
        cache = pa.Table.from_arrays([text_digests(kept_text), ids], schema=token_ids_schema(unit.tokenizer.dtype))
        refs = pa.array((unit.index << TOKEN_REF_UNIT_SHIFT) + np.arange(first_row, first_row + n_keep, dtype=np.int64))
    else:
        n_tokens = pa.array(count_tokens(kept_text, unit.counting, unit.tokenizer), pa.int64())
    kept = pa.Table.from_arrays([
        kept_ids,
        pa.array([src.name] * n_keep, pa.string()),
        kept_text,
        n_bytes.filter(keep),
        n_tokens,
        refs if refs is not None else pa.nulls(n_keep, pa.int64()),
        cand.column("metadata").filter(keep),
        files,
        cand.column("record_no").filter(keep),
        pa.array([False] * n_keep, pa.bool_()),
    ], schema=DOCS_SCHEMA)
    details = {"missing_text": f"no usable {src.text_field!r} field (absent or null)",
               "empty_text": "text is empty or only whitespace",
               "nul_byte": "text contains a NUL (\\x00) byte",
               "text_too_long": f"longer than ingest.max_text_bytes={cfg.max_text_bytes}",
               "missing_id": f"no {src.id_field!r} field (absent, null or empty)",
               "duplicate_id": "an earlier record of this source has the same id"}
    nos = cand.column("record_no")
    rejected = [i for i, r in enumerate(reasons) if r is not None]
    texts_bad = [text[i].as_py() or "" for i in rejected]
    tokens_bad = count_tokens(pa.array(texts_bad, pa.large_string()), unit.counting, unit.tokenizer)
    bad = [(nos[i].as_py(), reasons[i], details[reasons[i]], id_list[i], _snippet(t, cfg.snippet_chars),
            n_bytes[i].as_py(), int(n)) for i, t, n in zip(rejected, texts_bad, tokens_bad)]
    return kept, cache, bad


def _quarantine_table(source: str, rows: list[tuple]) -> pa.Table:
    """rows: (record_no, reason, detail, doc_id, snippet, n_bytes, n_tokens, file)."""
    cols = list(zip(*rows)) if rows else [[] for _ in range(8)]
    return pa.Table.from_arrays([
        pa.array([source] * len(rows), pa.string()),
        pa.array(cols[7], pa.string()),
        pa.array(cols[0], pa.int64()),
        pa.array(cols[1], pa.string()),
        pa.array(cols[2], pa.string()),
        pa.array(cols[3], pa.string()),
        pa.array(cols[4], pa.string()),
        pa.array(cols[5], pa.int64()),
        pa.array(cols[6], pa.int64()),
    ], schema=QUAR_SCHEMA)


def _bad_rows(bad: list[BadRecord], unit: Unit, file: str | None) -> list[tuple]:
    """Quarantine rows for the records a reader could not use, their raw bytes counted in tokens."""
    tokens = count_raw([(b.raw, b.n_bytes) for b in bad], unit.counting, unit.tokenizer)
    return [(b.record_no, b.reason, b.detail, b.doc_id, _snippet(b.raw, unit.cfg.snippet_chars), b.n_bytes, int(n),
             b.file or file) for b, n in zip(bad, tokens)]


def _mark_truncated(staging: Path, parts: list[dict]) -> None:
    """Flag every kept record of a damaged file (its parts are this unit's own)."""
    for part in parts:
        path = staging / part["name"]
        table = pq.read_table(path, schema=DOCS_SCHEMA)
        table = table.set_column(table.schema.get_field_index("truncated_input"), "truncated_input",
                                 pa.array([True] * table.num_rows, pa.bool_()))
        pq.write_table(table, path, row_group_size=max(1, table.num_rows), **PARQUET_OPTS)
        part |= {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def ingest_unit(unit: Unit) -> UnitResult:
    """Worker: read, screen, validate and write one unit into the staging directory."""
    staging = Path(unit.staging)
    src, cfg = unit.source, unit.cfg
    info = FileReadResult()
    res = UnitResult(index=unit.index, inputs=[])
    docs = PartWriter(staging, f"part-{unit.index:05d}", DOCS_SCHEMA, cfg.part_bytes)
    cache = None  # the token-id cache: one file per unit, ``token_ref`` points into it
    qrows: list[tuple] = []
    seen: set[str] = set()
    paths = [Path(p) for p in unit.paths]
    file_label = unit.rels[0] if unit.fmt is not Format.TEXT else None
    try:
        for batch in read_unit(unit.fmt, paths, unit.rels, src, cfg, info):
            qrows += _bad_rows(batch.bad, unit, file_label)
            res.scaled_records += sum(1 for b in batch.bad if b.size is not None and b.size > len(b.raw))
            if batch.candidates.num_rows == 0:
                continue
            kept, cached, bad = _screen(batch.candidates, unit, seen, res.docs_out)
            for row in bad:
                qrows.append(row + ((file_label or row[3] or ""),))
            validate_table(kept, INGEST_DOCUMENTS)
            docs.write(kept)
            if cached is not None and cached.num_rows:
                cache = cache or pq.ParquetWriter(staging / TOKEN_IDS_FILE.format(unit=unit.index), cached.schema, **CACHE_OPTS)
                cache.write_table(cached, row_group_size=cached.num_rows)
            res.docs_out += kept.num_rows
            res.bytes_out += pc.sum(kept.column("n_bytes")).as_py() or 0
            res.tokens_out += pc.sum(kept.column("n_tokens")).as_py() or 0
    except UnreadableFileError as e:
        if src.on_unreadable == "fail":
            raise
        res.skipped = {"file": e.path, "error": e.detail, "records_kept": res.docs_out}
    res.parts = docs.close()
    if cache is not None:
        cache.close()
        res.cache = file_record(staging / TOKEN_IDS_FILE.format(unit=unit.index), res.docs_out)
    res.id_hashes = np.fromiter((_id_hash(i) for i in seen), dtype=np.uint64, count=len(seen)).tobytes()
    if res.skipped is not None:
        _mark_truncated(staging, res.parts)
        res.skipped["file"] = unit.rels[0] if unit.fmt is not Format.TEXT else res.skipped["file"]
    res.inputs = info.files or [{"path": unit.rels[0], "sha256": info.sha256, "bytes": info.bytes}]
    res.fast_blocks, res.exact_blocks, res.blank_lines = info.fast_blocks, info.exact_blocks, info.blank_lines
    res.records_read = info.lines - info.blank_lines
    res.warnings = info.warnings
    if qrows:
        qrows.sort(key=lambda r: (r[7], r[0]))  # file order: by file, then record, as the records were read
        qt = _quarantine_table(src.name, qrows)
        validate_table(qt, QUARANTINE)
        name = f"quarantine-{unit.index:05d}.parquet"
        pq.write_table(qt, staging / name, **PARQUET_OPTS)
        res.quarantine = {"name": name, "rows": qt.num_rows, "sha256": sha256_file(staging / name),
                          "bytes": (staging / name).stat().st_size}
        for r in qrows:
            rec = res.reasons.setdefault(r[1], [0, 0, 0])
            rec[0] += 1
            rec[1] += r[5]
            rec[2] += r[6]
    return res


def source_files_rel(loaded: LoadedSpec, source: Source) -> list[tuple[Path, str]]:
    """A source's files in ingest order, each with its path relative to the common base of the globs.

    Recording relative paths means moving the spec or the data changes neither the
    output bytes nor the content key, and two globs cannot give two files one name.
    """
    files = loaded.source_files(source)
    base = os.path.commonpath([str(loaded.resolve(glob_base(p))) for p in source.paths])
    if any(f == Path(base) for f in files):  # a glob naming one file: its base is the file itself
        base = str(Path(base).parent)
    return [(f, os.path.relpath(f, base)) for f in files]


def _file_stats(files: list[tuple[Path, str]]) -> list[tuple[str, int, int]]:
    return [(rel, f.stat().st_size, f.stat().st_mtime_ns) for f, rel in files]


def ingest_config(loaded: LoadedSpec, source_name: str) -> dict:
    """The spec fields that change what ingest writes (editing a source's filters or weight rebuilds
    only later stages), and how tokens are counted (the tokenizer file, or the estimate's vocabulary size)."""
    fields = {"name", "format", "text_field", "id_field", "metadata_fields", "on_unreadable"}
    return {"source": loaded.source(source_name).model_dump(mode="json", include=fields),
            "ingest": loaded.spec.ingest.model_dump(mode="json"),
            "token_counting": counting_of(loaded).as_dict()}


def ingest_inputs(loaded: LoadedSpec, source_name: str) -> list[tuple[str, str]] | None:
    """What ingest reads: its files' relative paths and checksums.

    Only worth computing (reading every file once more) when it can match the current
    manifest: if the file names or sizes differ from the ones it records, None (not
    current), and the build computes the checksums while it reads the files anyway.
    """
    files = source_files_rel(loaded, loaded.source(source_name))
    path = manifest_path(loaded.manifest_root, NAME, source_name)
    try:
        recorded = sorted((i["path"], i["bytes"]) for i in read_manifest(path)["inputs"]) if path.is_file() else None
    except Exception:  # noqa: BLE001 - an unreadable manifest is simply not current
        recorded = None
    if recorded != sorted((rel, size) for rel, size, _ in _file_stats(files)):
        return None
    return [(rel, sha256_file(f)) for f, rel in files]


def plan_units(loaded: LoadedSpec, source: Source, staging: Path,
               files: list[tuple[Path, str]] | None = None) -> list[Unit]:
    """Cut a source's files (``source_files_rel``, found here unless given) into independent units,
    in a fixed order (the output order)."""
    units: list[Unit] = []
    text_group: list[tuple[str, str]] = []
    text_bytes = 0

    def flush_text():
        nonlocal text_group, text_bytes
        if text_group:
            units.append(Unit(len(units), Format.TEXT, [p for p, _ in text_group], [r for _, r in text_group],
                              source, loaded.spec.ingest, str(staging),
                              *counter_for(loaded)))
            text_group, text_bytes = [], 0

    for f, rel in source_files_rel(loaded, source) if files is None else files:
        fmt = file_format(source, f)
        if fmt is Format.TEXT:
            text_group.append((str(f), rel))
            text_bytes += f.stat().st_size
            if text_bytes >= TEXT_UNIT_BYTES:
                flush_text()
        else:
            flush_text()
            units.append(Unit(len(units), fmt, [str(f)], [rel], source, loaded.spec.ingest, str(staging),
                              *counter_for(loaded)))
    flush_text()
    return units


def _run_unit(unit: Unit) -> UnitResult | UnreadableFileError:
    """Worker entry: a damaged file comes back as a value so every unit finishes and all are reported."""
    try:
        return ingest_unit(unit)
    except UnreadableFileError as e:
        return e


def _move_cross_unit_duplicates(staging: Path, results: list[UnitResult], cfg: Ingest, source: Source) -> None:
    """Keep the first occurrence (unit order) of an id that several units share; quarantine the rest.

    Memory: the screen holds 8 bytes per document of the source; the exact
    pass (DuckDB over the parts, which spills to disk) runs only on a collision.
    """
    import duckdb

    parts = [str(staging / p["name"]) for r in results for p in r.parts]
    if len(results) < 2 or len(parts) < 2:
        return
    # Cheap screen first: 8 bytes per document; only a hash collision sends us to the exact pass.
    hashes = np.sort(np.concatenate([np.frombuffer(r.id_hashes, dtype=np.uint64) for r in results]))
    if not (hashes[1:] == hashes[:-1]).any():
        return
    con = duckdb.connect()
    try:
        dup_ids = {row[0] for row in con.execute(
            "SELECT doc_id FROM read_parquet(?) GROUP BY doc_id HAVING count(*) > 1", [parts]).fetchall()}
    finally:
        con.close()
    if not dup_ids:
        return
    seen: set[str] = set()
    qrows: list[tuple] = []
    for res in results:
        for part in res.parts:
            path = staging / part["name"]
            table = pq.read_table(path, schema=DOCS_SCHEMA)
            ids = table.column("doc_id").to_pylist()
            drop = []
            for doc_id in ids:
                if doc_id in dup_ids:
                    drop.append(doc_id in seen)
                    seen.add(doc_id)
                else:
                    drop.append(False)
            if not any(drop):
                continue
            mask = pa.array(drop)
            gone = table.filter(mask)
            for row in gone.select(["record_no", "doc_id", "text", "n_bytes", "n_tokens", "file"]).to_pylist():
                qrows.append((row["record_no"], "duplicate_id", "an earlier file of this source has the same id",
                              row["doc_id"], _snippet(row["text"], cfg.snippet_chars), row["n_bytes"],
                              row["n_tokens"], row["file"]))
                rec = res.reasons.setdefault("duplicate_id", [0, 0, 0])
                rec[0] += 1
                rec[1] += row["n_bytes"]
                rec[2] += row["n_tokens"]
            kept = table.filter(pc.invert(mask))
            pq.write_table(kept, path, row_group_size=max(1, kept.num_rows), **PARQUET_OPTS)
            removed_bytes = pc.sum(gone.column("n_bytes")).as_py() or 0
            removed_tokens = pc.sum(gone.column("n_tokens")).as_py() or 0
            part |= {"rows": kept.num_rows, "text_bytes": part["text_bytes"] - removed_bytes,
                     "tokens": part["tokens"] - removed_tokens,
                     "sha256": sha256_file(path), "bytes": path.stat().st_size}
            res.docs_out -= gone.num_rows
            res.bytes_out -= removed_bytes
            res.tokens_out -= removed_tokens
    qt = _quarantine_table(source.name, qrows)
    validate_table(qt, QUARANTINE)
    name = "quarantine-duplicate-ids.parquet"
    pq.write_table(qt, staging / name, **PARQUET_OPTS)
    results[-1].extra_quarantine = {"name": name, "rows": qt.num_rows, "sha256": sha256_file(staging / name),
                                    "bytes": (staging / name).stat().st_size}


def _fail_if_mostly_quarantined(counts: dict, reasons: dict, source: Source, cfg: Ingest, units: list[Unit]) -> None:
    """A source that keeps nothing (or less than the spec tolerates) is a wrong spec far more often
    than bad data: stop here, with the reasons and the fields the records actually have, rather
    than at the plan with "no tokens"."""
    records, quarantined = counts["records_read"], counts["quarantined"]
    if records and quarantined < cfg.max_quarantined_fraction * records:
        return
    top = ", ".join(f"{k} ({v['records']})" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]["records"])[:3])
    what = (f"{quarantined} of its {records} records are quarantined ({top})" if records
            else "its files hold no records at all")
    seen = _fields_seen(units[0])
    raise IngestError(
        f"source {source.name!r}: {what}; the records have the fields {seen or '(none found)'}, the spec reads "
        f"text from {source.text_field!r} and ids from {source.id_field!r}\n"
        f"fix: set sources[{source.name}].text_field (and id_field) to fields the records have, check the "
        f"quarantine table for the reasons, or raise ingest.max_quarantined_fraction (now "
        f"{cfg.max_quarantined_fraction:g}) if this much bad data is expected")


def _fields_seen(unit: Unit, lines: int = 20) -> list[str]:
    """The field names of the first records of a unit's first file (JSONL keys, Parquet columns)."""
    path = Path(unit.paths[0])
    try:
        if unit.fmt is Format.PARQUET:
            return pq.ParquetFile(path).schema_arrow.names
        if unit.fmt is Format.JSONL:
            names: dict[str, None] = {}
            for line in _head_lines(path, lines):
                rec = orjson.loads(line)
                if isinstance(rec, dict):
                    names.update(dict.fromkeys(rec))
            return list(names)
    except Exception:  # noqa: BLE001 - a hint for the message; the message stands without it
        pass
    return []


def _head_lines(path: Path, n: int):
    """The first ``n`` non-blank lines of a (compressed) JSONL file (no further than its first 4 MiB)."""
    from corpusmix.readers.common import RawFile, decompressed

    with open(path, "rb") as f:
        buf, found = b"", 0
        for chunk in decompressed(RawFile(f), path):
            buf += chunk
            *done, buf = buf.split(b"\n")
            for line in done:
                if line.strip():
                    yield line
                    found += 1
                    if found == n:
                        return
            if len(buf) > 1 << 22:
                return


def _unreadable_message(errors: list[UnreadableFileError], source: Source) -> str:
    lines = [f"source {source.name!r}: {len(errors)} file(s) cannot be read:"]
    lines += [f"  {e.path}: {e.detail}" for e in errors]
    lines.append(f"fix: re-fetch or repair the file(s), remove them from sources[{source.name}].paths, or set "
                 f"'on_unreadable: skip' on source {source.name!r} to keep the records read before the damage "
                 "(they are flagged truncated_input and the file is listed in the manifest as skipped)")
    return "\n".join(lines)


def build_ingest(ctx: StageRun) -> Built:
    """Read a source's files unit by unit on the executor (a caller's shared pool, or the spec's),
    quarantine what is bad, and report; the content key comes from the checksums read on the way."""
    loaded, source = ctx.loaded, ctx.loaded.source(ctx.partition)
    files = source_files_rel(loaded, source)  # looked for again at the end, to catch changes
    before = _file_stats(files)
    units = plan_units(loaded, source, ctx.staging, files)
    if not units:
        raise IngestError(f"source {source.name!r}: its paths match no file any more: {source.paths}; "
                          "fix the globs (relative to the spec file) or restore the files")
    results: list[UnitResult] = []
    errors: list[UnreadableFileError] = []
    with ctx.executor(len(units)) as executor:
        ctx.say(f"{len(units)} unit(s) from {sum(len(u.paths) for u in units)} file(s) on {executor.backend} "
                f"({executor.workers} worker(s))")
        for unit, res in zip(units, executor.map(_run_unit, units)):  # in unit order, as they finish
            if isinstance(res, UnreadableFileError):
                errors.append(res)
                ctx.say(f"{unit.rels[0]}: UNREADABLE: {res.detail}")
                continue
            results.append(res)
            q = sum(v[0] for v in res.reasons.values())
            damaged = f" (file damaged: skipped after {res.skipped['records_kept']} records)" if res.skipped else ""
            ctx.say(f"{len(results) + len(errors)}/{len(units)} {unit.rels[0]}{' ..' if len(unit.rels) > 1 else ''}: "
                    f"{res.records_read} records, {res.docs_out} kept, {q} quarantined{damaged}")
            for warning in res.warnings:
                ctx.say(f"WARNING: {warning}")
    if errors:
        raise IngestError(_unreadable_message(errors, source))
    _move_cross_unit_duplicates(ctx.staging, results, loaded.spec.ingest, source)
    built = _built(loaded, source, results)
    _fail_if_mostly_quarantined(built.counts, built.reasons, source, loaded.spec.ingest, units)
    if _file_stats(source_files_rel(loaded, source)) != before:
        raise IngestError(f"source {source.name!r}: input files changed while they were read; run again")
    built.version = ctx.key([(i["path"], i["sha256"]) for i in built.inputs])
    return built


@functools.lru_cache(maxsize=8)
def _file_sha(path: str) -> str:
    return sha256_file(path)


def _built(loaded: LoadedSpec, source: Source, results: list[UnitResult]) -> Built:
    counting = counting_of(loaded)
    inputs = [i for r in results for i in r.inputs]
    reasons: dict[str, list[int]] = {}
    for r in results:
        for k, counts in r.reasons.items():
            reasons[k] = [a + b for a, b in zip(reasons.get(k, [0, 0, 0]), counts)]
    docs_out = sum(r.docs_out for r in results)
    bytes_out = sum(r.bytes_out for r in results)
    tokens_out = sum(r.tokens_out for r in results)
    quarantined = sum(n for n, _, _ in reasons.values())
    bad_bytes = sum(b for _, b, _ in reasons.values())
    tokens_in = tokens_out + sum(t for _, _, t in reasons.values())
    records = sum(r.records_read for r in results)
    if records != docs_out + quarantined:  # the accounting invariant: nothing is lost silently
        raise RuntimeError(f"{source.name}: {records} records read != {docs_out} kept + {quarantined} quarantined")
    outputs = []
    for r in results:
        for p in r.parts:
            outputs.append({"path": p["name"], "kind": "documents", "sha256": p["sha256"], "bytes": p["bytes"],
                            "rows": p["rows"], "tokens": p["tokens"]})
        for kind, q in (("quarantine", r.quarantine), ("quarantine", r.extra_quarantine), ("token_ids", r.cache)):
            if q:
                outputs.append({"path": q["name"], "kind": kind, "sha256": q["sha256"], "bytes": q["bytes"],
                                "rows": q["rows"], "tokens": 0})
    rate = tokens_out / tokens_in if tokens_in else None
    return Built(
        inputs=[i | {"upstream_manifest": None} for i in inputs],
        outputs=outputs,
        counts={"records_read": records, "documents_in": records, "documents_out": docs_out,
                "quarantined": quarantined, "blank_lines": sum(r.blank_lines for r in results),
                "bytes_in": bytes_out + bad_bytes, "bytes_out": bytes_out,
                "tokens_in": tokens_in, "tokens_out": tokens_out,
                "input_file_bytes": sum(i["bytes"] for i in inputs), "input_files": len(inputs),
                "skipped_files": sum(1 for r in results if r.skipped)},
        rates={"document_acceptance": docs_out / records if records else None, "token_acceptance": rate},
        token_counting=counting.as_dict() | {"quarantined_records_scaled": sum(r.scaled_records for r in results)},
        reasons={k: {"records": n, "bytes": b, "tokens": t} for k, (n, b, t) in sorted(reasons.items())},
        skipped_files=[r.skipped for r in results if r.skipped],
        details={"units": len(results), "fast_blocks": sum(r.fast_blocks for r in results),
                 "exact_blocks": sum(r.exact_blocks for r in results),
                 "warnings": [w for r in results for w in r.warnings]},
        summary=f"{docs_out}/{records} documents kept, token acceptance {'n/a' if rate is None else f'{rate:.4f}'}")


STAGE = Stage(name="ingest", scope="source", upstream=(), config=ingest_config, inputs=ingest_inputs,
              build=build_ingest, module=__name__)
