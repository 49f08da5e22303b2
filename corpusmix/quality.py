"""Quality-filter stage: the source's rules on every surviving document of dedup.

Reads the source's dedup parts, drops what the cross-source step found in a
higher-ranked source (reason ``cross_source_duplicate``), and evaluates every
rule of the source (``quality_rules.resolve_rules``) on every other document.
A document that fails any rule is rejected with all the rules it failed and
the values measured; a kept document carries its quality score (the fraction
of its rules it passes, 1.0 for a kept one unless rules are advisory).

Reports per rule the documents and tokens it rejected, the documents it alone
rejected, the pairwise overlap between rules, and a deterministic audit sample
of what each rule rejected.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.tables import ARROW_SCHEMAS, QUALITY_DOCUMENTS, REJECTIONS, validate_table

from .dedup import cross_source_drops
from .manifest import content_key, downstream_manifest, require_manifest, up_to_date, utc_now, write_manifest
from .parquet_io import PartWriter, write_parquet
from .quality_rules import evaluate, resolve_rules
from .spec import LoadedSpec, canonical_hash
from .storage import discard_dir, new_staging_dir, publish_dir
from .tokencount import TokenEstimate

log = logging.getLogger("corpusmix.quality")

STAGE = "quality"
UPSTREAM = "dedup"
DOCS_SCHEMA = ARROW_SCHEMAS["quality_documents"]
REJ_SCHEMA = ARROW_SCHEMAS["rejections"]
CROSS = "cross_source_duplicate"
READ_BATCH_ROWS = 2048
AUDIT_SCHEMA = pa.schema([("rule", pa.string()), ("doc_id", pa.string()), ("value", pa.float64()),
                          ("head", pa.string())])  # a deterministic sample of what each rule rejected


def _sample_key(doc_id: str) -> bytes:
    return hashlib.blake2b(doc_id.encode(), digest_size=8).digest()


def quality_key(loaded: LoadedSpec, source_name: str) -> tuple[dict, str]:
    """Config and content key of a source's quality stage: its resolved rules, its dedup version and
    its own cross-source drop list (not the whole list: a change in another source that drops
    nothing here leaves this partition current)."""
    source = loaded.source(source_name)
    up = require_manifest(loaded.manifest_root, UPSTREAM, source_name)[1]
    stage_cfg = {"rules": resolve_rules(source.kind, source.filters.rules, source.filters.overrides),
                 "source": source_name, "audit_samples": loaded.spec.quality.audit_samples}
    drops = canonical_hash(sorted(cross_source_drops(loaded, source_name)))
    return stage_cfg, content_key(stage_cfg, [up["version"], drops])


def quality_source(loaded: LoadedSpec, source_name: str,
                   progress: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """Build the quality partition of one source; returns (manifest, manifest path)."""
    progress = progress or log.info
    source = loaded.source(source_name)
    started, t0 = utc_now(), time.perf_counter()
    up_path, up = require_manifest(loaded.manifest_root, UPSTREAM, source.name)
    stage_cfg, version = quality_key(loaded, source.name)
    rules, k = stage_cfg["rules"], stage_cfg["audit_samples"]
    if hit := up_to_date(loaded, STAGE, source.name, version, progress):
        return hit
    drops = cross_source_drops(loaded, source.name)
    est = TokenEstimate.from_manifest(up)
    parts = [loaded.storage_root / o["path"] for o in up["outputs"] if o["kind"] == "documents"]
    progress(f"[{source.name}] quality: {len(rules)} rules ({', '.join(rules)}) on "
             f"{up['counts']['documents_out']} documents; {len(drops)} cross-source duplicates to drop")
    per_rule: dict[str, list[int]] = {r: [0, 0, 0] for r in [*rules, CROSS]}  # docs, bytes, docs only this rule
    overlap: Counter = Counter()
    audit: dict[str, list[tuple[bytes, dict]]] = {r: [] for r in [*rules, CROSS]}
    n_in = bytes_in = n_out = bytes_out = 0
    out_parent = loaded.storage_root / STAGE / source.name
    staging = new_staging_dir(out_parent)
    try:
        writer = PartWriter(staging, "part-00000", DOCS_SCHEMA, loaded.spec.ingest.part_bytes)
        rejections: list[dict] = []
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=READ_BATCH_ROWS):
                table = pa.Table.from_batches([batch])
                ids = table.column("doc_id").to_pylist()
                texts = table.column("text").to_pylist()
                sizes = table.column("n_bytes").to_pylist()
                keep, scores = [], []
                for doc_id, text, size in zip(ids, texts, sizes):
                    n_in += 1
                    bytes_in += size
                    if doc_id in drops:
                        failed, values = [CROSS], {}
                    else:
                        values, failed = evaluate(text, rules)
                    score = 1.0 - len([f for f in failed if f != CROSS]) / max(1, len(rules))
                    keep.append(not failed)
                    scores.append(score)
                    if not failed:
                        n_out += 1
                        bytes_out += size
                        continue
                    rejections.append({"source": source.name, "doc_id": doc_id, "failed_rules": failed,
                                       "values": orjson.dumps(values).decode(), "quality_score": score,
                                       "n_bytes": size})
                    for f in failed:
                        per_rule[f][0] += 1
                        per_rule[f][1] += size
                        key = _sample_key(doc_id)
                        if k and (len(audit[f]) < k or key < audit[f][-1][0]):  # the k smallest keys, sorted
                            bisect.insort(audit[f], (key, {"doc_id": doc_id, "value": values.get(f),
                                                           "head": text[:200]}), key=lambda a: a[0])
                            del audit[f][k:]
                    if len(failed) == 1:
                        per_rule[failed[0]][2] += 1
                    for i, a in enumerate(failed):
                        for b in failed[i + 1:]:
                            overlap[(a, b)] += 1
                kept = table.filter(pa.array(keep)).append_column(
                    "quality_score", pa.array([s for s, kp in zip(scores, keep) if kp], pa.float64()))
                kept = kept.cast(DOCS_SCHEMA)
                validate_table(kept, QUALITY_DOCUMENTS)
                writer.write(kept, pc.sum(kept.column("n_bytes")).as_py() or 0)
        doc_parts = writer.close()
        rej = pa.Table.from_pylist(rejections, schema=REJ_SCHEMA)
        validate_table(rej, REJECTIONS)
        rej_out = write_parquet(rej, staging / "rejections.parquet")
        audit_rows = [{"rule": r, "doc_id": x["doc_id"], "value": x["value"], "head": x["head"]}
                      for r, v in audit.items() for _, x in v]
        audit_out = write_parquet(pa.Table.from_pylist(audit_rows, schema=AUDIT_SCHEMA), staging / "audit.parquet")
        publish_dir(staging, out_parent / version)
    except BaseException:
        discard_dir(staging)
        raise
    manifest = downstream_manifest(
        loaded=loaded, asset=STAGE, partition=source.name, version=version, stage_cfg=stage_cfg, upstream=up,
        upstream_path=up_path, doc_parts=doc_parts,
        tables=[("rejections.parquet", "rejections", rej_out), ("audit.parquet", "audit", audit_out)],
        docs=(n_in, n_out), text_bytes=(bytes_in, bytes_out), estimate=est, started=started, t0=t0)
    manifest["counts"]["rejected"] = n_in - n_out
    manifest["reasons"] = {r: {"records": d, "bytes": b, "tokens": est.tokens(b), "only_this_rule": only}
                           for r, (d, b, only) in per_rule.items() if d}
    manifest["details"] = {"rules": rules,
                           "overlap": [{"rule_a": a, "rule_b": b, "documents": n} for (a, b), n in sorted(overlap.items())],
                           "audit": {r: [x for _, x in v] for r, v in audit.items() if v}}
    manifest, path = write_manifest(loaded.manifest_root, manifest)
    progress(f"[{source.name}] quality done: {n_out}/{n_in} kept, token acceptance "
             f"{manifest['rates']['token_acceptance'] or 0:.4f}; manifest {path}")
    return manifest, path
