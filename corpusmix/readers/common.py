"""What every reader shares: the candidate and bad-record types, raw file access (checksummed
while read, decompressed by suffix), and the JSON and metadata helpers."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import zstandard
from isal import isal_zlib

from corpusmix.core.spec import Source
from schemas.tables import ARROW_SCHEMAS

BOM = b"\xef\xbb\xbf"

CANDIDATE_SCHEMA = ARROW_SCHEMAS["candidates"]


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
    size: int | None = None  # the record's bytes, where ``raw`` holds only its head (a line too long)
    doc_id: str | None = None  # the record's own id, when it could be read (so `audit why` finds it)

    @property
    def n_bytes(self) -> int:
        return len(self.raw) if self.size is None else self.size


@dataclass
class RawBatch:
    candidates: pa.Table
    bad: list[BadRecord] = field(default_factory=list)
    blank_lines: int = 0


RAW_CHUNK = 1 << 20


class RawFile:
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


def new_decoder(name: str):
    if name.endswith(".gz"):
        return isal_zlib.decompressobj(wbits=31)  # gzip framing; ISA-L inflates ~2.7x faster than zlib here
    if name.endswith((".zst", ".zstd")):
        return zstandard.ZstdDecompressor().decompressobj()
    return None


# Byte-order marks of the encodings that are not UTF-8 (UTF-32 first: its LE mark starts with UTF-16's).
_FOREIGN_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32 LE", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32 BE", "UTF-32"),
                 (b"\xff\xfe", "UTF-16 LE", "UTF-16"), (b"\xfe\xff", "UTF-16 BE", "UTF-16"))


def utf8_only(chunks: Iterator[bytes], path: Path) -> Iterator[bytes]:
    """``chunks`` unchanged, after checking the first does not start with a UTF-16 or UTF-32
    byte-order mark: such a file would read as one garbage record per line."""
    first = True
    for chunk in chunks:
        if first and chunk:
            for bom, name, codec in _FOREIGN_BOMS:
                if chunk.startswith(bom):
                    raise UnreadableFileError(
                        str(path), f"the text is {name} (it starts with the byte-order mark "
                                   f"{bom.hex(' ').upper()}), not UTF-8; fix: convert it, e.g. "
                                   f"`iconv -f {codec} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}`")
            first = False
        yield chunk


OUT_CHUNK = 4 << 20      # most decompressed bytes one call may return (zlib's max_length)
ZSTD_PIECE = 512         # compressed bytes fed to zstd per call: at most ~16 MiB out (a block expands <= 32768x)
BOMB_AFTER = 256 << 20   # decompressed bytes after which the expansion ratio is judged


_MAGIC = {b"\x1f\x8b": ".gz", b"\x28\xb5\x2f\xfd": ".zst"}


def _compression_name(path: Path, head: bytes) -> str:
    """The name to decode ``path`` by: its own, unless its first bytes say otherwise. A compressed
    file without the suffix is decoded by its magic bytes (no text starts with them); a file named
    compressed that is not fails here, saying what it is, rather than as "damage" later."""
    name = path.name.lower()
    magic = next((suffix for m, suffix in _MAGIC.items() if head.startswith(m)), None)
    named = ".gz" if name.endswith(".gz") else ".zst" if name.endswith((".zst", ".zstd")) else None
    if named is None:
        return name + magic if magic else name
    if head and magic != named:
        looks = "plain text" if magic is None and head[:1] in b"{[\"\r\n\t " else \
            f"a {magic} stream" if magic else "neither gzip nor zstd"
        raise UnreadableFileError(
            str(path), f"not a valid {named[1:]} stream: the file is named {named} but starts with "
                       f"{head[:4].hex(' ')}, which looks like {looks}; fix: rename it to say what it holds"
                       f"{' (without ' + named + ')' if magic is None else ''}")
    return name


def decompressed(raw: RawFile, path: Path, max_expansion: float = 200.0) -> Iterator[bytes]:
    """Decompressed bytes of a .gz / .zst / plain file, incrementally, in bounded pieces.

    Incremental decoding yields everything before a damaged or truncated point
    (``gzip.GzipFile.read`` would drop the last buffer), then raises
    UnreadableFileError. Multi-member gzip and multi-frame zstd are followed.
    No call returns more than ~``OUT_CHUNK`` (gzip) or ~16 MiB (zstd), and a file that
    expands more than ``max_expansion`` times once past ``BOMB_AFTER`` bytes is refused
    as a decompression bomb: memory stays bounded whatever the input.
    """
    chunks = raw.chunks()
    first = next(chunks, b"")
    name = _compression_name(path, first)
    dec = new_decoder(name)
    if dec is None:
        if first:
            yield first
        yield from chunks
        return
    zstd = not name.endswith(".gz")
    started = produced = False
    members = out_total = 0
    padding = False
    after_member = b""  # input past the end of the member just finished

    def feed(data: bytes) -> Iterator[bytes]:
        """Decompress ``data`` in bounded calls (zlib: max_length; zstd: small input pieces)."""
        nonlocal after_member
        if zstd:
            for k in range(0, len(data), ZSTD_PIECE):
                yield dec.decompress(data[k:k + ZSTD_PIECE])
                if dec.eof:
                    after_member = dec.unused_data + data[k + ZSTD_PIECE:]
                    return
            return
        while data:
            yield dec.decompress(data, OUT_CHUNK)
            data = dec.unconsumed_tail
        after_member = dec.unused_data

    for chunk in itertools.chain([first] if first else [], chunks):
        if padding:
            if chunk.strip(b"\0"):
                raise UnreadableFileError(str(path), "non-zero bytes after the zero padding that follows the "
                                                     "last compressed member")
            continue
        while chunk:
            try:
                for out in feed(chunk):
                    started = True
                    if out:
                        produced = True
                        out_total += len(out)
                        if out_total > BOMB_AFTER and out_total > max_expansion * raw.nbytes:
                            raise UnreadableFileError(
                                str(path), f"expands more than {max_expansion:g} times ({out_total / 2**20:,.0f} MiB "
                                           f"from {raw.nbytes / 2**20:,.1f} MiB read): a decompression bomb, not a "
                                           "corpus; fix: remove the file, or raise ingest.max_expansion if it is "
                                           "real data")
                        yield out
            except (isal_zlib.error, zlib.error, zstandard.ZstdError) as e:
                what = ("trailing data after the last complete compressed member is not a valid stream"
                        if members else f"not a valid {name.rsplit('.', 1)[-1]} stream")
                raise UnreadableFileError(str(path), f"{what}: {e}") from e
            if dec.eof:
                members += 1
                produced = False
                chunk = after_member
                dec = new_decoder(name)
                started = False
                if chunk and not chunk.strip(b"\0"):
                    padding, chunk = True, b""  # block-device / tape padding after the stream: gzip -d accepts it
            else:
                chunk = b""
    if started and not dec.eof:
        raise UnreadableFileError(str(path), "trailing data after the last complete compressed member is not a "
                                             "valid stream" if members and not produced else
                                             "compressed stream is truncated (ends before its end marker)")


_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)


def long_digit_run(block: bytes, n: int = 19) -> bool:
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


class UnpairedSurrogate(ValueError):
    """A JSON string escape that decodes to half a surrogate pair: no UTF-8 text can hold it."""


def load_json(line: bytes):
    """Parse one JSON value; a line with a 20+ digit integer goes to the standard library,
    which keeps it exact (orjson would make it a float)."""
    if long_digit_run(line):
        rec = json.loads(line.decode("utf-8"))
        try:  # the standard library accepts an unpaired \\uD800-\\uDFFF escape, which no UTF-8 text can hold
            json.dumps(rec, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise UnpairedSurrogate("a string holds an unpaired surrogate escape (\\uD800-\\uDFFF): "
                                    "valid JSON syntax, but not Unicode text") from None
        return rec
    return orjson.loads(line)


def metadata_json(table: pa.Table, fields: list[str] | None) -> pa.Array:
    """One JSON object string per row from the given columns (None when there are none).

    Serialised with orjson with sorted keys, as the JSON Lines paths do.
    """
    if not fields:
        return pa.nulls(table.num_rows, pa.string())
    rows = table.select(fields).to_pylist()
    return pa.array([dump_json(r) for r in rows], pa.string())


def meta_fields(available: list[str], source: Source) -> list[str]:
    skip = {source.text_field, source.id_field}
    if source.metadata_fields == "none":
        return []
    if source.metadata_fields == "all":
        return sorted(c for c in available if c not in skip)
    return [c for c in source.metadata_fields if c in available and c not in skip]


def id_column(table: pa.Table, source: Source) -> pa.Array | None:
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
    warnings: list[str] = field(default_factory=list)  # odd but not bad: said in the log and the manifest
