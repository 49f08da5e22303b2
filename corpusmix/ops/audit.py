"""Audits over a build with DuckDB: why a document was dropped, where a document went, what
changed between two corpus versions, and raw SQL over every table the stages wrote.

Views (over the current manifests' outputs, read in place, nothing copied):

================  ===============================================================
``manifests``      one row per manifest: asset, partition, version, counts, rates
``outputs``        one row per output file a manifest names
``quarantine``     ingest: records that were not documents, with reason and detail
``duplicates``     dedup: removed documents with their cluster and representative
``cross_source``   cross-source dedup: documents another source already holds
``rejections``     quality: documents failing rules, with every rule and value
``tokenized``      tokenize: kept documents, sequence index and token count
``lineage``        mixed shards: token ranges (stream offset, shard, phase, source,
                   doc_id, epoch, offset in the document)
================  ===============================================================
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from corpusmix.core.manifest import iter_manifests, read_manifest
from corpusmix.core.spec import LoadedSpec
from schemas.tables import ARROW_SCHEMAS

# view -> (stage, output kind, schema of its table)
TABLE_KINDS = {"quarantine": ("ingest", "quarantine", "quarantine"), "duplicates": ("dedup", "duplicates", "duplicates"),
               "cross_source": ("cross_source_dedup", "cross_source_duplicates", "duplicates"),
               "rejections": ("quality", "rejections", "rejections"),
               "tokenized": ("tokenize", "token_documents", "tokenized_documents"),
               "lineage": ("mixed_shards", "lineage", "lineage")}


def _manifests(root: Path) -> list[dict]:
    out = []
    for p in iter_manifests(root):
        try:
            out.append(read_manifest(p))
        except Exception:  # noqa: BLE001 - verify reports unreadable manifests; audits skip them
            continue
    return out


def connect(loaded: LoadedSpec, manifest_root: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views above over one set of manifests (default: the spec's)."""
    ms = _manifests(manifest_root or loaded.manifest_root)
    con = duckdb.connect()
    rows = [{"asset": m["asset"], "partition": m["partition"], "version": m["version"],
             "content_hash": m["content_hash"], "finished_at": m["finished_at"],
             "documents_in": m["counts"].get("documents_in"), "documents_out": m["counts"].get("documents_out"),
             "tokens_in": m["counts"].get("tokens_in"), "tokens_out": m["counts"].get("tokens_out"),
             "document_acceptance": m["rates"].get("document_acceptance"),
             "token_acceptance": m["rates"].get("token_acceptance")} for m in ms]
    con.register("manifests_t", pa.Table.from_pylist(rows, schema=pa.schema([
        ("asset", pa.string()), ("partition", pa.string()), ("version", pa.string()), ("content_hash", pa.string()),
        ("finished_at", pa.string()), ("documents_in", pa.int64()), ("documents_out", pa.int64()),
        ("tokens_in", pa.int64()), ("tokens_out", pa.int64()), ("document_acceptance", pa.float64()),
        ("token_acceptance", pa.float64())])))
    con.execute("CREATE VIEW manifests AS SELECT * FROM manifests_t")
    outs = [{"asset": m["asset"], "partition": m["partition"], "kind": o["kind"],
             "path": str(loaded.storage_root / o["path"]), "rows": o["rows"], "bytes": o["bytes"],
             "sha256": o["sha256"]} for m in ms for o in m["outputs"]]
    con.register("outputs_t", pa.Table.from_pylist(outs) if outs else pa.table({"path": pa.array([], pa.string())}))
    con.execute("CREATE VIEW outputs AS SELECT * FROM outputs_t")
    for view, (asset, kind, table) in TABLE_KINDS.items():
        files = [o["path"] for o in outs if o["asset"] == asset and o["kind"] == kind]
        if files:
            # tokenized tables carry no source column: add it from the manifest partition
            part = {o["path"]: o["partition"] for o in outs if o["asset"] == asset and o["kind"] == kind}
            if view == "tokenized":
                selects = " UNION ALL ".join(
                    f"SELECT {_q(part[f])} AS source, * FROM read_parquet({_q(f)})" for f in files)
                con.execute(f"CREATE VIEW {view} AS {selects}")
            else:
                listed = ", ".join(_q(f) for f in files)
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{listed}], union_by_name=true)")
        else:  # no such output in this build (nothing quarantined, a --source build): empty, with every column
            schema = ARROW_SCHEMAS[table]
            if "source" not in schema.names:
                schema = schema.insert(0, pa.field("source", pa.string()))
            con.register(f"{view}_empty", schema.empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_empty")
    return con


def _q(text: str) -> str:
    """A SQL string literal (DuckDB views cannot take parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _rows(con, query: str, params: list) -> list[dict]:
    cur = con.execute(query, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


# What each table says about one document: the columns to read, why it left (or stayed), the detail.
_FINDINGS = {
    "quarantine": ("source, reason, detail, file, record_no", lambda r: f"quarantined: {r['reason']}",
                   lambda r: f"{r['detail']} ({r['file']} record {r['record_no']})"),
    "duplicates": ("source, kind, representative_doc_id, estimated_jaccard, true_jaccard",
                   lambda r: f"{r['kind']} duplicate",
                   lambda r: f"of {r['representative_doc_id']} (estimated Jaccard {r['estimated_jaccard']}, "
                             f"true {r['true_jaccard']})"),
    "cross_source": ("source, kind, representative_doc_id", lambda r: f"{r['kind']} duplicate in another source",
                     lambda r: f"kept as {r['representative_doc_id']}"),
    "rejections": ('source, failed_rules, "values"', lambda r: "failed " + ", ".join(r["failed_rules"]),
                   lambda r: f"measured {r['values']}"),
    "tokenized": ("source, sequence, n_tokens", lambda r: "kept",
                  lambda r: f"sequence {r['sequence']} of the token store, {r['n_tokens']} tokens"),
}


def why(con, doc_id: str, source: str | None = None) -> list[dict]:
    """Every place a document left the corpus (or that it was kept), in build order."""
    from corpusmix.pipeline import STAGES

    order = [s.name for s in STAGES]
    src = "" if source is None else " AND source = ?"
    p = [doc_id] + ([source] if source else [])
    found = []
    for view in sorted(_FINDINGS, key=lambda v: order.index(TABLE_KINDS[v][0])):
        columns, reason, detail = _FINDINGS[view]
        for r in _rows(con, f"SELECT {columns} FROM {view} WHERE doc_id = ?{src}", p):
            found.append({"stage": TABLE_KINDS[view][0], "source": r["source"], "why": reason(r), "detail": detail(r)})
    return found


def where(con, doc_id: str, seq_len: int, source: str | None = None) -> list[dict]:
    """Where a document's tokens are in the mixed shards: shard, sequence, stream span, samples."""
    src = "" if source is None else " AND source = ?"
    return _rows(con, f"""
        SELECT source, epoch, phase, shard, sequence, stream_start, n_tokens, doc_offset, doc_tokens,
               stream_start // {int(seq_len)} AS first_sample, (stream_start + n_tokens - 1) // {int(seq_len)}
               AS last_sample
        FROM lineage WHERE doc_id = ?{src} ORDER BY stream_start""", [doc_id] + ([source] if source else []))


def diff(loaded: LoadedSpec, old_manifest_root: Path) -> dict:
    """Two corpus versions (two sets of manifests over the same storage root): per stage and
    source the counts before and after, and the kept documents added and removed per source."""
    old, new = connect(loaded, old_manifest_root), connect(loaded)
    q = "SELECT asset, coalesce(partition, '') AS p, version, documents_out, tokens_out FROM manifests"
    before = {(a, p): (v, d, t) for a, p, v, d, t in old.execute(q).fetchall()}
    after = {(a, p): (v, d, t) for a, p, v, d, t in new.execute(q).fetchall()}
    stages = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b != a:
            stages.append({"asset": key[0], "partition": key[1] or None,
                           "version": [b and b[0], a and a[0]], "documents_out": [b and b[1], a and a[1]],
                           "tokens_out": [b and b[2], a and a[2]]})
    kept_q = "SELECT source, doc_id FROM tokenized"
    kept_old, kept_new = set(old.execute(kept_q).fetchall()), set(new.execute(kept_q).fetchall())
    by_source: dict[str, dict[str, list[str]]] = {}
    for label, rows in (("added", kept_new - kept_old), ("removed", kept_old - kept_new)):
        for s, d in sorted(rows):
            by_source.setdefault(s, {"added": [], "removed": []})[label].append(d)
    return {"changed": stages, "documents": by_source}
