"""Decontamination: training documents that share a word n-gram with an eval item.

Per source, after dedup and before quality: every document of the source's dedup output
is cut into normalised word n-grams (``eval_index.text_ngrams``: the same normalisation
and hash as the index), and each n-gram is looked up in the eval index (a sorted array
of 64-bit hashes: one ``searchsorted`` per batch). One pass, no Python per n-gram.

A document with a hit is, by ``decontamination.policy``:

- ``drop_document`` (default): removed, charged in the funnel to the eval set of its
  earliest match (``contaminated: <set>``);
- ``remove_span`` (GPT-3 style): every matched n-gram's characters, widened by
  ``span_margin`` on each side, are cut out (overlapping cuts merged); a document cut
  more than ``max_cuts`` times, or left shorter than ``min_chars_left`` characters, is
  removed instead. The tokens cut out are the funnel row ``span_removed`` (0 documents).

Every (document, eval item) match is recorded (``contamination.parquet``): the eval
set, the item's id, the first matched n-gram (normalised) and its character offset in
the document, how many n-grams matched, and what was done. Offsets come from mapping
the normalised words back onto the original characters, checked against the normalised
text; should they ever disagree (normalisation that is not character by character), the
offset is -1 and a ``remove_span`` document is removed whole rather than cut at a guess.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.manifest import input_refs, output_files
from corpusmix.core.parquet_io import PartWriter, link_part, write_parquet
from corpusmix.core.spec import Decontamination, LoadedSpec, Spec
from corpusmix.core.stage import Stage, StageRun, documents_built
from corpusmix.stages.eval_index import NORMALIZE, item_names, text_ngrams
from corpusmix.stages.minhash import normalize
from corpusmix.stages.tokencount import TokenCounting, count_tokens, counter_for
from corpusmix.stages.tokenizer import TokenizerInfo
from schemas.tables import ARROW_SCHEMAS, CONTAMINATION, INGEST_DOCUMENTS, validate_table

NAME = "decontaminate"
DOCS_SCHEMA = ARROW_SCHEMAS["ingest_documents"]
HITS_SCHEMA = ARROW_SCHEMAS["contamination"]
READ_ROWS = 256  # documents per scan batch: 1,024 ran at 38 MB/s, 256 at 53 (benchmarks/decontamination.py)


@dataclass(frozen=True)
class Match:
    """One document's matches against one eval item."""

    item: int  # row of eval_items
    first_word: int  # of the earliest matched n-gram
    count: int  # n-grams of the document the item holds
    words: tuple[int, ...]  # first word of every matched n-gram (for remove_span)


FILTER_BITS_MAX = 27  # the prefilter: a bitmap of at most 2^27 bits (16 MB), ~128 bits per indexed n-gram


_FILTERS: dict[int, tuple[np.ndarray, np.ndarray, np.uint64]] = {}


def _prefilter(hashes: np.ndarray) -> tuple[np.ndarray, np.uint64]:
    """A bitmap over the top bits of the index's hashes: an n-gram whose bit is clear is in no
    eval item, so ~99 % of lookups end with one bitmap read instead of a binary search over the
    index (a byte per slot at 16 slots per n-gram let ~6 % through: their binary searches were an
    eighth of the scan)."""
    cached = _FILTERS.get(id(hashes))
    if cached is not None and cached[0] is hashes:
        return cached[1], cached[2]
    bits = int(min(FILTER_BITS_MAX, max(16, np.ceil(np.log2(max(1, len(hashes)) * 128)))))
    slots = np.zeros(1 << bits, bool)
    shift = np.uint64(64 - bits)
    slots[hashes >> shift] = True
    table = np.packbits(slots, bitorder="little")
    _FILTERS.clear()  # one index per process at a time (the build's)
    _FILTERS[id(hashes)] = (hashes, table, shift)
    return table, shift


def _maybe_indexed(table: np.ndarray, shift: np.uint64, grams: np.ndarray) -> np.ndarray:
    """Positions of the n-grams whose prefilter bit is set (the only ones that can be in the index)."""
    slot = (grams >> shift).astype(np.uint32)  # at most 27 bits: 32-bit arithmetic from here
    return np.flatnonzero(table[slot >> 3] & (np.uint8(1) << (slot & 7).astype(np.uint8)))


def find_matches(texts: list[str], n: int, hashes: np.ndarray, items: np.ndarray) -> dict[int, list[Match]]:
    """Per text (by position) with any hit, its matches per eval item, earliest first. Used on
    training documents here, and on held-out text to report eval items found there."""
    if len(hashes) == 0:  # no eval set: nothing to look for
        return {}
    grams = text_ngrams(texts, n)
    if len(grams.hashes) == 0:
        return {}
    table, shift = _prefilter(hashes)
    maybe = _maybe_indexed(table, shift, grams.hashes)
    pos = np.minimum(np.searchsorted(hashes, grams.hashes[maybe]), len(hashes) - 1)
    hit = maybe[hashes[pos] == grams.hashes[maybe]]
    pos = pos[hashes[pos] == grams.hashes[maybe]]
    out: dict[int, list[Match]] = {}
    if len(hit) == 0:
        return out
    doc, item, word = grams.owner[hit], items[pos], grams.first_word[hit]
    order = np.lexsort((word, item, doc))
    doc, item, word = doc[order], item[order], word[order]
    bounds = np.flatnonzero(np.diff(doc * (int(items.max()) + 1) + item)) + 1
    for d, it, w in zip(np.split(doc, bounds), np.split(item, bounds), np.split(word, bounds)):
        out.setdefault(int(d[0]), []).append(Match(int(it[0]), int(w[0]), len(w), tuple(int(x) for x in w)))
    for matches in out.values():
        matches.sort(key=lambda m: (m.first_word, m.item))
    return out


def located(text: str, spans: list[tuple[int, int]] | None, matches: list[Match], n: int) -> list[dict]:
    """Where each match is in ``text``: its first n-gram (normalised), that n-gram's character offset
    (-1 when ``spans``, from ``word_spans``, could not map words to characters), how many n-grams."""
    words = normalize(text, NORMALIZE).split()
    return [{"ngram": b" ".join(words[m.first_word:m.first_word + n]).decode(),
             "offset": spans[m.first_word][0] if spans else -1, "ngrams_matched": m.count} for m in matches]


def word_spans(text: str) -> list[tuple[int, int]] | None:
    """Character (start, end) of each normalised word in ``text``, or None when normalisation
    does not map characters to whole words (the caller then does not guess)."""
    spans, start = [], None
    for i, ch in enumerate(text):
        part = normalize(ch, NORMALIZE).split()
        if len(part) > 1:
            return None  # one character became several words
        if part:
            start = i if start is None else start
        elif start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    mapped = [normalize(text[a:b], NORMALIZE) for a, b in spans]
    return spans if mapped == normalize(text, NORMALIZE).split() else None


def cut_spans(text: str, spans: list[tuple[int, int]] | None, matches: list[Match], n: int,
              cfg: Decontamination) -> tuple[str | None, int]:
    """``text`` with every matched n-gram (± ``span_margin``) cut out, and the number of cuts;
    None when the document must go whole (too many cuts, too little left, or no offsets)."""
    if spans is None:
        return None, 0
    ranges = sorted((max(0, spans[w][0] - cfg.span_margin), min(len(text), spans[w + n - 1][1] + cfg.span_margin))
                    for m in matches for w in m.words)
    merged: list[list[int]] = []
    for a, b in ranges:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    kept = "".join(text[prev:a] for prev, (a, _) in zip([0] + [b for _, b in merged], merged)) + text[merged[-1][1]:]
    if len(merged) > cfg.max_cuts or len(kept) < cfg.min_chars_left:
        return None, len(merged)
    return kept, len(merged)


@dataclass(frozen=True)
class _Scan:
    """What every unit of one source's scan shares (picklable; workers load the index once)."""

    source: str
    index_path: str
    n: int
    cfg: Decontamination
    counting: TokenCounting
    tokenizer: TokenizerInfo | None
    part_bytes: int
    staging: str


@dataclass
class _Tally:
    n_in: int = 0
    bytes_in: int = 0
    tokens_in: int = 0
    reasons: dict[str, list[int]] = field(default_factory=dict)  # reason -> [records, bytes, tokens]
    documents_cut: int = 0
    hits: list[dict] = field(default_factory=list)

    def charge(self, reason: str, records: int, size: int, tokens: int) -> None:
        acc = self.reasons.setdefault(reason, [0, 0, 0])
        acc[0] += records
        acc[1] += size
        acc[2] += tokens


@functools.lru_cache(maxsize=2)
def _index(path: str) -> tuple[np.ndarray, np.ndarray]:
    t = pq.read_table(path)
    return t.column("hash").to_numpy(), t.column("item").to_numpy()


def _scan_part(scan: _Scan, item_names: tuple[list[str], list[str]], unit: tuple[int, str]) -> tuple[list[dict], _Tally]:
    """Worker: scan one dedup part; write its clean (or cut) documents; return parts and tally."""
    index, path = unit
    hashes, items = _index(scan.index_path)
    sets, ids = item_names
    tally = _Tally()
    found_in = []  # per batch: the matches (the first read only scans)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS):
        tally.n_in += batch.num_rows
        tally.bytes_in += pc.sum(batch.column("n_bytes")).as_py() or 0
        tally.tokens_in += pc.sum(batch.column("n_tokens")).as_py() or 0
        found_in.append(find_matches(batch.column("text").to_pylist(), scan.n, hashes, items))
    if not any(found_in):  # the usual case: the part is clean, so it is its own output
        return [link_part(Path(path), Path(scan.staging), f"part-{index:05d}-000.parquet")], tally
    writer = PartWriter(Path(scan.staging), f"part-{index:05d}", DOCS_SCHEMA, scan.part_bytes)
    for batch, found in zip(pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS), found_in):
        table = pa.Table.from_batches([batch]).cast(DOCS_SCHEMA)
        texts = table.column("text").to_pylist()
        keep = np.ones(table.num_rows, bool)
        new_text: dict[int, str] = {}
        for d, matches in found.items():
            text, size, tokens = texts[d], table["n_bytes"][d].as_py(), table["n_tokens"][d].as_py()
            spans = word_spans(text)
            cut, _ = (cut_spans(text, spans, matches, scan.n, scan.cfg) if scan.cfg.policy == "remove_span"
                      else (None, 0))
            if cut is None:
                keep[d] = False
                tally.charge(f"contaminated: {sets[matches[0].item]}", 1, size, tokens)
            else:
                new_text[d] = cut
            doc_id = table["doc_id"][d].as_py()
            tally.hits += [{"source": scan.source, "doc_id": doc_id, "eval_set": sets[m.item], "item_id": ids[m.item],
                            **where, "action": "span_removed" if cut is not None else "dropped"}
                           for m, where in zip(matches, located(text, spans, matches, scan.n))]
        if new_text:
            table = _with_cuts(table, new_text, scan, tally)
        kept = table.filter(pa.array(keep))
        validate_table(kept, INGEST_DOCUMENTS)
        writer.write(kept)
    return writer.close(), tally


def _with_cuts(table: pa.Table, new_text: dict[int, str], scan: _Scan, tally: _Tally) -> pa.Table:
    """The batch with the cut documents' text, bytes and tokens replaced; the cut bytes and
    tokens charged to ``span_removed``."""
    rows = sorted(new_text)
    cut = pa.array([new_text[r] for r in rows], pa.string())
    tokens = count_tokens(cut, scan.counting, scan.tokenizer)
    texts, sizes, counts = (table.column(c).to_pylist() for c in ("text", "n_bytes", "n_tokens"))
    for r, t, n in zip(rows, cut.to_pylist(), tokens):
        size = len(t.encode("utf-8"))
        tally.charge("span_removed", 0, sizes[r] - size, counts[r] - int(n))
        texts[r], sizes[r], counts[r] = t, size, int(n)
        tally.documents_cut += 1
    for name, values in (("text", texts), ("n_bytes", sizes), ("n_tokens", counts)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array(values, DOCS_SCHEMA.field(name).type))
    return table


def decontaminate_config(loaded: LoadedSpec, source: str) -> dict:
    return {"source": source, "decontamination": loaded.spec.decontamination.model_dump(mode="json")}


def build_decontaminate(ctx: StageRun):
    loaded, cfg = ctx.loaded, ctx.loaded.spec.decontamination
    up_path, up = ctx.upstream("dedup")
    idx_path, idx = ctx.upstream("eval_index")
    files = output_files(loaded, idx)  # the n-grams are read by each unit's process (``_index``), once
    parts = [str(loaded.storage_root / o["path"]) for o in up["outputs"] if o["kind"] == "documents"]
    counting, info = counter_for(loaded)  # as ingest counted (its key includes how)
    scan = _Scan(ctx.partition, str(files["eval_ngrams"]), cfg.ngram, cfg, counting, info, loaded.spec.ingest.part_bytes,
                 str(ctx.staging))
    names = item_names(files["eval_items"])
    ctx.say(f"{up['counts']['documents_out']} documents in {len(parts)} part(s) against {idx['counts']['items']} "
            f"eval items ({idx['counts']['distinct_ngrams']:,} {cfg.ngram}-grams), policy {cfg.policy}")
    total, doc_parts = _Tally(), []
    with ctx.executor(len(parts)) as executor:
        for i, (written, t) in enumerate(executor.map(functools.partial(_scan_part, scan, names), enumerate(parts)), 1):
            doc_parts += written
            total.n_in += t.n_in
            total.bytes_in += t.bytes_in
            total.tokens_in += t.tokens_in
            total.documents_cut += t.documents_cut
            total.hits += t.hits
            for r, (n, b, k) in t.reasons.items():
                total.charge(r, n, b, k)
            ctx.say(f"part {i}/{len(parts)}: {len(t.hits)} match(es)")
    hits = pa.Table.from_pylist(total.hits, schema=HITS_SCHEMA)
    validate_table(hits, CONTAMINATION)
    hits_out = write_parquet(hits, ctx.staging / "contamination.parquet")
    removed = [sum(r[j] for r in total.reasons.values()) for j in range(3)]
    built = documents_built(
        ctx, (up_path, up), doc_parts, [("contamination", hits_out)], docs=(total.n_in, total.n_in - removed[0]),
        text_bytes=(total.bytes_in, total.bytes_in - removed[1]), tokens=(total.tokens_in, total.tokens_in - removed[2]),
        summary=f"{removed[0]} document(s) dropped, {total.documents_cut} cut, {hits.num_rows} match(es)")
    built.inputs += input_refs(loaded, idx_path, idx, kinds=("eval_ngrams", "eval_items"))
    built.counts |= {"documents_cut": total.documents_cut, "matches": hits.num_rows}
    built.reasons = {r: {"records": n, "bytes": b, "tokens": k} for r, (n, b, k) in sorted(total.reasons.items())}
    built.details = {"policy": cfg.policy, "ngram": cfg.ngram, "contamination": _per_set(hits),
                     "audit": _audit(hits, cfg.audit_samples)}
    return built


def _per_set(hits: pa.Table) -> dict[str, dict]:
    """Per eval set: documents dropped, documents cut, distinct items found."""
    out: dict[str, dict] = {}
    for row in hits.to_pylist():
        s = out.setdefault(row["eval_set"], {"dropped": set(), "cut": set(), "items": set()})
        s["dropped" if row["action"] == "dropped" else "cut"].add(row["doc_id"])
        s["items"].add(row["item_id"])
    return {k: {"documents_dropped": len(v["dropped"]), "documents_cut": len(v["cut"]), "items_found": len(v["items"])}
            for k, v in sorted(out.items())}


def _audit(hits: pa.Table, k: int) -> list[dict]:
    """A deterministic sample of matches (smallest hash of doc_id and item), for the UI."""
    rows = hits.to_pylist()
    rows.sort(key=lambda r: hashlib.blake2b(f"{r['doc_id']}\0{r['item_id']}".encode(), digest_size=8).digest())
    return rows[:k]


def contamination_summary(loaded: LoadedSpec) -> list[dict]:
    """Per source and eval set (every source's latest decontaminate manifest): documents dropped,
    documents cut, eval items found; what the UI and REPORT.md show."""
    from corpusmix.core.manifest import manifest_path, read_manifest

    rows = []
    for source in loaded.source_names:
        p = manifest_path(loaded.manifest_root, NAME, source)
        per_set = read_manifest(p)["details"]["contamination"] if p.is_file() else {}
        for e in (e for e in loaded.spec.eval_sets if not e.heldout):  # a held-out split: the split's own table
            r = per_set.get(e.name, {"documents_dropped": 0, "documents_cut": 0, "items_found": 0})
            rows.append({"source": source, "eval_set": e.name, "built": p.is_file(), **r})
    return rows


STAGE = Stage(name=NAME, scope="source", upstream=("dedup", "eval_index"), config=decontaminate_config,
              build=build_decontaminate, module=__name__, active=Spec.decontaminates)
