"""The mixed_shards stage: the training stream, phase after phase, as Megatron shards.

How documents are chosen and ordered:

- Each source is read in a seeded permutation of its documents (numpy PCG64 seeded
  by the spec's ``mixture.seed``, the source's name and the epoch). When a source is
  exhausted its next epoch starts with a new permutation; every drawn document
  records its epoch.
- Each drawn document gets a *due position*: the point of the stream at which the
  source's cumulative target (the plan's integral of its share) reaches the middle
  of that document. The stream is all drawn documents in order of due position
  (ties by source order). Since the targets of all sources add up to the position
  itself, a document lands where its source's quota says it should, so cumulative
  realised tokens track the cumulative target within about one document at every
  point, phase boundaries included, and the per-phase quotas hold without any
  per-phase bookkeeping. Documents are never cut or shuffled inside, except that a
  document crossing a shard boundary continues in the next shard, and the stream
  stops after ``total_tokens + 1`` tokens (the last sample's last target).
- The order is computed in windows of due position that end at every shard edge,
  with a cursor per source, so memory is bounded by a shard, not by the corpus.
- Phases are restart points: shards end at every phase boundary, and nothing placed
  before a boundary depends on the shares after it. Documents due before it come
  first; if they end short of it (or at it), the gap is filled from each source's next documents
  in the order the ending phase's last shares would reach them (``_fill``). So new
  weights for a later phase (an accepted next-phase proposal) leave every shard of the
  phases before it byte-identical, provided the plan up to the boundary is unchanged
  (step transitions; no cap renormalisation moved) and the same sources have a quota
  right after it (the boundary's fence and fill read which sources have none).

Outputs under ``<root>/mixed_shards/<version>/``: per shard ``shard-NNNNN.bin/.idx``
(one sequence per document piece), ``shard-NNNNN.json`` (phase, tokens per phase and
source, checksums, tokenizer hash, dtype, EOS id) and ``lineage-NNNNN.parquet``: one
row per token range with its stream offset, shard, sequence, phase, source, doc_id,
epoch and offset inside the document.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from corpusmix.core.indexed import IndexedReader, IndexedWriter
from corpusmix.core.manifest import manifest_path, output_ref, read_manifest, require_manifest
from corpusmix.core.parquet_io import PARQUET_OPTS
from corpusmix.core.spec import LoadedSpec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import sha256_file
from corpusmix.mixture.plan import load_plan, source_key, source_subset
from corpusmix.mixture.schedules import CELLS
from corpusmix.stages.tokenizer import built_tokenizer
from schemas.tables import ARROW_SCHEMAS

NAME = "mixed_shards"
DRAW_BLOCK = 4096  # documents drawn from a source's permutation at a time
LINEAGE_SCHEMA = ARROW_SCHEMAS["lineage"]


def epoch_permutation(seed: int, source: str, epoch: int, n: int) -> np.ndarray:
    """The order a source's documents are read in during one epoch."""
    return np.random.default_rng([seed, source_key(source), epoch]).permutation(n)


def inverse_target(x: np.ndarray, cum: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Stream positions where a non-decreasing cumulative target reaches ``values`` (linear in each grid
    cell). Past the source's total (the stream's last tokens, after the budget) the target goes on at
    the source's final share: a source with no share at the end is never due there (inf)."""
    idx = np.searchsorted(cum, values, side="left")
    inside = (idx > 0) & (idx < len(cum))
    final_share = (cum[-1] - cum[-2]) / (x[-1] - x[-2]) if len(cum) > 1 and x[-1] > x[-2] else 1.0
    with np.errstate(divide="ignore"):
        beyond = x[-1] + (values - cum[-1]) / final_share if final_share > 1e-12 else np.full(len(values), np.inf)
    out = np.where(values <= cum[0], x[0], beyond)
    i = idx[inside]
    lo, hi = cum[i - 1], cum[i]
    out[inside] = x[i - 1] + (values[inside] - lo) / np.maximum(hi - lo, 1e-300) * (x[i] - x[i - 1])
    return out


@dataclass
class _Cursor:
    """Reads one source's documents in epoch permutations and gives each its due position."""

    name: str
    seed: int
    sizes: np.ndarray       # tokens per document (EOS included)
    docs: np.ndarray        # the documents it may draw (all, or mixture.subsample's subset)
    x: np.ndarray
    cum: np.ndarray
    epoch: int = 0
    pos: int = 0
    drawn: int = 0          # tokens drawn so far (before the pending block)
    perm: np.ndarray = field(default=None)
    pending: tuple | None = None  # (seq, epoch, size, due, mid) not yet emitted; mid: the cumulative midpoint

    def _draw(self) -> None:
        if self.perm is None or self.pos >= len(self.perm):
            if self.perm is not None:
                self.epoch += 1
            self.perm, self.pos = self.docs[epoch_permutation(self.seed, self.name, self.epoch, len(self.docs))], 0
        seq = self.perm[self.pos:self.pos + DRAW_BLOCK]
        self.pos += len(seq)
        size = self.sizes[seq]
        start = self.drawn + np.concatenate([[0], np.cumsum(size[:-1])])
        due = inverse_target(self.x, self.cum, start + size / 2)
        self.drawn += int(size.sum())
        self.pending = (seq, np.full(len(seq), self.epoch, np.int32), size, due, start + size / 2)

    def next_due(self) -> float:
        """The due position of the next document not yet taken (inf: none will ever be due)."""
        if self.pending is None:
            if len(self.docs) == 0:
                return float("inf")
            self._draw()
        return float(self.pending[3][0])

    def take(self, until: float) -> tuple:
        """Every document due before ``until`` (seq, epoch, size, due arrays)."""
        parts = []
        while True:
            if self.pending is None:
                if len(self.docs) == 0:
                    break
                self._draw()
            k = int(np.searchsorted(self.pending[3], until, side="left"))
            parts.append(tuple(a[:k] for a in self.pending[:4]))
            if k < len(self.pending[0]):
                self.pending = tuple(a[k:] for a in self.pending)
                break
            self.pending = None
        return tuple(np.concatenate(c) for c in zip(*parts)) if parts else (np.empty(0, np.int64),) * 4

    def head(self) -> tuple[int, int, int, float] | None:
        """The next document not yet taken: (seq, epoch, size, cumulative midpoint); None if none."""
        if self.pending is None:
            if len(self.docs) == 0:
                return None
            self._draw()
        return tuple(a[0].item() for a in (self.pending[0], self.pending[1], self.pending[2], self.pending[4]))

    def pop(self) -> None:
        """Take the head document."""
        self.pending = tuple(a[1:] for a in self.pending) if len(self.pending[0]) > 1 else None


@dataclass
class _Source:
    name: str
    reader: IndexedReader
    doc_ids: pa.Array
    sizes: np.ndarray


def _open_sources(loaded: LoadedSpec) -> tuple[list[_Source], list[dict]]:
    sources, ups = [], []
    for name in loaded.source_names:
        m = require_manifest(loaded.manifest_root, "tokenize", name)[1]
        ups.append(m)
        out = {o["kind"]: o for o in m["outputs"]}
        reader = IndexedReader((loaded.storage_root / out["token_bin"]["path"]).with_suffix(""))
        ids = pq.read_table(loaded.storage_root / out["token_documents"]["path"], columns=["doc_id"])
        sources.append(_Source(name, reader, ids.column("doc_id").combine_chunks(),
                               np.asarray(reader.index.sizes, dtype=np.int64)))
    return sources, ups


def _fence(order: np.ndarray, src: np.ndarray, due: np.ndarray, size: np.ndarray, position: int,
           bounds: np.ndarray, zero_quota: list[np.ndarray]) -> np.ndarray:
    """The window's order, with the documents that would spill into a phase where their source has
    no quota moved just early enough to end before its boundary.

    Documents are placed in order of due position, and placement lags due by up to a few
    documents of other sources, so a document due just before a boundary can land after it.
    For each boundary inside the window, the documents of sources without quota in the next
    phase that are due before the boundary and would end after it go, in their own order,
    in front of the first document that ends past (boundary - their total size). The
    documents they pass move later by that much: their sources have quota on either side.
    A document that cannot fit between the window's start and the boundary stays where it is.
    """
    if len(order) == 0:
        return order
    for b in range(1, len(bounds) - 1):
        zero, edge = zero_quota[b], bounds[b]
        for _ in range(8):  # moving documents can push another one of them past the edge: again
            ends = position + np.cumsum(size[order])
            late = zero[src[order]] & (due[order] < edge) & (ends > edge)
            if not late.any() or not zero.any():
                break
            moved, rest = order[late], order[~late]
            rest_ends = position + np.cumsum(size[rest])
            at = int(np.searchsorted(rest_ends, edge - int(size[moved].sum()), side="right"))
            if at == 0 and position + int(size[moved].sum()) > edge:
                break  # no room before the edge in this window: leave them
            order = np.concatenate([rest[:at], moved, rest[at:]])
    return order


def _fill(cursors: list[_Cursor], position: int, edge: float, plan: dict, phase: int,
          zero_next: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Documents (seq, epoch, size, source index) that carry the stream from ``position`` past the start of
    phase ``phase`` at ``edge``, when the documents due before it end short of it or exactly at it (the
    token at the edge is the last target of the phase before: it must not depend on the next phase either).

    They are chosen from what is settled before the edge: each source's next documents, in the order its
    target would reach them if the ending phase's last shares held on past the edge. The next phase's
    shares are not read, so accepting new weights for a later phase (a next-phase proposal) leaves every
    token before that phase where it was. Only sources with a quota in the next phase take part (their
    document continues past the edge); without any, the next window's documents fill the gap as usual.
    """
    x = np.asarray(plan["grid"]["x"])
    last = phase * CELLS  # the grid point ending the previous phase; its last cell ends there
    at, rate = [], []
    for s in plan["sources"]:
        cum = np.asarray(plan["grid"]["cumulative"][s])
        at.append(float(np.interp(edge, x, cum)))
        rate.append((cum[last] - cum[last - 1]) / (x[last] - x[last - 1]))
    out = []
    while position <= edge:
        best, best_due = None, np.inf
        for i, c in enumerate(cursors):
            if zero_next[i] or rate[i] <= 1e-12 or (h := c.head()) is None:
                continue
            due = edge + (h[3] - at[i]) / rate[i]
            if due < best_due:
                best, best_due = i, due
        if best is None:
            break
        seq, epoch, size, _ = cursors[best].head()
        cursors[best].pop()
        out.append((seq, epoch, size, best))
        position += size
    return out


def _split(starts: np.ndarray, lengths: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ranges [start, start+length) at every cut; returns (range index, piece start, piece length)."""
    if len(cuts) == 0:
        return np.arange(len(starts)), starts, lengths
    ends = starts + lengths
    first = np.searchsorted(cuts, starts, side="right")
    last = np.searchsorted(cuts, ends, side="left")
    n_pieces = 1 + np.maximum(0, last - first)
    owner = np.repeat(np.arange(len(starts)), n_pieces)
    k = np.arange(len(owner)) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    piece_start = np.where(k == 0, starts[owner], cuts[np.minimum(first[owner] + k - 1, len(cuts) - 1)])
    piece_end = np.where(k == n_pieces[owner] - 1, ends[owner], cuts[np.minimum(first[owner] + k, len(cuts) - 1)])
    return owner, piece_start, piece_end - piece_start


def _labels(codes: np.ndarray, names: list[str]) -> pa.Array:
    """A string column from small integer codes, built in Arrow (no Python object per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(names, pa.string())).cast(pa.string())


class _ShardWriter:
    """Accumulates token ranges for the current shard and writes it when full.

    Writing, checksums and fsyncs run on a helper thread (file writes, hashlib and
    fsync release the GIL), overlapping the gathering of the next shard; ``close``
    waits for them.
    """

    def __init__(self, staging: Path, sources: list[_Source], tok, phase_names, bounds, stream: tuple[int, int]):
        self.staging, self.sources, self.tok = staging, sources, tok
        self.phase_names, self.bounds = phase_names, bounds
        self.stream_tokens, self.shards_total = stream  # what every shard manifest says of the whole set
        self.rows: list[dict[str, np.ndarray]] = []
        self.shard = 0
        self.outputs: list[dict] = []
        self.shard_info: list[dict] = []
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: list[Future] = []

    def add(self, rows: dict[str, np.ndarray]) -> None:
        self.rows.append(rows)

    def flush(self) -> None:
        if not self.rows:
            raise RuntimeError(f"shard {self.shard} would be empty: the stream has a gap (a bug)")
        r = {k: np.concatenate([x[k] for x in self.rows]) for k in self.rows[0]}
        self.rows = []
        name = f"shard-{self.shard:05d}"
        # one sequence per document piece: rows split only by a phase boundary share a sequence
        new_seq = np.ones(len(r["src"]), bool)
        new_seq[1:] = (r["src"][1:] != r["src"][:-1]) | (r["seq"][1:] != r["seq"][:-1]) | \
                      (r["epoch"][1:] != r["epoch"][:-1]) | (r["offset"][1:] != r["offset"][:-1] + r["n"][:-1])
        sequence = np.cumsum(new_seq) - 1
        seq_lengths = np.bincount(sequence, weights=r["n"]).astype(np.int64)
        first = np.empty(len(r["src"]), np.int64)  # each row's first token in its source's store
        for i, s in enumerate(self.sources):
            sel = r["src"] == i
            first[sel] = s.reader.starts[r["seq"][sel]] + r["offset"][sel]
        arrays = [s.reader.tokens for s in self.sources]
        tokens = np.concatenate([arrays[s][a:a + n] for s, a, n in zip(r["src"].tolist(), first.tolist(),
                                                                         r["n"].tolist())])
        phase = np.searchsorted(self.bounds, r["start"], side="right") - 1
        by_src = np.argsort(r["src"], kind="stable")
        ids = pa.concat_arrays([self.sources[i].doc_ids.take(pa.array(r["seq"][r["src"] == i]))
                                for i in range(len(self.sources))])
        lineage = pa.table({
            "stream_start": r["start"], "n_tokens": r["n"], "shard": np.full(len(r["n"]), self.shard, np.int32),
            "sequence": sequence, "phase": _labels(phase, self.phase_names),
            "source": _labels(r["src"], [s.name for s in self.sources]),
            "doc_id": ids.take(pa.array(np.argsort(by_src, kind="stable"))),
            "epoch": r["epoch"].astype(np.int32), "doc_offset": r["offset"], "doc_tokens": r["doc_tokens"]},
            schema=LINEAGE_SCHEMA)
        lin_name = f"lineage-{self.shard:05d}.parquet"
        n_src = len(self.sources)
        key = phase * n_src + r["src"]
        cells = np.bincount(key, weights=r["n"], minlength=len(self.phase_names) * n_src).astype(np.int64)
        per_phase, longest_doc = {}, {}  # per phase and source: tokens, and the longest document placed there
        for k in np.flatnonzero(cells):
            p, s = divmod(int(k), n_src)
            per_phase.setdefault(self.phase_names[p], {})[self.sources[s].name] = int(cells[k])
            longest_doc.setdefault(self.phase_names[p], {})[self.sources[s].name] = int(r["doc_tokens"][key == k].max())
        info = {"shard": self.shard, "tokens": int(len(tokens)), "sequences": int(len(seq_lengths)),
                "documents_started": int((r["offset"] == 0).sum()),
                "stream_start": int(r["start"][0]), "stream_end": int(r["start"][-1] + r["n"][-1]),
                "phases": per_phase, "longest_document": longest_doc,
                "sources": [s.name for s in self.sources],  # the lineage's source codes index this list
                "tokens_per_source": {self.sources[s].name: int(t) for s, t in
                                      enumerate(np.bincount(r["src"], weights=r["n"], minlength=n_src)) if t},
                "dtype": self.tok.dtype.name, "eos_id": self.tok.eos_id, "tokenizer_sha256": self.tok.sha256,
                "vocab_size": self.tok.vocab_size, "shards_total": self.shards_total,
                "stream_tokens": self.stream_tokens}
        self.shard_info.append(info)
        self._pending.append(self._pool.submit(self._write, name, tokens, seq_lengths, lin_name, lineage, info))
        while len(self._pending) > 1:  # at most one shard waits while one is written: memory stays bounded
            self.outputs += self._pending.pop(0).result()
        self.shard += 1

    def _write(self, name: str, tokens: np.ndarray, seq_lengths: np.ndarray, lin_name: str, lineage: pa.Table,
               info: dict) -> list[dict]:
        """Write a shard, its lineage and its manifest file, checksum and fsync them; the outputs entries."""
        writer = IndexedWriter(self.staging / name, self.tok.dtype)
        writer.add(tokens, seq_lengths)
        writer.close()
        pq.write_table(lineage, self.staging / lin_name, row_group_size=max(1, lineage.num_rows), **PARQUET_OPTS)
        lineage_rows = lineage.num_rows
        out = []
        for suffix, kind in ((".bin", "shard_bin"), (".idx", "shard_index")):
            f = self.staging / (name + suffix)
            info[f"{suffix[1:]}_sha256"] = sha256_file(f)
            out.append({"name": f.name, "kind": kind, "rows": info["sequences"], "sha256": info[f"{suffix[1:]}_sha256"],
                        "bytes": f.stat().st_size, "tokens": info["tokens"] if kind == "shard_bin" else 0})
        body = orjson.dumps(info, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
        (self.staging / f"{name}.json").write_bytes(body)
        lin = self.staging / lin_name
        out += [{"name": f"{name}.json", "kind": "shard_manifest", "rows": 1, "sha256": hashlib.sha256(body).hexdigest(),
                 "bytes": len(body), "tokens": 0},
                {"name": lin_name, "kind": "lineage", "rows": lineage_rows, "sha256": sha256_file(lin),
                 "bytes": lin.stat().st_size, "tokens": 0}]
        for f in (f"{name}.bin", f"{name}.idx", f"{name}.json", lin_name):
            with open(self.staging / f, "rb") as fh:
                os.fsync(fh.fileno())
        return out

    def close(self) -> None:
        """Wait for every shard's checksums (in shard order); raises what a helper raised."""
        try:
            for fut in self._pending:
                self.outputs += fut.result()
        finally:
            self._pool.shutdown(wait=True)


def shards_config(loaded: LoadedSpec, partition: None) -> dict:
    """The shard size and the subsample; the plan, tokenizer and token stores come in as upstream versions."""
    return {"shard_tokens": loaded.spec.output.shard_tokens} | (
        {"subsample": loaded.spec.mixture.subsample} if loaded.spec.mixture.subsample < 1 else {})


def build_shards(ctx: StageRun) -> Built:
    """The mixed shards for the plan the ``mixture_plan`` stage published."""
    loaded, staging = ctx.loaded, ctx.staging
    plan, _ = load_plan(loaded)
    tok, _ = built_tokenizer(loaded)
    sources, ups = _open_sources(loaded)
    if [s.name for s in sources] != plan["sources"]:
        raise ValueError(f"the plan's sources {plan['sources']} differ from the spec's; rematerialize mixture_plan")
    sub = loaded.spec.mixture.subsample
    docs = {s.name: source_subset(plan["seed"], s.name, s.sizes, sub) for s in sources}
    for s in sources:
        if plan["per_source"][s.name]["available"] != int(s.sizes[docs[s.name]].sum()):
            raise ValueError(f"{s.name}: the plan counts {plan['per_source'][s.name]['available']} tokens, the token "
                             f"store {int(s.sizes[docs[s.name]].sum())}; rematerialize mixture_plan")
    shard_tokens = loaded.spec.output.shard_tokens
    total = plan["budget"] + 1  # the last sample's last target
    x = np.array(plan["grid"]["x"])
    # phase edges in whole tokens; the extra final token belongs to the last phase
    bounds = np.array([float(round(ph["start"])) for ph in plan["phases"]] + [np.inf])
    names = [ph["name"] for ph in plan["phases"]]
    cursors = [_Cursor(s.name, plan["seed"], s.sizes, docs[s.name], x, np.array(plan["grid"]["cumulative"][s.name]))
               for s in sources]
    # per phase, the sources with no quota there: none of their documents may be placed inside it
    zero_quota = [np.array([ph["quotas"][s.name] <= 0 for s in sources]) for ph in plan["phases"]]
    ctx.say(f"{total - 1:,} tokens + 1 in shards of {shard_tokens:,} from {len(sources)} sources, "
             f"phases {names}")
    # shards end at every multiple of shard_tokens and at every phase boundary, so each phase has shards
    # of its own; the extra final token joins the last shard
    shard_cuts = np.union1d(np.arange(shard_tokens, total - 1, shard_tokens), bounds[1:-1].astype(np.int64))
    # windows of due position end at the same places: nothing due after a phase boundary is placed before
    # the stream reaches it (``_fill``)
    edges = np.append(shard_cuts, total).astype(np.float64)
    phase_edge = {float(b): p for p, b in enumerate(bounds[1:-1], start=1)}
    position = 0
    try:
        writer = _ShardWriter(staging, sources, tok, names, bounds, (total, len(shard_cuts) + 1))

        def place(seq: np.ndarray, epoch: np.ndarray, size: np.ndarray, src: np.ndarray) -> None:
            nonlocal position
            starts = position + np.concatenate([[0], np.cumsum(size[:-1])])
            keep = starts < total
            seq, epoch, size, src, starts = seq[keep], epoch[keep], size[keep], src[keep], starts[keep]
            lengths = np.minimum(size, total - starts)
            position = int(starts[-1] + lengths[-1]) if len(starts) else position
            # cut at shard (hence phase) boundaries: each piece lies in one shard and one phase
            owner, p_start, p_len = _split(starts, lengths, shard_cuts)
            rows = {"src": src[owner], "seq": seq[owner], "epoch": epoch[owner], "start": p_start, "n": p_len,
                    "offset": p_start - starts[owner], "doc_tokens": size[owner]}
            shard_of = np.searchsorted(shard_cuts, p_start, side="right")
            for k in np.unique(shard_of):
                sel = shard_of == k
                while writer.shard < k:
                    writer.flush()
                writer.add({key: v[sel] for key, v in rows.items()})

        w = 0
        while position < total:  # past the last edge (the stream short of its end), windows go on a shard long
            until = edges[w] if w < len(edges) else edges[-1] + (w - len(edges) + 1) * shard_tokens
            w += 1
            taken = [c.take(until) for c in cursors]
            seq = np.concatenate([t[0] for t in taken]).astype(np.int64)
            if len(seq):
                epoch = np.concatenate([t[1] for t in taken])
                size = np.concatenate([t[2] for t in taken]).astype(np.int64)
                due = np.concatenate([t[3] for t in taken])
                src = np.concatenate([np.full(len(t[0]), i, np.int64) for i, t in enumerate(taken)])
                order = np.lexsort((src, due))
                order = _fence(order, src, due, size, position, bounds, zero_quota)
                place(seq[order], epoch[order], size[order], src[order])
            if until in phase_edge and position <= until:  # not past a phase boundary: fill past it
                filled = _fill(cursors, position, until, plan, phase_edge[until], zero_quota[phase_edge[until]])
                if filled:
                    place(*(np.array(c, dtype=np.int64) for c in zip(*filled)))
            if len(seq) == 0 and position < until:  # nothing due in this window: skip ahead to the next one due
                nxt = min(c.next_due() for c in cursors)
                if not np.isfinite(nxt):
                    raise RuntimeError("no source has a document to draw: every token store is empty, or no "
                                       "source has a share at the end of the schedule")
                w = max(w, int(np.searchsorted(edges, nxt, side="right")) if nxt < edges[-1]
                        else len(edges) + int((nxt - edges[-1]) // shard_tokens))
                continue
            ctx.say(f"{position:,} / {total:,} tokens placed")
        writer.flush()
        writer.close()
        realised = realised_vs_target(plan, writer.shard_info)
    except BaseException:
        if "writer" in locals():
            with contextlib.suppress(Exception):  # the first error is the one to report
                writer.close()
        raise
    worst = max((abs(r["deviation"]) / max(r["tolerance"], 1) for ph in realised for r in ph["sources"].values()),
                default=0.0)
    return Built(
        inputs=[{"path": o["path"], "sha256": o["sha256"], "bytes": o["bytes"],
                 "upstream_manifest": f"tokenize/{m['partition']}.json"}
                for m in ups for o in m["outputs"] if o["kind"] in ("token_bin", "token_index")],
        outputs=[output_ref(o, o["kind"], o["tokens"]) for o in writer.outputs],
        counts={"tokens_out": total, "shards": writer.shard, "samples": plan["samples"],
                "documents_started": sum(i["documents_started"] for i in writer.shard_info),
                "sequences": sum(i["sequences"] for i in writer.shard_info)},
        token_counting={"method": "exact", "tokenizer_sha256": tok.sha256},
        details={"phases": realised, "shards": writer.shard_info, "seq_len": plan["seq_len"],
                 "dtype": tok.dtype.name, "eos_id": tok.eos_id},
        summary=f"{writer.shard} shards, {total:,} tokens; worst per-phase deviation {worst:.2f} of its tolerance")


def quota_tolerance(target: float, share: float, ends: int, own_longest: int, others: dict[str, tuple[float, int]]) -> float:
    """How far a phase's realised tokens of a source may be from its quota.

    At each of the phase's ends inside the stream (``ends``: 1 for the first phase, 2 after),
    the count can be off by one of the source's own documents straddling it, plus what other
    sources' long documents displace: while another source j streams a document of L_j
    tokens this source does not advance (short by share × L_j), and when j's next document
    does not fit before an end the others fill its place (over by up to
    share / (1 - share_j) × L_j). ``others`` maps each other source to (its share, its
    longest document in this phase or a neighbouring one). Measured: a 25k-token code
    document not placed before the end of the stream left math, at share 1/3 next to code's
    1/3, over by 12.1k tokens, though its own documents are at most 386 tokens; the
    source's own longest document alone (as once proposed) is not a bound. Never below
    0.5 % of the quota. A source without quota (share 0) is held to its own documents: at
    most one that the fence (``_fence``) could not move in front of the boundary; none in
    practice, so any token it gets there fails the check.
    """
    spill = max((longest * min(1.0, share / (1.0 - s_j)) if s_j < 1 else longest
                 for s_j, longest in others.values()), default=0.0) if share > 0 else 0.0
    return max(0.005 * target, ends * (own_longest + spill))


def _off_target(plan: dict, realised: dict[tuple[str, str], int], longest: dict[tuple[str, str], int]) -> list[dict]:
    """Per phase and source: quota, realised tokens, deviation, tolerance and whether it holds;
    ``realised`` and ``longest`` are keyed by (phase, source)."""
    names = [ph["name"] for ph in plan["phases"]]
    out = []
    for i, ph in enumerate(plan["phases"]):
        near = set(names[max(0, i - 1):i + 2])
        nearby = {s: max((n for (p, src), n in longest.items() if p in near and src == s), default=0)
                  for s in plan["sources"]}
        total = sum(ph["quotas"].values())
        shares = {s: (ph["quotas"][s] / total if total else 0.0) for s in plan["sources"]}
        rows = {}
        for s in plan["sources"]:
            target, got = ph["quotas"][s], realised.get((ph["name"], s), 0)
            others = {o: (shares[o], nearby[o]) for o in plan["sources"] if o != s}
            tol = quota_tolerance(target, shares[s], 1 if i == 0 else 2, longest.get((ph["name"], s), 0), others)
            rows[s] = {"target": target, "realised": got, "deviation": got - target, "tolerance": tol,
                       "ok": abs(got - target) <= tol}
        out.append({"name": ph["name"], "tokens": sum(r["realised"] for r in rows.values()), "sources": rows})
    return out


def realised_vs_target(plan: dict, shards: list[dict]) -> list[dict]:
    """Per phase and source: target quota, realised tokens, deviation and tolerance
    (``quota_tolerance``), from the shards' own counts."""
    realised: dict[tuple[str, str], int] = {}
    longest: dict[tuple[str, str], int] = {}
    for info in shards:
        for ph, per_source in info["phases"].items():
            for s, n in per_source.items():
                realised[(ph, s)] = realised.get((ph, s), 0) + n
        for ph, per_source in info["longest_document"].items():
            for s, n in per_source.items():
                longest[(ph, s)] = max(longest.get((ph, s), 0), n)
    return _off_target(plan, realised, longest)


def check_on_target(loaded: LoadedSpec) -> tuple[list[dict], dict | None]:
    """Recount realised tokens per phase and source from the lineage files on disk (DuckDB) and
    compare them with the plan; returns the (phase, source) pairs off target (empty = on target)
    and the pair closest to (or furthest past) its tolerance, so a passing check shows its margin."""
    import duckdb

    plan, _ = load_plan(loaded)
    m = read_manifest(manifest_path(loaded.manifest_root, NAME, None))
    files = [str(loaded.storage_root / o["path"]) for o in m["outputs"] if o["kind"] == "lineage"]
    rows = duckdb.connect().execute(
        "SELECT phase, source, sum(n_tokens)::BIGINT, max(doc_tokens)::BIGINT FROM read_parquet(?) GROUP BY ALL",
        [files]).fetchall()
    phases = _off_target(plan, {(p, s): n for p, s, n, _ in rows}, {(p, s): d for p, s, _, d in rows})
    off = [{"phase": ph["name"], "source": s, "target": r["target"], "realised": r["realised"],
            "tolerance": r["tolerance"]} for ph in phases for s, r in ph["sources"].items() if not r["ok"]]
    pairs = [{"phase": ph["name"], "source": s, "deviation": r["deviation"],
              "of_tolerance": abs(r["deviation"]) / r["tolerance"] if r["tolerance"] else float(r["deviation"] != 0)}
             for ph in phases for s, r in ph["sources"].items() if r["target"] > 0]
    return off, max(pairs, key=lambda p: p["of_tolerance"], default=None)


STAGE = Stage(name=NAME, scope="global", upstream=("mixture_plan", "tokenizer", "tokenize"), config=shards_config,
              build=build_shards, module=__name__)
