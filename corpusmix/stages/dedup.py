"""Dedup stage: exact and MinHash near-duplicate removal within one source.

Three streaming passes over the source's ingest parts; no process holds the
text of more than one batch:

1. normalise every document, hash it for exact matching, cut it into word
   n-gram shingles and compute its MinHash signature, vectorised over a batch
   of documents (``minhash``: datasketch's signatures and LSH layout);
2. (``verify``) for the documents in candidate pairs only, recompute the
   shingle sets and keep a pair when their true Jaccard similarity reaches the
   threshold (LSH candidates include false positives);
3. write the surviving documents, and the ``duplicates`` table for audits.

Each pass is cut into one unit of work per input part and runs on the build's
executor (``corpusmix.core.executor``: in-process, a process pool or Ray tasks). Pass
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
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpusmix.core.executor import Executor
from corpusmix.core.manifest import output_ref, require_manifest
from corpusmix.core.parquet_io import PartWriter, write_parquet
from corpusmix.core.spec import Dedup, LoadedSpec, Spec
from corpusmix.core.stage import Built, Stage, StageRun, documents_built
from corpusmix.core.storage import file_record
from corpusmix.stages.minhash import (
    EMPTY_SIG,
    band_keys,
    band_pairs,
    batch_shingles,
    batch_signatures,
    exact_key,
    jaccard,
    lsh_params,
    normalize,
    permutations,
    shingle_hashes,
)
from schemas.tables import ARROW_SCHEMAS, DUPLICATES, INGEST_DOCUMENTS, validate_table

DOCS_SCHEMA = ARROW_SCHEMAS["ingest_documents"]
DUP_SCHEMA = ARROW_SCHEMAS["duplicates"]
READ_BATCH_ROWS = 2048
SCRATCH = "_scratch"          # signature files inside the staging directory, removed before publishing


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
    document): id, size, tokens and exact key (16 bytes). Signatures (num_perm x 4 bytes per document)
    stay in one ``.npy`` file per input part under the stage's scratch directory, read by
    memory map where a few are needed (estimated Jaccard of a removed pair)."""

    ids: pa.Array
    sizes: np.ndarray
    tokens: np.ndarray  # each document's n_tokens, so the funnel counts what ingest counted
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


def empty_index() -> _Index:
    return _Index(pa.array([], pa.string()), np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 16), np.uint8),
                  [], np.zeros(1, np.int64))


def _batches(part: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(part).iter_batches(batch_size=READ_BATCH_ROWS, columns=columns)


def _pass1_unit(cfg: Dedup, perms: np.ndarray,
                item: tuple[Path, Path]) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1 over one part (a unit of work): ids, sizes, tokens and exact keys for the driver; the
    MinHash signatures go to ``sig_path`` for the banding shuffle."""
    part, sig_path = item
    n = pq.ParquetFile(part).metadata.num_rows
    sigs = np.full((n, perms.shape[1] if cfg.near.enabled else 0), EMPTY_SIG, np.uint32)
    keys = np.empty((n, 16), np.uint8)
    sizes = np.empty(n, np.int64)
    tokens = np.empty(n, np.int64)
    ids: list[pa.Array] = []
    pos = 0
    for batch in _batches(part, ["doc_id", "text", "n_bytes", "n_tokens"]):
        norms = [normalize(t, cfg.normalize) for t in batch.column("text").to_pylist()]
        end = pos + batch.num_rows
        ids.append(batch.column("doc_id").cast(pa.string()))
        sizes[pos:end] = batch.column("n_bytes").to_numpy()
        tokens[pos:end] = batch.column("n_tokens").to_numpy()
        keys[pos:end] = np.frombuffer(b"".join(exact_key(x) for x in norms), np.uint8).reshape(-1, 16)
        if cfg.near.enabled:
            sigs[pos:end] = batch_signatures(*batch_shingles(norms, cfg.near.shingle_words), perms)
        pos = end
    np.save(sig_path, sigs)
    return (pa.concat_arrays(ids) if ids else pa.array([], pa.string())), sizes, tokens, keys


def _pass1_known(item: tuple[Path, Path]) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1 over a part whose signatures and exact keys dedup published (``Hashed``): only its
    ids, sizes and tokens are read."""
    part, keys_path = item
    t = pq.read_table(part, columns=["doc_id", "n_bytes", "n_tokens"])
    return (t.column("doc_id").combine_chunks().cast(pa.string()), t.column("n_bytes").to_numpy(),
            t.column("n_tokens").to_numpy(), np.load(keys_path))


@dataclass(frozen=True)
class Hashed:
    """A part's MinHash signatures and exact keys as dedup published them beside its survivors
    (row-aligned with the part): another stage's pass 1 over the part reads them, not the text."""

    signatures: Path
    keys: Path


def _pass1(parts: list[Path], cfg: Dedup, perms: np.ndarray, executor: Executor, scratch: Path,
           progress: Callable[[str], None], hashed: dict[int, Hashed] | None = None) -> _Index:
    scratch.mkdir(parents=True, exist_ok=True)
    hashed = hashed or {}
    sig_files = [hashed[i].signatures if i in hashed else scratch / f"signatures-{i:05d}.npy" for i in range(len(parts))]
    todo = [i for i in range(len(parts)) if i not in hashed]
    results = dict(zip(todo, executor.map(functools.partial(_pass1_unit, cfg, perms),
                                          [(parts[i], sig_files[i]) for i in todo])))
    results |= {i: _pass1_known((parts[i], h.keys)) for i, h in hashed.items()}
    ids, sizes, tokens, keys = [], [], [], []
    for i, (part_ids, part_sizes, part_tokens, part_keys) in ((i, results[i]) for i in range(len(parts))):
        ids.append(part_ids)
        sizes.append(part_sizes)
        tokens.append(part_tokens)
        keys.append(part_keys)
        progress(f"pass 1: part {i + 1}/{len(parts)}: {len(part_sizes)} documents "
                 + ("(dedup's signatures)" if i in hashed else "hashed"))
    if not parts:
        return empty_index()
    counts = np.array([len(s) for s in sizes], np.int64)
    return _Index(pa.concat_arrays(ids), np.concatenate(sizes), np.concatenate(tokens), np.concatenate(keys), sig_files,
                  np.concatenate([[0], np.cumsum(counts)]))


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
                    scratch: Path, hashed: dict[int, Hashed] | None = None) -> tuple[_Index, DedupResult]:
    """Passes 1 and 2: which documents are duplicates of which survivor.

    Per-part work (hashing, banding, fetching texts to verify) runs on ``executor``;
    ``scratch`` holds the signature files on storage every worker sees; ``hashed`` names parts
    (by position) whose signatures and keys dedup already published, with the same settings. The driver
    keeps ~24 bytes per document (exact key, size) plus the id; memory beyond that
    grows with the duplicates, not the documents: exact groups come from one
    ``np.unique`` over the keys, and only documents that take part in a duplicate
    relation enter the union-find bookkeeping.
    """
    perms = permutations(cfg.near.num_perm, cfg.near.seed)
    idx = _pass1(parts, cfg, perms, executor, scratch, progress, hashed)
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
        pa.array([int(idx.tokens[p]) for p, _ in rows], pa.int64()),
    ], schema=DUP_SCHEMA)
    validate_table(table, DUPLICATES)
    return table


def audit_pairs(parts: list[Path], idx: _Index, res: DedupResult, k: int, executor: Executor) -> list[dict]:
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


def _write_kept_unit(staging: Path, part_bytes: int,
                     item: tuple[int, Path, np.ndarray, Path | None, np.ndarray]) -> tuple[list[dict], list[dict]]:
    """One part's survivors, written as its own output part(s) ``part-NNNNN-*.parquet``; beside a single
    output part, its survivors' signatures (``minhash-<part>.npy``, when near dedup hashed them) and exact
    keys (``exactkey-<part>.npy``), row-aligned, for the held-out split's pass 1 (``Hashed``)."""
    i, part, removed, sig_path, keys = item
    writer = PartWriter(staging, f"part-{i:05d}", DOCS_SCHEMA, part_bytes)
    pos = 0
    for batch in _batches(part, None):
        table = pa.Table.from_batches([batch], schema=DOCS_SCHEMA)
        kept = table.filter(pa.array(~np.isin(np.arange(pos, pos + table.num_rows), removed)))
        validate_table(kept, INGEST_DOCUMENTS)
        writer.write(kept)
        pos += table.num_rows
    out = writer.close()
    hashes = []
    if len(out) == 1 and sig_path is not None:
        keep = ~np.isin(np.arange(pos), removed)
        stem = out[0]["name"].removesuffix(".parquet")
        for name, rows in ((f"minhash-{stem}.npy", np.load(sig_path, mmap_mode="r")[keep]),
                           (f"exactkey-{stem}.npy", keys[keep])):
            np.save(staging / name, np.ascontiguousarray(rows))
            hashes.append(file_record(staging / name, int(keep.sum())))
    return out, hashes


def _write_kept(parts: list[Path], idx: _Index, res: DedupResult, staging: Path, part_bytes: int,
                executor: Executor, near: bool) -> tuple[list[dict], list[dict]]:
    """Every part's survivors, and the hashes published beside them (see ``_write_kept_unit``)."""
    removed = np.fromiter(res.removed, np.int64, len(res.removed))
    items = [(i, part, removed[(removed >= idx.offsets[i]) & (removed < idx.offsets[i + 1])] - idx.offsets[i],
              idx.sig_files[i] if near else None, idx.keys[idx.offsets[i]:idx.offsets[i + 1]])
             for i, part in enumerate(parts)]
    results = list(executor.map(functools.partial(_write_kept_unit, staging, part_bytes), items))
    return [p for out, _ in results for p in out], [h for _, hashes in results for h in hashes]


def dedup_config(loaded: LoadedSpec, source_name: str) -> dict:
    return {"dedup": loaded.spec.dedup.model_dump(mode="json"), "source": source_name}


def documents_from(loaded: LoadedSpec, source_name: str) -> str:
    """The stage whose documents dedup reads: trace validation's for a reasoning_traces source
    (the traces it kept), ingest's for any other."""
    return "trace_validation" if loaded.source(source_name).traces is not None else "ingest"


def dedup_upstream(spec: Spec) -> tuple[str, ...]:
    """ingest, and trace validation when the build has a reasoning_traces source (it runs before
    dedup for every source, so the partitions of one asset graph line up)."""
    return ("ingest", "trace_validation") if spec.validates_traces() else ("ingest",)


def dedup_inputs(loaded: LoadedSpec, source_name: str) -> list[str]:
    """Only the version of what this source's dedup reads: adding a trace source to a spec must
    not change the other sources' keys (and rebuild everything after their dedup)."""
    return [require_manifest(loaded.manifest_root, documents_from(loaded, source_name), source_name)[1]["version"]]


def build_dedup(ctx: StageRun) -> Built:
    """A source's duplicates found and removed, one unit per upstream part on the executor."""
    cfg, loaded = ctx.loaded.spec.dedup, ctx.loaded
    up_path, up = ctx.upstream(documents_from(loaded, ctx.partition))
    parts = [loaded.storage_root / o["path"] for o in up["outputs"] if o["kind"] == "documents"]
    ctx.say(f"{up['counts']['documents_out']} documents in {len(parts)} part(s)")
    with ctx.executor(len(parts)) as executor:
        idx, res = find_duplicates(parts, cfg, ctx.say, executor, ctx.staging / SCRATCH)
        doc_parts, hashes = _write_kept(parts, idx, res, ctx.staging, loaded.spec.ingest.part_bytes, executor,
                                        cfg.near.enabled)
        audit = audit_pairs(parts, idx, res, cfg.audit_pairs, executor)
    shutil.rmtree(ctx.staging / SCRATCH)
    dup_out = write_parquet(duplicates_table(idx, res, lambda p: ctx.partition), ctx.staging / "duplicates.parquet")
    n_in, bytes_in, tokens_in = idx.n, int(idx.sizes.sum()), int(idx.tokens.sum())
    by_kind = {"exact_duplicate": [0, 0, 0], "near_duplicate": [0, 0, 0]}
    for p, (_, kind, _, _) in res.removed.items():
        acc = by_kind[f"{kind}_duplicate"]
        acc[0] += 1
        acc[1] += int(idx.sizes[p])
        acc[2] += int(idx.tokens[p])
    docs_out = n_in - len(res.removed)
    built = documents_built(
        ctx, (up_path, up), doc_parts, [("duplicates", dup_out)], docs=(n_in, docs_out),
        text_bytes=(bytes_in, bytes_in - sum(b for _, b, _ in by_kind.values())),
        tokens=(tokens_in, tokens_in - sum(t for _, _, t in by_kind.values())),
        summary=f"{docs_out}/{n_in} kept; removed {by_kind['exact_duplicate'][0]} exact, "
                f"{by_kind['near_duplicate'][0]} near")
    built.counts |= {"removed_exact": by_kind["exact_duplicate"][0], "removed_near": by_kind["near_duplicate"][0],
                     "candidate_pairs": res.candidate_pairs, "accepted_pairs": res.verified_pairs,
                     "rejected_pairs": res.rejected_pairs}
    built.outputs += [output_ref(h, "minhash" if h["name"].startswith("minhash-") else "exact_keys") for h in hashes]
    built.reasons = {k: {"records": n, "bytes": b, "tokens": t} for k, (n, b, t) in by_kind.items() if n}
    built.details = {"cluster_sizes": {str(k): v for k, v in sorted(res.cluster_sizes.items())},
                     "audit_pairs": audit}
    return built


STAGE = Stage(name="dedup", scope="source", upstream=dedup_upstream, config=dedup_config, build=build_dedup,
              inputs=dedup_inputs,
              module=__name__)
