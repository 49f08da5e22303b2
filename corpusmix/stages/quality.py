"""Quality-filter stage: the source's rules on every surviving document of dedup.

Reads the source's decontaminated dedup parts, drops what the cross-source step found in a
higher-ranked source (reason ``cross_source_duplicate``), and evaluates every
rule of the source (``quality_rules.resolve_rules``) on every other document.
A document that fails any rule is rejected with all the rules it failed, the
values measured and the fraction of rules it passes.

The funnel is additive: a rejected document is charged to one row, its first
failed rule in the order of the spec's rules (a cross-source duplicate is
judged by no rule), so documents in - the rows' sums = documents out, for
tokens too. Per rule it also reports, as separate labelled counts, every
document that failed it and the documents it alone rejected; then the pairwise
overlap between rules and a deterministic audit sample of what each rejected.

Every document is judged on its own, so each dedup part is an independent
unit of work (``_filter_part``) for the spec's executor; the driver merges the
units' results in part order. Nothing a unit returns depends on which worker
ran it or when, and the audit sample is a bottom-k by a hash of the doc_id
(mergeable across units), so every backend writes the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import operator
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpusmix.core.manifest import input_refs, require_manifest
from corpusmix.core.parquet_io import PartWriter, write_parquet
from corpusmix.core.spec import LoadedSpec, Spec, canonical_hash
from corpusmix.core.stage import Built, Stage, StageRun, documents_built
from corpusmix.stages.quality_rules import evaluate, resolve_rules
from corpusmix.stages.trace_funnel import through_quality
from schemas.tables import ARROW_SCHEMAS, QUALITY_DOCUMENTS, REJECTIONS, validate_table

DOCS_SCHEMA = ARROW_SCHEMAS["quality_documents"]
REJ_SCHEMA = ARROW_SCHEMAS["rejections"]
CROSS = "cross_source_duplicate"
READ_BATCH_ROWS = 2048
AUDIT_SCHEMA = ARROW_SCHEMAS["quality_audit"]

AuditEntry = tuple[bytes, dict]  # (_sample_key(doc_id), {doc_id, value, head})


def _sample_key(doc_id: str) -> bytes:
    return hashlib.blake2b(doc_id.encode(), digest_size=8).digest()


def _k_smallest(k: int, *candidates: Iterable[AuditEntry]) -> list[AuditEntry]:
    """The ``k`` entries with the smallest sample keys, sorted by key.

    A bottom-k sample of a union is the bottom-k of the members' bottom-k samples,
    so merging per-batch or per-part samples gives the sample of one pass over all.
    """
    return heapq.nsmallest(k, itertools.chain(*candidates), key=operator.itemgetter(0))


@dataclass(frozen=True)
class _Filter:
    """What every unit of one source's quality run shares (picklable: units may run in other processes)."""

    source: str
    rules: dict[str, dict]
    drops: frozenset[str]  # doc_ids a higher-ranked source holds; small, so each unit gets the whole set
    audit_samples: int
    part_bytes: int
    staging: str


@dataclass
class _Tally:
    """What the stage counts, for one part or (added up in part order) for the whole source."""

    per_rule: dict[str, list[int]]  # rule -> FIELDS, rules in report order
    audit: dict[str, list[AuditEntry]]  # rule -> the bottom-k of what it rejected
    overlap: Counter = field(default_factory=Counter)  # (rule_a, rule_b) -> docs failing both
    n_in: int = 0
    bytes_in: int = 0
    tokens_in: int = 0
    n_out: int = 0
    bytes_out: int = 0
    tokens_out: int = 0
    # per rule: charged (the documents whose first failed rule it is: the additive funnel), then
    # every document failing it, then those it alone rejected
    FIELDS = ("records", "bytes", "tokens", "failed_records", "failed_tokens", "only_this_rule")

    @classmethod
    def empty(cls, rules: Iterable[str]) -> _Tally:
        keys = [*rules, CROSS]
        return cls(per_rule={r: [0] * len(cls.FIELDS) for r in keys}, audit={r: [] for r in keys})

    def add(self, other: _Tally, k: int) -> None:
        """Count ``other`` in too, keeping the audit sample at ``k`` per rule."""
        self.n_in += other.n_in
        self.bytes_in += other.bytes_in
        self.tokens_in += other.tokens_in
        self.n_out += other.n_out
        self.bytes_out += other.bytes_out
        self.tokens_out += other.tokens_out
        for r, counts in other.per_rule.items():
            self.per_rule[r] = [a + b for a, b in zip(self.per_rule[r], counts)]
        self.overlap.update(other.overlap)
        self.audit = {r: _k_smallest(k, v, other.audit[r]) for r, v in self.audit.items()}


@dataclass
class _PartResult:
    """What a unit hands back (small: its output files are already written)."""

    parts: list[dict]  # PartWriter.close() of this unit's kept documents
    rejections: pa.Table
    tally: _Tally


def _filter_part(flt: _Filter, item: tuple[int, str]) -> _PartResult:
    """Worker: judge every document of dedup part ``item`` = (index, path) and write the kept ones.

    The kept documents go to this unit's own parts, ``part-{index:05d}-NNN.parquet``
    (a PartWriter per unit, so a large input part still rolls over at
    ``part_bytes``; none when it keeps nothing): names depend on the input part
    only, never on the worker.
    """
    index, path = item
    rules, k = flt.rules, flt.audit_samples
    tally = _Tally.empty(rules)
    rejections: list[dict] = []
    writer = PartWriter(Path(flt.staging), f"part-{index:05d}", DOCS_SCHEMA, flt.part_bytes)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS):
        table = pa.Table.from_batches([batch])
        ids = table.column("doc_id").to_pylist()
        texts = table.column("text").to_pylist()
        sizes = table.column("n_bytes").to_pylist()
        tokens = table.column("n_tokens").to_pylist()
        keep = []
        candidates: dict[str, list[AuditEntry]] = {}
        for doc_id, text, size, n_tok in zip(ids, texts, sizes, tokens):
            tally.n_in += 1
            tally.bytes_in += size
            tally.tokens_in += n_tok
            if doc_id in flt.drops:
                failed, values = [CROSS], {}
            else:
                values, failed = evaluate(text, rules)
            keep.append(not failed)
            if not failed:
                tally.n_out += 1
                tally.bytes_out += size
                tally.tokens_out += n_tok
                continue
            score = 1.0 - len([f for f in failed if f != CROSS]) / max(1, len(rules))
            rejections.append({"source": flt.source, "doc_id": doc_id, "failed_rules": failed,
                               "values": orjson.dumps(values).decode(), "quality_score": score,
                               "n_bytes": size, "n_tokens": n_tok, "charged_to": failed[0]})
            charged = tally.per_rule[failed[0]]
            charged[0] += 1
            charged[1] += size
            charged[2] += n_tok
            for f in failed:
                tally.per_rule[f][3] += 1
                tally.per_rule[f][4] += n_tok
                if k:
                    candidates.setdefault(f, []).append(
                        (_sample_key(doc_id), {"doc_id": doc_id, "value": values.get(f), "head": text[:200]}))
            if len(failed) == 1:
                tally.per_rule[failed[0]][5] += 1
            for i, a in enumerate(failed):
                for b in failed[i + 1:]:
                    tally.overlap[(a, b)] += 1
        for f, cands in candidates.items():
            tally.audit[f] = _k_smallest(k, tally.audit[f], cands)
        kept = table.filter(pa.array(keep)).cast(DOCS_SCHEMA)
        validate_table(kept, QUALITY_DOCUMENTS)
        writer.write(kept)
    rej = pa.Table.from_pylist(rejections, schema=REJ_SCHEMA)
    validate_table(rej, REJECTIONS)
    return _PartResult(parts=writer.close(), rejections=rej, tally=tally)


def cross_source_drops(loaded: LoadedSpec, source: str) -> frozenset[str]:
    """The doc_ids of ``source`` that another, higher-ranked source already holds."""
    out = require_manifest(loaded.manifest_root, "cross_source_dedup", None)[1]["outputs"][0]
    path = loaded.storage_root / out["path"]
    st = path.stat()
    return _drops(str(path), out["sha256"], st.st_size, st.st_mtime_ns, source)


@functools.lru_cache(maxsize=16)
def _drops(path: str, sha256: str, size: int, mtime_ns: int, source: str) -> frozenset[str]:
    """Read once per drop-list version and source (the content key and the build of a quality
    partition both need it); the file's size and time are in the key, so a file damaged since
    is read again and fails, as an uncached read would."""
    table = pq.read_table(path, columns=["source", "doc_id"])
    return frozenset(table.filter(pc.equal(table.column("source"), source)).column("doc_id").to_pylist())


def quality_config(loaded: LoadedSpec, source_name: str) -> dict:
    """The source's resolved rules (defaults filled in: a changed default changes the key)."""
    source = loaded.source(source_name)
    return {"rules": resolve_rules(source.kind, source.filters.rules, source.filters.overrides),
            "source": source_name, "audit_samples": loaded.spec.quality.audit_samples}


def documents_from(spec: Spec) -> str:
    """The stage whose documents quality reads: decontaminate's, or dedup's when there is nothing
    to decontaminate against (decontaminate is then not part of the build)."""
    return "decontaminate" if spec.decontaminates() else "dedup"


def quality_upstream(spec: Spec) -> tuple[str, ...]:
    return documents_from(spec), "cross_source_dedup"


def quality_inputs(loaded: LoadedSpec, source_name: str) -> list[str]:
    """The documents' version and this source's own cross-source drop list, not the cross-source
    version: a change in another source that drops nothing here leaves this partition current."""
    up = require_manifest(loaded.manifest_root, documents_from(loaded.spec), source_name)[1]
    return [up["version"], canonical_hash(sorted(cross_source_drops(loaded, source_name)))]


def build_quality(ctx: StageRun) -> Built:
    """One unit per dedup part on the executor; the outputs are the same bytes whatever the
    backend or the number of workers."""
    loaded, source = ctx.loaded, ctx.partition
    up_path, up = ctx.upstream(documents_from(loaded.spec))
    drops = cross_source_drops(loaded, source)
    rules, k = ctx.config["rules"], ctx.config["audit_samples"]
    parts = [str(loaded.storage_root / o["path"]) for o in up["outputs"] if o["kind"] == "documents"]
    ctx.say(f"{len(rules)} rules ({', '.join(rules)}) on {up['counts']['documents_out']} documents in "
            f"{len(parts)} part(s); {len(drops)} cross-source duplicates to drop")
    total = _Tally.empty(rules)
    doc_parts: list[dict] = []
    rejections = [REJ_SCHEMA.empty_table()]  # concat_tables needs one, for a source without parts
    flt = _Filter(source=source, rules=rules, drops=drops, audit_samples=k,
                  part_bytes=loaded.spec.ingest.part_bytes, staging=str(ctx.staging))
    with ctx.executor(len(parts)) as executor:
        for i, res in enumerate(executor.map(functools.partial(_filter_part, flt), enumerate(parts)), 1):
            doc_parts += res.parts
            rejections.append(res.rejections)
            total.add(res.tally, k)
            ctx.say(f"part {i}/{len(parts)}: {res.tally.n_out}/{res.tally.n_in} kept")
    # one chunk, as one from_pylist would give: the file's bytes must not depend on the number of parts
    rej_out = write_parquet(pa.concat_tables(rejections).combine_chunks(), ctx.staging / "rejections.parquet")
    audit_rows = [{"rule": r, "doc_id": x["doc_id"], "value": x["value"], "head": x["head"]}
                  for r, v in total.audit.items() for _, x in v]
    audit_out = write_parquet(pa.Table.from_pylist(audit_rows, schema=AUDIT_SCHEMA), ctx.staging / "audit.parquet")
    built = documents_built(
        ctx, (up_path, up), doc_parts, [("rejections", rej_out), ("audit", audit_out)],
        docs=(total.n_in, total.n_out), text_bytes=(total.bytes_in, total.bytes_out),
        tokens=(total.tokens_in, total.tokens_out), summary="")
    built.counts["rejected"] = total.n_in - total.n_out
    built.reasons = {r: dict(zip(_Tally.FIELDS, counts)) for r, counts in total.per_rule.items() if counts[3]}
    built.details = {"rules": rules,
                     "overlap": [{"rule_a": a, "rule_b": b, "documents": n}
                                 for (a, b), n in sorted(total.overlap.items())],
                     "audit": {r: [x for _, x in v] for r, v in total.audit.items() if v}}
    if loaded.source(source).traces is not None:  # the trace funnel's last step: which traces passed quality
        tv_path, tv = require_manifest(loaded.manifest_root, "trace_validation", source)
        path = next(loaded.storage_root / o["path"] for o in tv["outputs"] if o["kind"] == "trace_verdicts")
        built.details["trace_funnel"] = through_quality(path, [ctx.staging / p["name"] for p in doc_parts])
        built.inputs += input_refs(loaded, tv_path, tv, kinds=("trace_verdicts",))
    built.summary = (f"{total.n_out}/{total.n_in} kept, token acceptance "
                     f"{built.rates['token_acceptance'] or 0:.4f}")
    return built


STAGE = Stage(name="quality", scope="source", upstream=quality_upstream, config=quality_config,
              inputs=quality_inputs, build=build_quality, module=__name__)
