"""Dedup stage: exact and MinHash near-duplicate removal within one source.

Three streaming passes over the source's ingest parts; no process holds the
text of more than one batch:

1. normalise every document (``normalize``), hash it for exact matching, cut it
   into word n-gram shingles (hashed without a Python call per word or shingle,
   see ``hashing.word_hashes``) and compute its MinHash signature, vectorised
   over a batch of documents. Signatures are datasketch's own (scheme
   ``affine32``: fmix32 then a*h+b mod 2^32, its permutation parameters), and the
   LSH uses datasketch's choice of bands x rows; the banding itself is a numpy
   group-by that yields the same candidate pairs as ``MinHashLSH`` (tested);
2. (``verify``) for the documents in candidate pairs only, recompute the
   shingle sets and keep a pair when their true Jaccard similarity reaches the
   threshold (LSH candidates include false positives);
3. write the surviving documents, and the ``duplicates`` table for audits.

Each pass is cut into one unit of work per input part and runs on the build's
executor (``corpusmix.executor``: in-process, a process pool or Ray tasks). Pass
1 writes each part's signatures to a scratch file; the LSH banding is a shuffle
by band key (map: one part's band keys into buckets; reduce: one bucket's groups
into candidate pairs), so no process ever holds every band of every document.
The driver keeps the exact keys, sizes and ids (about 24 bytes + the id per
document), does the exact grouping and the union-find, and asks the workers
for the few texts it must verify or show. Every backend and worker count gives
the same pairs, clusters and bytes.

Duplicates form clusters (union-find over exact groups and accepted pairs);
one representative per cluster survives, chosen by ``dedup.representative``:
``longest`` (most bytes), ``shortest`` or ``first`` (ingest order), ties by
the smallest doc_id.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import shutil
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH

from schemas.tables import ARROW_SCHEMAS, DUPLICATES, INGEST_DOCUMENTS, validate_table

from .hashing import mix64, word_hashes
from .executor import Executor, open_executor
from .manifest import (
    content_key, downstream_manifest, input_refs, output_ref, require_manifest, stage_manifest, up_to_date, utc_now,
    write_manifest,
)
from .parquet_io import PartWriter, write_parquet
from .spec import Dedup, LoadedSpec, Normalize
from .storage import discard_dir, new_staging_dir, publish_dir
from .tokencount import TokenEstimate

log = logging.getLogger("corpusmix.dedup")

STAGE = "dedup"
UPSTREAM = "ingest"
DOCS_SCHEMA = ARROW_SCHEMAS["ingest_documents"]
DUP_SCHEMA = ARROW_SCHEMAS["duplicates"]
SIG_BATCH_CELLS = 1 << 23     # permutations x shingles per vectorised step (32 MiB of uint32)
READ_BATCH_ROWS = 2048
SCRATCH = "_scratch"          # signature files inside the staging directory, removed before publishing


# --------------------------------------------------------------------------- text -> hashes

# Unicode punctuation outside ASCII, as UTF-8 byte patterns: Latin-1 punctuation and symbols
# (U+00A1-U+00BF, U+00D7, U+00F7), General Punctuation (U+2000-U+206F), CJK Symbols and
# Punctuation (U+3000-U+303F). Fullwidth forms become ASCII under NFKC first.
_UNICODE_PUNCT = re.compile(rb"\xc2[\xa1-\xbf]|\xc3[\x97\xb7]|\xe2\x80[\x80-\xbf]|\xe2\x81[\x80-\xaf]|\xe3\x80[\x80-\xbf]")


@functools.lru_cache(maxsize=4)
def _byte_table(punctuation: bool, zero_digits: bool) -> bytes:
    """A bytes.translate table for the ASCII rules (GB/s, where a str regex does ~25 MB/s)."""
    table = bytearray(range(256))
    for c in range(128):
        ch = chr(c)
        if punctuation and not ch.isalnum() and not ch.isspace() and ch != "_":
            table[c] = 0x20
        elif zero_digits and ch.isdigit():
            table[c] = ord("0")
    return bytes(table)


def normalize(text: str, cfg: Normalize) -> bytes:
    """The UTF-8 bytes dedup compares; the order matters (NFKC can create punctuation).

    Punctuation means ASCII punctuation and symbols plus the Unicode ranges in
    ``_UNICODE_PUNCT``; digits mean ASCII digits (after NFKC, which maps most
    other digit forms to ASCII).
    """
    if cfg.unicode != "none":
        text = unicodedata.normalize(cfg.unicode, text)
    if cfg.lowercase:
        text = text.lower()
    data = text.encode("utf-8")
    if cfg.punctuation or cfg.digits == "zero":
        data = data.translate(_byte_table(cfg.punctuation, cfg.digits == "zero"))
        if cfg.punctuation and not data.isascii():
            data = _UNICODE_PUNCT.sub(b" ", data)
    if cfg.whitespace:
        data = b" ".join(data.split())
    return data


def exact_key(norm: bytes) -> bytes:
    return hashlib.blake2b(norm, digest_size=16).digest()


_SHINGLE_MULT = np.uint64(0x9E3779B97F4A7C15)


SHINGLE_GROUP_BYTES = 1 << 20  # text hashed per numpy pass: bounds the prefix-hash tables (~24 bytes/byte)


def batch_shingles(norms: list[bytes], k: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the word k-grams of many documents, and the count per document.

    Documents are hashed together, in groups of about SHINGLE_GROUP_BYTES (per-document
    numpy calls would cost more than the hashing for short texts; one giant group would
    need prefix tables the size of the batch); see ``_group_shingles``.
    """
    hashes, counts, group, size = [], [], [], 0
    for norm in norms:
        if group and size + len(norm) > SHINGLE_GROUP_BYTES:
            h, c = _group_shingles(group, k)
            hashes.append(h)
            counts.append(c)
            group, size = [], 0
        group.append(norm)
        size += len(norm) + 1
    if group or not norms:
        h, c = _group_shingles(group, k)
        hashes.append(h)
        counts.append(c)
    return np.concatenate(hashes), np.concatenate(counts)


def _group_shingles(norms: list[bytes], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The documents are hashed as one byte string (a space between them, so no word spans
    two), and a k-gram is kept only when its k words belong to one document; a document of
    1..k-1 words gets one shingle of all its words."""
    n_docs = len(norms)
    w, starts = word_hashes(b" ".join(norms))
    if len(w) == 0:
        return np.empty(0, np.uint32), np.zeros(n_docs, np.int64)
    lengths = np.fromiter((len(x) for x in norms), np.int64, n_docs)
    doc_start = np.cumsum(lengths + 1) - (lengths + 1)
    doc_of = np.searchsorted(doc_start, starts, side="right") - 1
    words_per_doc = np.bincount(doc_of, minlength=n_docs)
    w = mix64(w)
    m = len(w) - k + 1
    hashes, owners = [np.empty(0, np.uint64)], [np.empty(0, np.int64)]
    if m > 0:
        acc = np.zeros(m, np.uint64)
        with np.errstate(over="ignore"):
            for j in range(k):  # a polynomial in the word hashes: order matters, as in a k-gram
                acc = acc * _SHINGLE_MULT + w[j:j + m]
        inside = doc_of[:m] == doc_of[k - 1:]
        hashes.append(acc[inside])
        owners.append(doc_of[:m][inside])
    first_word = np.cumsum(words_per_doc) - words_per_doc
    for d in np.flatnonzero((words_per_doc > 0) & (words_per_doc < k)):
        acc1 = np.zeros(1, np.uint64)
        with np.errstate(over="ignore"):
            for x in w[first_word[d]:first_word[d] + words_per_doc[d]]:
                acc1 = acc1 * _SHINGLE_MULT + x
        hashes.append(acc1)
        owners.append(np.array([d]))
    h, o = np.concatenate(hashes), np.concatenate(owners)
    order = np.argsort(o, kind="stable")
    return (mix64(h[order]) >> np.uint64(32)).astype(np.uint32), np.bincount(o, minlength=n_docs)


def shingle_hashes(norm: bytes, k: int) -> np.ndarray:
    """32-bit hashes of the word k-grams of one document (see ``batch_shingles``)."""
    return batch_shingles([norm], k)[0]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch applies it before its permutations."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


def permutations(num_perm: int, seed: int) -> np.ndarray:
    """datasketch's own (a, b) permutation parameters for ``num_perm`` and ``seed``."""
    return MinHash(num_perm=num_perm, seed=seed).permutations


EMPTY_SIG = np.uint32(0xFFFFFFFF)


def signatures(shingles: list[np.ndarray], perms: np.ndarray) -> np.ndarray:
    """MinHash signatures (n_docs x num_perm, uint32) of per-document shingle-hash arrays."""
    counts = np.fromiter((len(x) for x in shingles), np.int64, len(shingles))
    flat = np.concatenate(shingles) if shingles else np.empty(0, np.uint32)
    return batch_signatures(flat.astype(np.uint32), counts, perms)


def batch_signatures(hv: np.ndarray, counts: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """MinHash signatures of documents whose shingle hashes are concatenated in ``hv``.

    Equal to ``MinHash(num_perm, seed, hashfunc=int).update_batch(shingles)``
    per document (datasketch's affine32 scheme), computed for many documents per
    numpy step in a reused buffer of SIG_BATCH_CELLS cells; a document cut by a
    step boundary is finished in the next. A document without shingles gets
    all-0xFFFFFFFF (and never matches).
    """
    a, b = perms[0][:, None], perms[1][:, None]
    num_perm = a.shape[0]
    out = np.full((len(counts), num_perm), EMPTY_SIG, np.uint32)
    if len(hv) == 0:
        return out
    hv = _fmix32(hv)
    starts = np.cumsum(counts) - counts
    ends = starts + counts
    nonempty = np.flatnonzero(counts > 0)
    step = max(1, SIG_BATCH_CELLS // num_perm)
    buf = np.empty((num_perm, min(step, len(hv))), np.uint32)
    for lo in range(0, len(hv), step):
        seg = hv[lo:lo + step]
        view = buf[:, :len(seg)]
        with np.errstate(over="ignore"):
            np.multiply(a, seg[None, :], out=view, dtype=np.uint32, casting="unsafe")
            np.add(view, b, out=view, dtype=np.uint32, casting="unsafe")
        docs = nonempty[(starts[nonempty] < lo + len(seg)) & (ends[nonempty] > lo)]
        mins = np.minimum.reduceat(view, np.maximum(starts[docs], lo) - lo, axis=1).T
        out[docs] = np.minimum(out[docs], mins)
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """True Jaccard similarity of two sets of shingle hashes (unique, sorted arrays)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


# --------------------------------------------------------------------------- clustering

class UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return int(root)

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)


def pick_representative(members: list[int], idx: "_Index", policy: str) -> int:
    """The member that survives: by policy, then the smallest doc_id (a total, stable order)."""
    if policy == "longest":
        return min(members, key=lambda m: (-int(idx.sizes[m]), idx.id(m)))
    if policy == "shortest":
        return min(members, key=lambda m: (int(idx.sizes[m]), idx.id(m)))
    return min(members, key=lambda m: (m, idx.id(m)))


# --------------------------------------------------------------------------- the stage

@dataclass
class _Index:
    """What pass 1 keeps per document on the driver, in compact arrays (no Python object per
    document): id, size and exact key (16 bytes). Signatures (num_perm x 4 bytes per document)
    stay in one ``.npy`` file per input part under the stage's scratch directory, read by
    memory map where a few are needed (estimated Jaccard of a removed pair)."""

    ids: pa.Array
    sizes: np.ndarray
    keys: np.ndarray
    sig_files: list[Path]
    offsets: np.ndarray  # position of each part's first document
    _maps: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.sizes)

    def id(self, i: int) -> str:
        return self.ids[int(i)].as_py()

    def sig(self, i: int) -> np.ndarray:
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        if part not in self._maps:
            self._maps[part] = np.load(self.sig_files[part], mmap_mode="r")
        return self._maps[part][i - int(self.offsets[part])]


def _empty_index() -> _Index:
    return _Index(pa.array([], pa.string()), np.empty(0, np.int64), np.empty((0, 16), np.uint8), [], np.zeros(1, np.int64))


def _batches(part: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(part).iter_batches(batch_size=READ_BATCH_ROWS, columns=columns)


def _pass1_unit(cfg: Dedup, perms: np.ndarray, item: tuple[Path, Path]) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Pass 1 over one part (a unit of work): ids, sizes and exact keys for the driver; the
    MinHash signatures go to ``sig_path`` for the banding shuffle."""
    part, sig_path = item
    n = pq.ParquetFile(part).metadata.num_rows
    sigs = np.full((n, perms.shape[1] if cfg.near.enabled else 0), EMPTY_SIG, np.uint32)
    keys = np.empty((n, 16), np.uint8)
    sizes = np.empty(n, np.int64)
    ids: list[pa.Array] = []
    pos = 0
    for batch in _batches(part, ["doc_id", "text", "n_bytes"]):
        norms = [normalize(t, cfg.normalize) for t in batch.column("text").to_pylist()]
        end = pos + batch.num_rows
        ids.append(batch.column("doc_id").cast(pa.string()))
        sizes[pos:end] = batch.column("n_bytes").to_numpy()
        keys[pos:end] = np.frombuffer(b"".join(exact_key(x) for x in norms), np.uint8).reshape(-1, 16)
        if cfg.near.enabled:
            sigs[pos:end] = batch_signatures(*batch_shingles(norms, cfg.near.shingle_words), perms)
        pos = end
    np.save(sig_path, sigs)
    return (pa.concat_arrays(ids) if ids else pa.array([], pa.string())), sizes, keys


def _pass1(parts: list[Path], cfg: Dedup, perms: np.ndarray, executor: Executor, scratch: Path,
           progress: Callable[[str], None]) -> _Index:
    scratch.mkdir(parents=True, exist_ok=True)
    sig_files = [scratch / f"signatures-{i:05d}.npy" for i in range(len(parts))]
    ids, sizes, keys = [], [], []
    for i, (part_ids, part_sizes, part_keys) in enumerate(
            executor.map(functools.partial(_pass1_unit, cfg, perms), zip(parts, sig_files))):
        ids.append(part_ids)
        sizes.append(part_sizes)
        keys.append(part_keys)
        progress(f"pass 1: part {i + 1}/{len(parts)}: {len(part_sizes)} documents hashed")
    if not parts:
        return _empty_index()
    counts = np.array([len(s) for s in sizes], np.int64)
    return _Index(pa.concat_arrays(ids), np.concatenate(sizes), np.concatenate(keys), sig_files,
                  np.concatenate([[0], np.cumsum(counts)]))


def lsh_params(cfg: Dedup) -> tuple[int, int]:
    """Bands x rows: from the spec, or datasketch's choice for the threshold.

    datasketch picks them to minimise fp_weight * P(false positive) + fn_weight *
    P(false negative) around the threshold. Its default weights (0.5, 0.5) make a
    pair at Jaccard 0.85 a candidate only 69 % of the time at threshold 0.8 (9 x 13);
    verification removes false positives anyway, so the default here weights misses
    0.95 (16 x 8: 99.4 % at 0.85, with more candidates to verify).
    """
    near = cfg.near
    if near.bands is not None:
        return near.bands, near.rows
    fn = near.false_negative_weight
    lsh = MinHashLSH(threshold=near.threshold, num_perm=near.num_perm, weights=(1.0 - fn, fn))
    return lsh.b, lsh.r


MAX_BUCKET_PAIRS = 200  # a bucket larger than this yields a star (first member x others), not all pairs


def band_keys(sigs: np.ndarray, positions: np.ndarray, bands: int, rows: int,
              buckets: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The map side of the LSH shuffle: every (band, band values) key of these documents,
    sent to bucket ``hash(key) % buckets`` with the document's position.

    A key holds the band number and its ``rows`` signature values, so two documents
    share a key exactly when they agree on every row of one band; all documents with
    one key land in one bucket, which is what makes the reduce side exact.
    """
    m = len(positions)
    keys = np.empty((m, bands, rows + 1), np.uint32)
    keys[:, :, 0] = np.arange(bands, dtype=np.uint32)
    keys[:, :, 1:] = sigs.reshape(m, bands, rows)
    with np.errstate(over="ignore"):
        bucket = (_fmix32(keys[:, :, 1] ^ (keys[:, :, 0] * np.uint32(0x9E3779B9))) % np.uint32(buckets)).ravel()
    flat = keys.reshape(m * bands, rows + 1).view(np.dtype((np.void, 4 * (rows + 1)))).ravel()
    pos = np.repeat(np.asarray(positions, np.int64), bands)
    return [(flat[bucket == b], pos[bucket == b]) for b in range(buckets)]


def band_pairs(*payloads: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The reduce side: candidate pairs (i < j, sorted rows) among documents sharing a key.

    Datasketch's ``MinHashLSH`` gives the same pairs (tested), at ~0.12 ms per
    document in Python where this is a sort per bucket.
    """
    keys = np.concatenate([k for k, _ in payloads]) if payloads else np.empty(0)
    pos = np.concatenate([p for _, p in payloads]) if payloads else np.empty(0, np.int64)
    pairs: set[tuple[int, int]] = set()
    if len(keys) >= 2:
        order = np.argsort(keys, kind="stable")
        cut = np.flatnonzero(keys[order][1:] != keys[order][:-1]) + 1
        for group in np.split(order, cut):
            if len(group) < 2:
                continue
            members = sorted(pos[group].tolist())
            if len(members) > MAX_BUCKET_PAIRS:
                pairs.update((members[0], m) for m in members[1:])
            else:
                pairs.update((members[i], m) for i in range(len(members)) for m in members[i + 1:])
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


def lsh_candidate_pairs(sigs: np.ndarray, rows_of: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Candidate pairs among the documents ``rows_of`` of one in-memory signature matrix."""
    return set(map(tuple, band_pairs(*band_keys(sigs[rows_of], rows_of, bands, rows, 1)).tolist()))


def _band_map_unit(bands: int, rows: int, buckets: int,
                   item: tuple[Path, int, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One part's map side: its exact-group leaders with a signature (identical texts and
    documents without shingles need no LSH)."""
    sig_path, offset, local = item
    sigs = np.load(sig_path, mmap_mode="r")[local]
    has = ~(sigs == EMPTY_SIG).all(axis=1)
    return band_keys(np.ascontiguousarray(sigs[has]), local[has] + offset, bands, rows, buckets)


def _candidate_pairs(idx: _Index, leaders: np.ndarray, cfg: Dedup, executor: Executor) -> set[tuple[int, int]]:
    """LSH candidate pairs among the exact-group leaders, as a shuffle by band key: the map
    reads one part's signatures, the reduce groups one bucket of keys (``executor``)."""
    bands, rows = lsh_params(cfg)
    items = []
    for p, path in enumerate(idx.sig_files):
        lo, hi = idx.offsets[p], idx.offsets[p + 1]
        local = leaders[(leaders >= lo) & (leaders < hi)] - lo
        if len(local):
            items.append((path, int(lo), local))
    buckets = max(1, executor.workers)
    results = executor.shuffle(functools.partial(_band_map_unit, bands, rows, buckets), items, buckets, band_pairs)
    return {(int(i), int(j)) for r in results for i, j in r}


def _texts_unit(fn: Callable[[str], object], item: tuple[Path, list[int]]) -> list:
    """``fn`` of the texts at the given row numbers of one part (in that order)."""
    part, rows = item
    out, pos, wanted = [], 0, iter(rows)
    nxt = next(wanted, None)
    for batch in _batches(part, ["text"]):
        texts = batch.column("text")
        while nxt is not None and nxt < pos + batch.num_rows:
            out.append(fn(texts[nxt - pos].as_py()))
            nxt = next(wanted, None)
        pos += batch.num_rows
    return out


def _at_positions(idx: _Index, parts: list[Path], positions, fn: Callable[[str], object],
                  executor: Executor) -> dict[int, object]:
    """``fn(text)`` for documents given by position, one unit per part that holds any."""
    wanted = np.unique(np.fromiter(positions, np.int64))
    part_of = np.searchsorted(idx.offsets, wanted, side="right") - 1
    items, owners = [], []
    for p in np.unique(part_of):
        mine = wanted[part_of == p]
        items.append((parts[p], (mine - idx.offsets[p]).tolist()))
        owners.append(mine.tolist())
    out: dict[int, object] = {}
    for mine, values in zip(owners, executor.map(functools.partial(_texts_unit, fn), items)):
        out.update(zip(mine, values))
    return out


def _unique_shingles(cfg: Dedup, text: str) -> np.ndarray:
    return np.unique(shingle_hashes(normalize(text, cfg.normalize), cfg.near.shingle_words))


def _head(text: str) -> str:
    return text[:160]


@dataclass
class DedupResult:
    removed: dict[int, tuple[int, str, float | None, float | None]]  # pos -> (rep pos, kind, est J, true J)
    cluster_sizes: Counter
    candidate_pairs: int
    verified_pairs: int
    rejected_pairs: int


def find_duplicates(parts: list[Path], cfg: Dedup, progress: Callable[[str], None], executor: Executor,
                    scratch: Path) -> tuple[_Index, DedupResult]:
    """Passes 1 and 2: which documents are duplicates of which survivor.

    Per-part work (hashing, banding, fetching texts to verify) runs on ``executor``;
    ``scratch`` holds the signature files on storage every worker sees. The driver
    keeps ~24 bytes per document (exact key, size) plus the id; memory beyond that
    grows with the duplicates, not the documents: exact groups come from one
    ``np.unique`` over the keys, and only documents that take part in a duplicate
    relation enter the union-find bookkeeping.
    """
    perms = permutations(cfg.near.num_perm, cfg.near.seed)
    idx = _pass1(parts, cfg, perms, executor, scratch, progress)
    n = idx.n
    uf = UnionFind(n)
    touched: set[int] = set()
    if cfg.exact and n:
        _, first, inverse = np.unique(idx.keys.view(np.dtype((np.void, 16))).ravel(),
                                      return_index=True, return_inverse=True)
        leader = first[inverse.ravel()]
        leaders = np.sort(first)
        for i in np.flatnonzero(leader != np.arange(n)):
            uf.union(int(leader[i]), int(i))
            touched.update((int(leader[i]), int(i)))
    else:
        leader, leaders = np.arange(n), np.arange(n)
    pairs: set[tuple[int, int]] = set()
    verified = rejected = 0
    shingles: dict[int, np.ndarray] = {}
    if cfg.near.enabled and n > 1:
        pairs = _candidate_pairs(idx, leaders, cfg, executor)
        progress(f"{len(pairs)} LSH candidate pair(s) among {len(leaders)} distinct texts "
                 f"({max(1, executor.workers)} bucket(s) on {executor.backend})")
        if cfg.near.verify and pairs:
            shingles = _at_positions(idx, parts, (p for pair in pairs for p in pair),
                                     functools.partial(_unique_shingles, cfg), executor)
        for i, j in sorted(pairs):
            if cfg.near.verify:
                ok = jaccard(shingles[i], shingles[j]) >= cfg.near.threshold
            else:
                ok = float(np.mean(idx.sig(i) == idx.sig(j))) >= cfg.near.threshold
            if ok:
                uf.union(i, j)
                touched.update((i, j))
                verified += 1
            else:
                rejected += 1
    clusters: dict[int, list[int]] = {}
    for i in sorted(touched):
        clusters.setdefault(uf.find(i), []).append(i)
    removed: dict[int, tuple[int, str, float | None, float | None]] = {}
    hist: Counter = Counter({1: n - len(touched)} if n - len(touched) else {})
    for members in clusters.values():
        hist[len(members)] += 1
        rep = pick_representative(members, idx, cfg.representative)
        for m in members:
            if m == rep:
                continue
            if leader[m] == leader[rep]:
                removed[m] = (rep, "exact", 1.0, 1.0)
                continue
            est = float(np.mean(idx.sig(m) == idx.sig(rep))) if cfg.near.enabled else None
            lm, lr = int(leader[m]), int(leader[rep])
            tj = jaccard(shingles[lm], shingles[lr]) if lm in shingles and lr in shingles else None
            removed[m] = (rep, "near", est, tj)
    return idx, DedupResult(removed, hist, len(pairs), verified, rejected)


def duplicates_table(idx: _Index, res: DedupResult, source_of: Callable[[int], str]) -> pa.Table:
    """The schema-validated ``duplicates`` table: one row per removed document, in position order."""
    rows = sorted(res.removed.items())
    table = pa.Table.from_arrays([
        pa.array([source_of(p) for p, _ in rows], pa.string()),
        pa.array([idx.id(p) for p, _ in rows], pa.string()),
        pa.array([f"{source_of(r[0])}:{idx.id(r[0])}" for _, r in rows], pa.string()),
        pa.array([idx.id(r[0]) for _, r in rows], pa.string()),
        pa.array([r[1] for _, r in rows], pa.string()),
        pa.array([r[2] for _, r in rows], pa.float64()),
        pa.array([r[3] for _, r in rows], pa.float64()),
        pa.array([int(idx.sizes[p]) for p, _ in rows], pa.int64()),
    ], schema=DUP_SCHEMA)
    validate_table(table, DUPLICATES)
    return table


def _audit_pairs(parts: list[Path], idx: _Index, res: DedupResult, k: int, executor: Executor) -> list[dict]:
    """A deterministic sample of removed documents with the heads of both texts (for the UI)."""
    chosen = sorted(res.removed, key=lambda p: hashlib.blake2b(idx.id(p).encode(), digest_size=8).digest())[:k]
    heads = _at_positions(idx, parts, [*chosen, *(res.removed[p][0] for p in chosen)], _head, executor) if chosen else {}
    out = []
    for p in chosen:
        rep, kind, est, tj = res.removed[p]
        out.append({"doc_id": idx.id(p), "representative": idx.id(rep), "kind": kind,
                    "estimated_jaccard": est, "true_jaccard": tj,
                    "doc_head": heads[p], "representative_head": heads[rep]})
    return out


def _write_kept_unit(staging: Path, part_bytes: int, item: tuple[int, Path, np.ndarray]) -> list[dict]:
    """One part's survivors, written as its own output part(s) ``part-NNNNN-*.parquet``."""
    i, part, removed = item
    writer = PartWriter(staging, f"part-{i:05d}", DOCS_SCHEMA, part_bytes)
    pos = 0
    for batch in _batches(part, None):
        table = pa.Table.from_batches([batch], schema=DOCS_SCHEMA)
        kept = table.filter(pa.array(~np.isin(np.arange(pos, pos + table.num_rows), removed)))
        validate_table(kept, INGEST_DOCUMENTS)
        writer.write(kept, pc.sum(kept.column("n_bytes")).as_py() or 0)
        pos += table.num_rows
    return writer.close()


def _write_kept(parts: list[Path], idx: _Index, res: DedupResult, staging: Path, part_bytes: int,
                executor: Executor) -> list[dict]:
    removed = np.fromiter(res.removed, np.int64, len(res.removed))
    items = [(i, part, removed[(removed >= idx.offsets[i]) & (removed < idx.offsets[i + 1])] - idx.offsets[i])
             for i, part in enumerate(parts)]
    return [p for out in executor.map(functools.partial(_write_kept_unit, staging, part_bytes), items) for p in out]


def dedup_key(loaded: LoadedSpec, source_name: str) -> tuple[dict, str]:
    """Config and content key of a source's dedup: the dedup section and the ingest version."""
    up = require_manifest(loaded.manifest_root, UPSTREAM, source_name)[1]
    stage_cfg = {"dedup": loaded.spec.dedup.model_dump(mode="json"), "source": source_name}
    return stage_cfg, content_key(stage_cfg, up["version"])


def cross_source_key(loaded: LoadedSpec) -> tuple[dict, str]:
    """Config and content key of the cross-source step: its settings, the source order, every dedup version."""
    cfg = loaded.spec.dedup
    stage_cfg = {"dedup": cfg.cross_source.model_dump(mode="json") | {"normalize": cfg.normalize.model_dump(mode="json"),
                                                                    "near": cfg.near.model_dump(mode="json")},
                 "sources": loaded.source_names}
    versions = [require_manifest(loaded.manifest_root, STAGE, s)[1]["version"] for s in loaded.source_names]
    return stage_cfg, content_key(stage_cfg, versions)


def dedup_source(loaded: LoadedSpec, source_name: str,
                 progress: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """Build the dedup partition of one source from its ingest outputs; returns (manifest, path)."""
    progress = progress or log.info
    cfg = loaded.spec.dedup
    source = loaded.source(source_name)
    started, t0 = utc_now(), time.perf_counter()
    up_path, up = require_manifest(loaded.manifest_root, UPSTREAM, source.name)
    stage_cfg, version = dedup_key(loaded, source.name)
    if hit := up_to_date(loaded, STAGE, source.name, version, progress):
        return hit
    est = TokenEstimate.from_manifest(up)
    parts = [loaded.storage_root / o["path"] for o in up["outputs"] if o["kind"] == "documents"]
    progress(f"[{source.name}] dedup: {up['counts']['documents_out']} documents in {len(parts)} part(s)")
    out_parent = loaded.storage_root / STAGE / source.name
    staging = new_staging_dir(out_parent)
    try:
        with open_executor(loaded.spec.execution, len(parts), shared=loaded.storage_root) as executor:
            idx, res = find_duplicates(parts, cfg, lambda m: progress(f"[{source.name}] {m}"), executor,
                                       staging / SCRATCH)
            doc_parts = _write_kept(parts, idx, res, staging, loaded.spec.ingest.part_bytes, executor)
            audit = _audit_pairs(parts, idx, res, cfg.audit_pairs, executor)
        shutil.rmtree(staging / SCRATCH)
        dups = duplicates_table(idx, res, lambda p: source.name)
        dup_out = write_parquet(dups, staging / "duplicates.parquet")
        final = out_parent / version
        if not publish_dir(staging, final):
            progress(f"[{source.name}] identical output already published at {final}")
    except BaseException:
        discard_dir(staging)
        raise
    n_in, bytes_in = idx.n, int(idx.sizes.sum())
    by_kind = {"exact_duplicate": [0, 0], "near_duplicate": [0, 0]}
    for p, (_, kind, _, _) in res.removed.items():
        acc = by_kind[f"{kind}_duplicate"]
        acc[0] += 1
        acc[1] += int(idx.sizes[p])
    bytes_out = bytes_in - sum(b for _, b in by_kind.values())
    docs_out = n_in - len(res.removed)
    manifest = downstream_manifest(
        loaded=loaded, asset=STAGE, partition=source.name, version=version, stage_cfg=stage_cfg, upstream=up,
        upstream_path=up_path, doc_parts=doc_parts, tables=[("duplicates.parquet", "duplicates", dup_out)],
        docs=(n_in, docs_out), text_bytes=(bytes_in, bytes_out), estimate=est, started=started, t0=t0)
    manifest["counts"] |= {"removed_exact": by_kind["exact_duplicate"][0],
                           "removed_near": by_kind["near_duplicate"][0], "candidate_pairs": res.candidate_pairs,
                           "accepted_pairs": res.verified_pairs, "rejected_pairs": res.rejected_pairs}
    manifest["reasons"] = {k: {"records": n, "bytes": b, "tokens": est.tokens(b)} for k, (n, b) in by_kind.items() if n}
    manifest["details"] = {"cluster_sizes": {str(k): v for k, v in sorted(res.cluster_sizes.items())},
                           "audit_pairs": audit}
    manifest, path = write_manifest(loaded.manifest_root, manifest)
    progress(f"[{source.name}] dedup done: {docs_out}/{n_in} kept; removed {by_kind['exact_duplicate'][0]} exact, "
             f"{by_kind['near_duplicate'][0]} near; manifest {path}")
    return manifest, path


CROSS_STAGE = "cross_source_dedup"


def cross_source_dedup(loaded: LoadedSpec, progress: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """Across sources: a duplicate enters once, from the source ranked first (spec order).

    This is a global asset over the per-source dedup outputs rather than a change
    to them: each source's partition stays independent (editing one source does
    not rebuild the others' dedup), and the result is a small drop list,
    ``cross_source_duplicates.parquet``, that the next per-source stage applies
    (``cross_source_drops``). Exact matching always (if ``cross_source.exact``);
    MinHash near matching across sources on request (``cross_source.near``).
    """
    progress = progress or log.info
    cfg = loaded.spec.dedup
    started, t0 = utc_now(), time.perf_counter()
    ups, parts, part_source = [], [], []
    for name in loaded.source_names:
        up_path, up = require_manifest(loaded.manifest_root, STAGE, name)
        ups.append((name, up_path, up))
        for o in up["outputs"]:
            if o["kind"] == "documents":
                parts.append(loaded.storage_root / o["path"])
                part_source += [name] * o["rows"]
    stage_cfg, version = cross_source_key(loaded)
    if hit := up_to_date(loaded, CROSS_STAGE, None, version, progress):
        return hit
    cross = cfg.model_copy(update={"representative": "first", "exact": cfg.cross_source.exact,
                                   "near": cfg.near.model_copy(update={"enabled": cfg.cross_source.near})})
    out_parent = loaded.storage_root / CROSS_STAGE
    staging = new_staging_dir(out_parent)
    try:
        with open_executor(loaded.spec.execution, len(parts), shared=loaded.storage_root) as executor:
            if cross.exact or cross.near.enabled:
                idx, res = find_duplicates(parts, cross, lambda m: progress(f"[cross-source] {m}"), executor,
                                           staging / SCRATCH)
            else:
                idx, res = _empty_index(), DedupResult({}, Counter(), 0, 0, 0)
            audit = _audit_pairs(parts, idx, res, cfg.audit_pairs, executor)
        shutil.rmtree(staging / SCRATCH, ignore_errors=True)
        table = duplicates_table(idx, res, part_source.__getitem__)
        out = write_parquet(table, staging / "cross_source_duplicates.parquet")
        publish_dir(staging, out_parent / version)
    except BaseException:
        discard_dir(staging)
        raise
    rows = sorted(res.removed.items())
    pairs = Counter((part_source[p], part_source[r[0]]) for p, r in rows)
    n_in, bytes_in = idx.n, int(idx.sizes.sum())
    removed_bytes = int(sum(idx.sizes[p] for p, _ in rows))
    est_by_source = {name: TokenEstimate.from_manifest(u)
                     for name, _, u in ups}
    tokens_in = sum(u["counts"]["tokens_out"] for _, _, u in ups)
    tokens_removed = sum(est_by_source[part_source[p]].tokens(int(idx.sizes[p])) for p, _ in rows)
    manifest = stage_manifest(
        loaded=loaded, asset=CROSS_STAGE, partition=None, version=version, stage_cfg=stage_cfg, started=started, t0=t0,
        inputs=[ref for _, up_path, up in ups for ref in input_refs(loaded, up_path, up)],
        outputs=[output_ref(f"{CROSS_STAGE}/{version}", out, "cross_source_duplicates")],
        counts={"documents_in": n_in, "documents_out": n_in - len(rows), "bytes_in": bytes_in,
                "bytes_out": bytes_in - removed_bytes, "tokens_in": tokens_in, "tokens_out": tokens_in - tokens_removed,
                "removed_exact": sum(r[1] == "exact" for _, r in rows),
                "removed_near": sum(r[1] == "near" for _, r in rows)},
        rates={"document_acceptance": (n_in - len(rows)) / n_in if n_in else None,
               "token_acceptance": (tokens_in - tokens_removed) / tokens_in if tokens_in else None},
        token_counting={"method": "per-source calibrated estimates (see each source's ingest manifest)"},
        reasons={f"duplicate_of_{kept}": {"records": sum(n for (_, k), n in pairs.items() if k == kept),
                                          "bytes": int(sum(idx.sizes[p] for p, r in rows
                                                           if part_source[r[0]] == kept)),
                                          "tokens": sum(est_by_source[part_source[p]].tokens(int(idx.sizes[p]))
                                                        for p, r in rows if part_source[r[0]] == kept)}
                 for kept in sorted({k for _, k in pairs})},
        details={"pairs_removed_from_kept": [{"removed_from": a, "kept_in": b, "documents": n}
                                             for (a, b), n in sorted(pairs.items())],
                 "audit_pairs": audit})
    manifest, path = write_manifest(loaded.manifest_root, manifest)
    progress(f"[cross-source] {len(rows)} document(s) already present in a higher-ranked source; manifest {path}")
    return manifest, path


def cross_source_drops(loaded: LoadedSpec, source: str) -> set[str]:
    """The doc_ids of ``source`` that another, higher-ranked source already holds."""
    out = require_manifest(loaded.manifest_root, CROSS_STAGE, None)[1]["outputs"][0]
    table = pq.read_table(loaded.storage_root / out["path"], columns=["source", "doc_id"])
    mask = pc.equal(table.column("source"), source)
    return set(table.filter(mask).column("doc_id").to_pylist())
