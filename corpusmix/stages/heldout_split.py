"""Held-out split stage: a source's kept documents into train and held-out, no near-duplicate across.

Every later mixture decision (proxy runs, mixing laws, the per-source loss monitor) is judged
by loss on held-out text per source; that loss means nothing if the model trained on a copy
of the held-out text. So the split is made on **near-duplicate clusters**, not documents,
with dedup's own definition of a near-duplicate (``dedup.find_duplicates``: exact groups,
MinHash LSH candidates with the spec's ``dedup.near`` settings, verified on true Jaccard).

Design: one partition per source, and no coordination between partitions.

* **The relation.** ``find_duplicates`` runs over this source's kept documents (quality's
  output) followed by every *other* source's dedup survivors. Clusters are its connected
  components. Other sources are read at dedup, not at quality: their dedup outputs are
  final one wave earlier (``cross_source_dedup``, declared upstream, runs after all of them),
  whereas their quality partitions may still be running; and dedup's survivors are a
  superset of every other source's train documents, so checking against them can only
  keep more documents in train, never leak one.
* **The rule.** A cluster can be held out only if every member is a document of this
  source, and then it is held out whole. A cluster reaching into another source stays in
  train (``duplicate_elsewhere`` names the member outside). The rule is symmetric: if
  document h of A is near-duplicate to d of B, A's partition sees d (and keeps h in train)
  and B's sees h (and keeps d in train), so no partition needs another's decision and
  still no held-out document has a near-duplicate in train, in any source. The key is this
  source's quality version and the other sources' dedup versions: a change in one source's
  dedup reruns every split; tokenize keys on the split's output bytes, so a split that moved
  nothing rebuilds nothing after it.
* **Which clusters.** Documents are ranked by blake2b(seed, source, doc_id): a document's
  place does not depend on the others, so adding documents to a source moves few held-out
  documents (held-out sets stay comparable across corpus versions). Clusters are taken in
  the rank order of their first member until the target is met: ``fraction`` gives exactly
  max(ceil(fraction x documents), min_documents) documents (a cluster that would overshoot
  is passed over), ``tokens`` the first clusters whose ``n_tokens`` reach the budget (and
  min_documents). Never more than half of the source's documents (a tiny source keeps a
  train side; the manifest says ``capped``).

**When the split is an eval set** (``eval_sets: [{source: S, heldout: true}]``), a held-out
document must also share no normalised word n-gram (decontamination's: ``decontamination.ngram``,
folded as its scan folds) with any document that stays in train, in any source: candidates
sharing one stay in train (``duplicate_elsewhere`` names the document, ``links.parquet`` the
n-gram and its offset), candidates sharing one with each other join one cluster, and an n-gram in
more than ``decontamination.max_items_per_ngram`` candidates is too common to count (as in
decontamination). Documents are kept, never dropped: the split picks others (``ngram_clean``).

Outputs: the train documents (kind ``documents``, quality's schema: tokenize's train store),
the held-out documents (kind ``heldout_documents``, tokenize's ``valid`` store) and
``split.parquet`` (``heldout_split`` schema: every document's side, rank, cluster and the
duplicate that kept it in train). The funnel is additive: documents in - ``heldout`` = train
documents out (tokens likewise). Cost: MinHash of this source's documents; the other sources'
signatures and exact keys are those dedup published beside its survivors (``_published``), so
a partition reads them instead of hashing the whole corpus again (a dedup without near
matching publishes none: then they are hashed here).
"""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.executor import Executor
from corpusmix.core.manifest import input_refs, output_ref, require_manifest
from corpusmix.core.parquet_io import PartWriter, link_part, write_parquet
from corpusmix.core.spec import Dedup, HeldOut, LoadedSpec, Spec
from corpusmix.core.stage import Built, Stage, StageRun, documents_built
from corpusmix.stages.dedup import SCRATCH, Hashed, find_duplicates
from schemas.tables import (
    ARROW_SCHEMAS,
    HELDOUT_DOCUMENTS,
    HELDOUT_LINKS,
    HELDOUT_SPLIT,
    QUALITY_DOCUMENTS,
    validate_table,
)

NAME = "heldout_split"
DOCS_SCHEMA = ARROW_SCHEMAS["quality_documents"]
SPLIT_SCHEMA = ARROW_SCHEMAS["heldout_split"]
MAX_HELDOUT_SHARE = 0.5  # never more than half of a source's documents: its train side must stay
READ_BATCH_ROWS = 2048


def near_settings(dedup: Dedup) -> Dedup:
    """Dedup's MinHash settings, with near matching on whatever dedup itself does: the split's
    guarantee needs the relation even where a source's dedup skips near-duplicates."""
    return dedup.model_copy(update={"exact": True, "representative": "first",
                                    "near": dedup.near.model_copy(update={"enabled": True})})


def ranks(seed: int, source: str, doc_ids: list[str]) -> np.ndarray:
    """Each document's place in the seeded order (0 first), from a hash of its own id only."""
    keys = [hashlib.blake2b(f"{seed}\0{source}\0{d}".encode(), digest_size=8).digest() for d in doc_ids]
    order = sorted(range(len(doc_ids)), key=lambda i: (keys[i], doc_ids[i]))
    out = np.empty(len(doc_ids), np.int64)
    out[order] = np.arange(len(doc_ids))
    return out


@dataclass(frozen=True)
class Target:
    """How many documents (and tokens) the held-out side needs; ``cap`` bounds it."""

    documents: int
    tokens: int
    exact_documents: bool  # fraction: exactly ``documents``; tokens: at least ``documents``
    cap: int
    capped: bool


def target(decl: HeldOut | None, n_docs: int) -> Target:
    """The declaration resolved against the source's size (see the module docstring)."""
    cap = int(n_docs * MAX_HELDOUT_SHARE)
    if not decl:
        return Target(0, 0, True, cap, False)
    mode, value = decl.target
    docs = decl.min_documents
    if mode == "fraction":
        docs = max(docs, math.ceil(round(value * n_docs, 9)))
    return Target(min(docs, cap), int(value) if mode == "tokens" else 0, mode == "fraction", cap, docs > cap)


@dataclass
class Clusters:
    """This source's documents (positions 0..n-1) grouped by the near-duplicate relation."""

    root: np.ndarray  # per own document: its cluster's root position
    members: dict[int, list[int]]  # root -> own members (only clusters of 2+ documents, or reaching outside)
    outside: dict[int, int]  # root -> the first position of another source's document in it


def clusters(n_own: int, removed: dict[int, tuple]) -> Clusters:
    """Clusters from ``find_duplicates``' result (representative ``first``: every removed
    position maps to its cluster's first position)."""
    root = np.arange(n_own)
    members: dict[int, list[int]] = {}
    outside: dict[int, int] = {}
    for p, (rep, *_) in sorted(removed.items()):
        if rep >= n_own:  # a cluster of other sources' documents only
            continue
        if p < n_own:
            root[p] = rep
            members.setdefault(rep, [rep]).append(p)
        else:
            outside.setdefault(rep, p)
    for r in outside:
        members.setdefault(r, [r])
    return Clusters(root, members, outside)


def choose(order: np.ndarray, cl: Clusters, tokens: np.ndarray, want: Target) -> tuple[np.ndarray, int]:
    """Held-out mask over own documents: whole eligible clusters in rank order until ``want`` is met;
    also how many ineligible clusters (reaching another source) were passed over on the way."""
    held = np.zeros(len(cl.root), bool)
    seen: set[int] = set()
    n_docs = n_tokens = passed = 0

    def done() -> bool:
        return n_docs >= want.documents and n_tokens >= want.tokens

    for p in order:
        if done() or n_docs >= want.cap:
            break
        r = int(cl.root[p])
        if r in seen:
            continue
        seen.add(r)
        if r in cl.outside:
            passed += 1
            continue
        group = cl.members.get(r, [r])
        limit = want.documents if want.exact_documents else want.cap
        if n_docs + len(group) > limit:
            continue
        held[group] = True
        n_docs += len(group)
        n_tokens += int(tokens[group].sum())
    return held, passed


def merged(cl: Clusters, pairs: list[tuple[int, int]], outside: dict[int, int]) -> Clusters:
    """The clusters with more links: ``pairs`` of own documents joined into one cluster, and each own
    document of ``outside`` tied to a document (position) that stays in train."""
    root, members, out = cl.root.copy(), {r: list(m) for r, m in cl.members.items()}, dict(cl.outside)
    for a, b in pairs:
        ra, rb = int(root[a]), int(root[b])
        if ra == rb:
            continue
        r = min(ra, rb)
        group = members.pop(ra, [ra]) + members.pop(rb, [rb])
        members[r] = group
        root[group] = r
        tied = [out.pop(x) for x in (ra, rb) if x in out]
        if tied:
            out[r] = min(tied)
    for p, who in sorted(outside.items()):
        r = int(root[p])
        members.setdefault(r, [r])
        out.setdefault(r, who)
    return Clusters(root, members, out)


@dataclass(frozen=True)
class _LinkScan:
    index_path: str  # the candidates' n-gram index: sorted hashes and the candidate of each (.npz)
    n: int


def _links_in_part(scan: _LinkScan, unit: tuple[int, str, np.ndarray | None]) -> list[tuple]:
    """Worker: the documents of one part that share an n-gram with a candidate, as (candidate,
    position, where) rows; ``skip`` marks rows that are candidates themselves (their links are the
    index's own)."""
    from corpusmix.stages.decontaminate import READ_ROWS, find_matches, located, word_spans

    base, path, skip = unit
    index = np.load(scan.index_path)
    out, row = [], 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=["text"]):
        texts = batch.column("text").to_pylist()
        for d, matches in find_matches(texts, scan.n, index["hashes"], index["items"]).items():
            if skip is None or not skip[row + d]:
                out += [(m.item, base + row + d, where)
                        for m, where in zip(matches, located(texts[d], word_spans(texts[d]), matches, scan.n))]
        row += batch.num_rows
    return out


def _texts_at(parts: list[Path], offsets: list[int], positions: np.ndarray) -> list[str]:
    """The texts of own documents at ``positions`` (sorted), read part by part."""
    texts = []
    for i, path in enumerate(parts):
        rows = positions[(positions >= offsets[i]) & (positions < offsets[i + 1])] - offsets[i]
        if len(rows):
            texts += pq.read_table(path, columns=["text"]).column("text").take(pa.array(rows)).to_pylist()
    return texts


def _candidates(order: np.ndarray, cl: Clusters, k: int) -> np.ndarray:
    """The first ``k`` documents in rank order with every member of their clusters (sorted positions):
    a cluster is held out whole, so each of its members must be checked."""
    roots = set(cl.root[order[:k]].tolist())
    return np.flatnonzero(np.isin(cl.root, list(roots)))


def ngram_clean(ctx: StageRun, parts: list[Path], offsets: list[int], other_parts: list[tuple[Path, int]],
                order: np.ndarray, cl: Clusters, tokens: np.ndarray, want: Target,
                executor: Executor) -> tuple[np.ndarray, int, Clusters, list[tuple], int]:
    """The split of a source whose held-out documents are an eval set: besides near-duplicates, a
    candidate sharing a normalised n-gram (decontamination's) with any document that stays in train,
    in this source or another, stays in train, and candidates sharing one go to the same side. Only
    candidates are indexed (the first documents in rank order, doubled until the target is met),
    so memory follows the held-out size, not the source's; every other document is scanned once
    per round. An n-gram in more than ``max_items_per_ngram`` candidates is too common to count."""
    from corpusmix.stages.eval_index import build_index

    d = ctx.loaded.spec.decontamination
    n_own = len(cl.root)
    other_offsets = np.cumsum([n_own, *(rows for _, rows in other_parts)]).tolist()
    need = max(want.documents, int(np.searchsorted(np.cumsum(tokens[order]), want.tokens)) + 1)
    k = min(n_own, 2 * need + 32)
    scratch = ctx.staging / SCRATCH
    scratch.mkdir(exist_ok=True)
    while True:
        cand = _candidates(order, cl, k)
        index, _ = build_index(pa.table({"text": _texts_at(parts, offsets, cand)}), d.ngram, d.max_items_per_ngram)
        hashes, items = index.column("hash").to_numpy(), index.column("item").to_numpy()
        np.savez(scratch / "candidates.npz", hashes=hashes, items=items)
        is_cand = np.zeros(n_own, bool)
        is_cand[cand] = True
        units = [(offsets[i], str(p), is_cand[offsets[i]:offsets[i + 1]]) for i, p in enumerate(parts)]
        units += [(other_offsets[j], str(p), None) for j, (p, _) in enumerate(other_parts)]
        hits = [h for rows in executor.map(functools.partial(_links_in_part, _LinkScan(
            str(scratch / "candidates.npz"), d.ngram)), units) for h in rows]
        starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
        pairs = [(int(cand[items[a]]), int(cand[b])) for a, z in zip(starts, [*starts[1:], len(hashes)])
                 for b in items[a + 1:z]]
        tied: dict[int, int] = {}
        for item, pos, _ in sorted(hits, key=lambda h: (h[0], h[1])):
            tied.setdefault(int(cand[item]), pos)
        linked = merged(cl, pairs, tied)
        held, passed = choose(order[np.isin(order, cand)], linked, tokens, want)
        short = held.sum() < want.documents or tokens[held].sum() < want.tokens
        ctx.say(f"{len(cand)} held-out candidate(s) checked for shared {d.ngram}-grams: {len(tied)} share one with "
                f"a document staying in train, {len(pairs)} link(s) among them" + (", widening" if short and
                                                                                    len(cand) < n_own else ""))
        if not short or len(cand) >= n_own:
            shutil.rmtree(scratch)
            return held, passed, linked, [(int(cand[i]), pos, where) for i, pos, where in hits], len(cand)
        k = min(n_own, 2 * k)


def _write_part(staging: str, part_bytes: int, item: tuple[int, str, np.ndarray]) -> tuple[list[dict], list[dict]]:
    """Worker: one quality part's documents into its train parts ``part-NNNNN-*`` and held-out
    parts ``heldout-NNNNN-*`` (names from the input part only, never the worker)."""
    index, path, held = item
    if not held.any():  # nothing held out here (or the split is off): the part is its own train part
        return [link_part(Path(path), Path(staging), f"part-{index:05d}-000.parquet")], []
    train = PartWriter(Path(staging), f"part-{index:05d}", DOCS_SCHEMA, part_bytes)
    valid = PartWriter(Path(staging), f"heldout-{index:05d}", DOCS_SCHEMA, part_bytes)
    pos = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS):
        table = pa.Table.from_batches([batch]).cast(DOCS_SCHEMA)
        mask = pa.array(held[pos:pos + table.num_rows])
        pos += table.num_rows
        kept, out = table.filter(pc.invert(mask)), table.filter(mask)
        validate_table(kept, QUALITY_DOCUMENTS)
        validate_table(out.cast(ARROW_SCHEMAS["heldout_documents"]), HELDOUT_DOCUMENTS)
        train.write(kept)
        valid.write(out)
    return train.close(), valid.close()


def _split_parts(parts: list[Path], offsets: list[int], held: np.ndarray, staging: Path, part_bytes: int,
                 executor: Executor) -> tuple[list[dict], list[dict]]:
    items = [(i, str(p), held[offsets[i]:offsets[i + 1]]) for i, p in enumerate(parts)]
    train, valid = [], []
    for t, v in executor.map(functools.partial(_write_part, str(staging), part_bytes), items):
        train += t
        valid += v
    return train, valid


def heldout_config(loaded: LoadedSpec, source_name: str) -> dict:
    """The declaration (defaults filled in), dedup's MinHash settings and the other sources read."""
    decl = loaded.source(source_name).heldout
    return {"source": source_name, "heldout": decl.model_dump(mode="json") if decl else False,
            "target": list(decl.target) if decl else None,
            "near": near_settings(loaded.spec.dedup).model_dump(mode="json") if decl else None,
            "others": [s for s in loaded.source_names if s != source_name] if decl else [],
            "eval_set": _eval_config(loaded, source_name) if decl else None}


def _eval_config(loaded: LoadedSpec, source_name: str) -> dict | None:
    """When the split is an eval set: its name and the n-gram rule that keeps it out of train."""
    e = loaded.spec.heldout_eval_set(source_name)
    d = loaded.spec.decontamination
    return {"name": e.name, "ngram": d.ngram, "max_items_per_ngram": d.max_items_per_ngram} if e else None


def heldout_inputs(loaded: LoadedSpec, source_name: str) -> list[str]:
    """This source's quality version and the other sources' dedup versions (what the split reads),
    not the cross-source version: a cross-source setting that changes no survivor rebuilds nothing."""
    versions = [require_manifest(loaded.manifest_root, "quality", source_name)[1]["version"]]
    if loaded.spec.decontaminates():
        versions.append(require_manifest(loaded.manifest_root, "eval_index", None)[1]["version"])
    if loaded.source(source_name).heldout:
        versions += [require_manifest(loaded.manifest_root, "dedup", s)[1]["version"]
                     for s in loaded.source_names if s != source_name]
    return versions


def build_heldout_split(ctx: StageRun) -> Built:
    loaded, source = ctx.loaded, ctx.partition
    decl = loaded.source(source).heldout
    up_path, up = ctx.upstream("quality")
    own = [o for o in up["outputs"] if o["kind"] == "documents"]
    parts = [loaded.storage_root / o["path"] for o in own]
    offsets = [0, *np.cumsum([o["rows"] for o in own]).tolist()]
    n_own = offsets[-1]
    others = [(s, *ctx.upstream("dedup", s)) for s in loaded.source_names if s != source] if decl else []
    other_parts = [loaded.storage_root / o["path"] for _, _, m in others for o in m["outputs"]
                   if o["kind"] == "documents"]
    want = target(decl, n_own)
    eval_set = loaded.spec.heldout_eval_set(source) if decl else None
    ctx.say(f"{n_own} documents; held-out target {want.documents} documents"
            + (f", {want.tokens:,} tokens" if want.tokens else "") + (" (capped at half)" if want.capped else "")
            + (f"; near-duplicates checked against {len(others)} other source(s)' dedup survivors" if decl else ""))
    active = bool(decl) and n_own > 0 and (want.documents > 0 or want.tokens > 0)
    with ctx.executor(len(parts) + len(other_parts)) as executor:
        if active:
            idx, res = find_duplicates(parts + other_parts, near_settings(loaded.spec.dedup), ctx.say, executor,
                                       ctx.staging / SCRATCH, _published(loaded, others, len(parts)))
            shutil.rmtree(ctx.staging / SCRATCH)
            ids = idx.ids.to_pylist()
            sizes, tokens = idx.sizes, idx.tokens
            removed, pairs = res.removed, (res.candidate_pairs, res.verified_pairs)
        else:
            table = pa.concat_tables([pq.read_table(p, columns=["doc_id", "n_bytes", "n_tokens"]) for p in parts]
                                     or [DOCS_SCHEMA.empty_table().select(["doc_id", "n_bytes", "n_tokens"])])
            ids = table.column("doc_id").to_pylist()
            sizes = np.asarray(table.column("n_bytes").to_numpy(), np.int64)
            tokens = np.asarray(table.column("n_tokens").to_numpy(), np.int64)
            removed, pairs = {}, (0, 0)
        rank = ranks(decl.seed if decl else 0, source, ids[:n_own])
        cl = clusters(n_own, removed)
        order = np.argsort(rank, kind="stable")
        links: list[tuple] = []
        checked = 0
        if active and eval_set:
            other_rows = [o["rows"] for _, _, m in others for o in m["outputs"] if o["kind"] == "documents"]
            held, passed, cl, links, checked = ngram_clean(ctx, parts, offsets, list(zip(other_parts, other_rows)),
                                                           order, cl, tokens[:n_own], want, executor)
        else:
            held, passed = choose(order, cl, tokens[:n_own], want)
        train_parts, valid_parts = _split_parts(parts, offsets, held, ctx.staging, loaded.spec.ingest.part_bytes,
                                                executor)
    name_of = _outside_namer(source, others, n_own, ids)
    split = _split_table(source, ids, rank, cl, held, sizes, tokens, n_own, name_of)
    validate_table(split, HELDOUT_SPLIT)
    split_out = write_parquet(split, ctx.staging / "split.parquet")
    tables = [("heldout_split", split_out)]
    if eval_set:
        link_table = pa.Table.from_pylist([{"source": source, "doc_id": ids[c], "other": name_of(p), **where}
                                           for c, p, where in links], schema=ARROW_SCHEMAS["heldout_links"])
        validate_table(link_table, HELDOUT_LINKS)
        tables.append(("heldout_links", write_parquet(link_table, ctx.staging / "links.parquet")))
    h_docs, h_bytes, h_tok = int(held.sum()), int(sizes[:n_own][held].sum()), int(tokens[:n_own][held].sum())
    b_in, t_in = int(sizes[:n_own].sum()), int(tokens[:n_own].sum())
    built = documents_built(
        ctx, (up_path, up), train_parts, tables, docs=(n_own, n_own - h_docs),
        text_bytes=(b_in, b_in - h_bytes), tokens=(t_in, t_in - h_tok),
        summary=f"{h_docs} document(s), {h_tok:,} tokens held out; {n_own - h_docs} to train")
    built.outputs += [output_ref(p, "heldout_documents", p["tokens"]) for p in valid_parts]
    built.inputs += [ref for _, path, m in others for ref in input_refs(loaded, path, m)]
    built.reasons = {"heldout": {"records": h_docs, "bytes": h_bytes, "tokens": h_tok}} if h_docs else {}
    short = h_docs < want.documents or h_tok < want.tokens
    built.counts |= {"heldout_documents": h_docs, "heldout_tokens": h_tok, "heldout_bytes": h_bytes,
                     "clusters_moved_whole": sum(1 for r, m in cl.members.items() if held[r] and len(m) > 1),
                     "documents_with_duplicate_elsewhere": int(sum(len(cl.members[r]) for r in cl.outside)),
                     "candidates_passed_over": passed, "candidate_pairs": pairs[0], "accepted_pairs": pairs[1]}
    if eval_set:
        built.counts |= {"ngram_candidates": checked, "ngram_links": len(links),
                         "candidates_sharing_ngram_in_train": len({c for c, _, _ in links})}
    built.details = {"declared": decl.model_dump(mode="json") if decl else False,
                     "target": {"documents": want.documents, "tokens": want.tokens, "capped": want.capped,
                                "met": not short},
                     "heldout_document_share": h_docs / n_own if n_own else None,
                     "eval_set": eval_set.name if eval_set else None,
                     "heldout_token_share": h_tok / t_in if t_in else None,
                     "eval_items_in_heldout": _eval_items_in(loaded, [ctx.staging / p["name"] for p in valid_parts])}
    if short:
        ctx.say(f"WARNING: held out {h_docs} documents / {h_tok:,} tokens, short of the target "
                f"{want.documents} / {want.tokens:,}: not enough documents without a near-duplicate elsewhere")
    return built


def _published(loaded: LoadedSpec, others: list[tuple[str, Path, dict]], first: int) -> dict[int, Hashed]:
    """The other sources' dedup survivors whose MinHash signatures and exact keys dedup published (same
    settings: ``near_settings`` is dedup's), by their position in the split's part list (from ``first``):
    their pass 1 reads those instead of hashing the text again, once per source partition."""
    hashed, pos = {}, first
    for _, _, m in others:
        files = {o["path"].rsplit("/", 1)[-1]: loaded.storage_root / o["path"] for o in m["outputs"]}
        for o in (o for o in m["outputs"] if o["kind"] == "documents"):
            stem = o["path"].rsplit("/", 1)[-1].removesuffix(".parquet")
            sig, keys = files.get(f"minhash-{stem}.npy"), files.get(f"exactkey-{stem}.npy")
            if sig is not None and keys is not None and sig.is_file() and keys.is_file():  # else: hash the text
                hashed[pos] = Hashed(sig, keys)
            pos += 1
    return hashed


def _eval_items_in(loaded: LoadedSpec, parts: list[Path]) -> list[dict]:
    """Eval items found in the held-out text (the held-out side is decontaminated with the rest,
    so this checks that: expected empty, unless remove_span left a match's remnant)."""
    if not loaded.spec.eval_sets:
        return []
    from corpusmix.stages.decontaminate import READ_ROWS, find_matches
    from corpusmix.stages.eval_index import load_index

    hashes, items, (sets, item_ids) = load_index(loaded)
    found = []
    for part in parts:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=READ_ROWS, columns=["doc_id", "text"]):
            ids = batch.column("doc_id").to_pylist()
            for d, matches in find_matches(batch.column("text").to_pylist(), loaded.spec.decontamination.ngram,
                                           hashes, items).items():
                found += [{"doc_id": ids[d], "eval_set": sets[m.item], "item_id": item_ids[m.item],
                           "ngrams_matched": m.count} for m in matches]
    return found


def _outside_namer(source: str, others: list[tuple[str, Path, dict]], n_own: int, ids: list[str]):
    """``source:doc_id`` of a position: this source's documents first, then the others' parts in spec order."""
    bounds, names, pos = [n_own], [source], n_own
    for name, _, m in others:
        pos += sum(o["rows"] for o in m["outputs"] if o["kind"] == "documents")
        bounds.append(pos)
        names.append(name)

    def name_of(p: int) -> str:
        return f"{names[int(np.searchsorted(bounds, p, side='right'))]}:{ids[p]}"

    return name_of


def _split_table(source: str, ids: list[str], rank: np.ndarray, cl: Clusters, held: np.ndarray, sizes: np.ndarray,
                 tokens: np.ndarray, n_own: int, outside_name) -> pa.Table:
    """One row per own document, in input order."""
    first_ranked = {r: min(m, key=lambda p: rank[p]) for r, m in cl.members.items()}
    roots = cl.root.tolist()
    size = [len(cl.members.get(r, (r,))) for r in roots]
    table = pa.Table.from_arrays([
        pa.array([source] * n_own, pa.string()),
        pa.array(ids[:n_own], pa.string()),
        pa.array(np.where(held, "heldout", "train").tolist() if n_own else [], pa.string()),
        pa.array(rank, pa.int64()),
        pa.array([ids[first_ranked[r]] if s > 1 else None for r, s in zip(roots, size)], pa.string()),
        pa.array(size, pa.int64()),
        pa.array([outside_name(cl.outside[r]) if r in cl.outside else None for r in roots], pa.string()),
        pa.array(sizes[:n_own], pa.int64()),
        pa.array(tokens[:n_own], pa.int64()),
    ], schema=SPLIT_SCHEMA)
    return table


def heldout_upstream(spec: Spec) -> tuple[str, ...]:
    """Quality's documents and the cross-source drop list, and the eval index where the build has one
    (the held-out text is checked against the eval sets)."""
    return ("quality", "cross_source_dedup") + (("eval_index",) if spec.decontaminates() else ())


STAGE = Stage(name=NAME, scope="source", upstream=heldout_upstream, config=heldout_config, active=Spec.holds_out,
              inputs=heldout_inputs, build=build_heldout_split, module=__name__)
