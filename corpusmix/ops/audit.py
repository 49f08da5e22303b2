"""Audits over a build with DuckDB: why a document was dropped, where a document went, what
changed between two corpus versions, and raw SQL over every table the stages wrote.

The views (over the current manifests' outputs, read in place, nothing copied) are ``VIEWS``;
their columns come from the same schemas ``connect`` builds them with (``view_columns``), and
``corpusmix audit sql --help`` prints both, so the help cannot drift from the code.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa

from corpusmix.core.manifest import iter_manifests, read_manifest
from corpusmix.core.spec import LoadedSpec
from corpusmix.core.sql import literal, literals
from schemas.tables import ARROW_SCHEMAS

# What each view holds, in the order the help lists them (``tests/test_audit.py`` checks that these
# are exactly the views ``connect`` creates, with the columns ``view_columns`` says).
VIEWS = {
    "manifests": "one row per manifest: asset, partition, version, counts, rates",
    "outputs": "one row per output file a manifest names",
    "quarantine": "ingest: records that were not documents, with reason and detail",
    "traces": "trace validation: every reasoning trace's verdict, answer found, answer expected, reason, detail",
    "duplicates": "dedup: removed documents with their cluster and representative",
    "cross_source": "cross-source dedup: documents another source already holds",
    "contamination": "decontaminate: every (document, eval item) match: first n-gram, offset, action",
    "rules": "quality: each source's rules as built, their parameters and thresholds",
    "rejections": "quality: documents failing rules, with every rule and every measured value (JSON)",
    "split": "held-out split: every kept document's side (train or heldout), rank, cluster, duplicate elsewhere",
    "heldout_links": "held-out split as an eval set: candidates kept in train by an n-gram shared with another document",
    "tokenized": "tokenize: kept documents, sequence index and token count",
    "lineage": "mixed shards: token ranges (stream offset, shard, phase, source, doc_id, epoch, offset)",
}

MANIFESTS_SCHEMA = pa.schema([
    ("asset", pa.string()), ("partition", pa.string()), ("version", pa.string()), ("content_hash", pa.string()),
    ("finished_at", pa.string()), ("documents_in", pa.int64()), ("documents_out", pa.int64()),
    ("tokens_in", pa.int64()), ("tokens_out", pa.int64()), ("document_acceptance", pa.float64()),
    ("token_acceptance", pa.float64())])
OUTPUTS_SCHEMA = pa.schema([
    ("asset", pa.string()), ("partition", pa.string()), ("kind", pa.string()), ("path", pa.string()),
    ("rows", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string())])
RULES_SCHEMA = pa.schema([("source", pa.string()), ("rule", pa.string()), ("parameters", pa.string()),
                          ("threshold", pa.string())])

# view -> (stage, output kind, schema of its table)
TABLE_KINDS = {"quarantine": ("ingest", "quarantine", "quarantine"),
               "traces": ("trace_validation", "trace_verdicts", "trace_verdicts"),
               "duplicates": ("dedup", "duplicates", "duplicates"),
               "cross_source": ("cross_source_dedup", "cross_source_duplicates", "duplicates"),
               "contamination": ("decontaminate", "contamination", "contamination"),
               "rejections": ("quality", "rejections", "rejections"),
               "split": ("heldout_split", "heldout_split", "heldout_split"),
               "heldout_links": ("heldout_split", "heldout_links", "heldout_links"),
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
    con.register("manifests_t", pa.Table.from_pylist(rows, schema=MANIFESTS_SCHEMA))
    con.execute("CREATE VIEW manifests AS SELECT * FROM manifests_t")
    outs = [{"asset": m["asset"], "partition": m["partition"], "kind": o["kind"],
             "path": str(loaded.storage_root / o["path"]), "rows": o["rows"], "bytes": o["bytes"],
             "sha256": o["sha256"]} for m in ms for o in m["outputs"]]
    con.register("outputs_t", pa.Table.from_pylist(outs, schema=OUTPUTS_SCHEMA))
    con.execute("CREATE VIEW outputs AS SELECT * FROM outputs_t")
    rules = [{"source": m["partition"], "rule": name, "parameters": orjson.dumps(params).decode(),
              "threshold": threshold_text(params)}
             for m in ms if m["asset"] == "quality" for name, params in (m.get("details") or {}).get("rules", {}).items()]
    con.register("rules_t", pa.Table.from_pylist(rules, schema=RULES_SCHEMA))
    con.execute("CREATE VIEW rules AS SELECT * FROM rules_t")
    for view, (asset, kind, table) in TABLE_KINDS.items():
        files = [o["path"] for o in outs if o["asset"] == asset and o["kind"] == kind]
        if files:
            # tokenized tables carry no source column: add it from the manifest partition
            part = {o["path"]: o["partition"] for o in outs if o["asset"] == asset and o["kind"] == kind}
            if view == "tokenized":
                selects = " UNION ALL ".join(
                    f"SELECT {literal(part[f])} AS source, * FROM read_parquet({literal(f)})" for f in files)
                con.execute(f"CREATE VIEW {view} AS {selects}")
            else:
                con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{literals(files)}], union_by_name=true)")
        else:  # no such output in this build (nothing quarantined, a --source build): empty, with every column
            con.register(f"{view}_empty", _table_schema(table).empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_empty")
    return con


def _table_schema(table: str) -> pa.Schema:
    """A stage table's schema as its view shows it: with a ``source`` column first (tokenized
    tables have none on disk; the view adds it from the manifest's partition)."""
    schema = ARROW_SCHEMAS[table]
    return schema if "source" in schema.names else schema.insert(0, pa.field("source", pa.string()))


def view_columns() -> dict[str, list[str]]:
    """Every view and its columns, from the schemas ``connect`` uses (no DuckDB, no build needed:
    what ``corpusmix audit sql --help`` prints)."""
    fixed = {"manifests": MANIFESTS_SCHEMA, "outputs": OUTPUTS_SCHEMA, "rules": RULES_SCHEMA}
    return {v: (fixed[v] if v in fixed else _table_schema(TABLE_KINDS[v][2])).names for v in VIEWS}


def views_help(width: int = 100) -> str:
    """The views and their columns as help text."""
    lines = []
    for view, columns in view_columns().items():
        lines.append(f"  {view:13} {VIEWS[view]}")
        lines += textwrap.wrap(", ".join(columns), width, initial_indent=" " * 16, subsequent_indent=" " * 16)
    return "\n".join(lines)


# --------------------------------------------------------------------------- quality thresholds

def bounds(params: dict) -> tuple[float | None, float | None]:
    """The (lower, upper) bound a quality rule's parameters put on its measured value.

    Every rule of ``corpusmix.stages.quality_rules`` passes when ``min_*`` <= value <= ``max_*``
    for the parameters it has; a rule with neither (lorem ipsum, policy text, a curly brace, an
    auto-generated marker) passes when what it counts is absent, i.e. the value is 0. Other
    parameters (``n``, ``blank_lines``, ``head_lines``) say what is measured, not the bound.
    """
    lo = [v for k, v in params.items() if k.startswith("min_")]
    hi = [v for k, v in params.items() if k.startswith("max_")]
    if not lo and not hi:
        return 0.0, 0.0
    return (float(lo[0]) if lo else None), (float(hi[0]) if hi else None)


def violates(value: float, params: dict) -> bool:
    """Does a measured value break the rule's bounds (what the rule decided, re-derived)?"""
    lo, hi = bounds(params)
    return (lo is not None and value < lo) or (hi is not None and value > hi)


def _num(value) -> str:
    """A measured value or a bound as a person reads it: integers whole, others to 4 digits."""
    if value is None:
        return "?"
    value = float(value)
    if math.isfinite(value) and value.is_integer():
        return str(int(value))
    return f"{value:.4g}"


def threshold_text(params: dict) -> str:
    """The bound as text: ">= 2", "<= 0.3", "in [50, 100000]", "== 0"."""
    lo, hi = bounds(params)
    if lo is not None and hi is not None:
        return f"== {_num(lo)}" if lo == hi else f"in [{_num(lo)}, {_num(hi)}]"
    return f">= {_num(lo)}" if lo is not None else f"<= {_num(hi)}"



def _rows(con, query: str, params: list) -> list[dict]:
    cur = con.execute(query, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


# What each table says about one document: the columns to read, why it left (or stayed), the detail.
_FINDINGS = {
    "quarantine": ("source, reason, detail, file, record_no", lambda r: f"quarantined: {r['reason']}",
                   lambda r: f"{r['detail']} ({r['file']} record {r['record_no']})"),
    "traces": ("source, kept, reason, problem_id, answer, expected, judged_by, detail",
               lambda r: ("trace validated" if r["kept"] else f"trace rejected: {r['reason']}")
               + f" (problem {r['problem_id']}, judged by {r['judged_by'] or 'nothing'})",
               lambda r: f"answer {r['answer']!r}, expected {r['expected']!r}"
                         + (f"; {r['detail']}" if r["detail"] else "")),
    "duplicates": ("source, kind, representative_doc_id, estimated_jaccard, true_jaccard",
                   lambda r: f"{r['kind']} duplicate",
                   lambda r: f"of {r['representative_doc_id']} (estimated Jaccard {r['estimated_jaccard']}, "
                             f"true {r['true_jaccard']})"),
    "cross_source": ("source, kind, representative_doc_id", lambda r: f"{r['kind']} duplicate in another source",
                     lambda r: f"kept as {r['representative_doc_id']}"),
    "contamination": ('source, eval_set, item_id, ngram, "offset", ngrams_matched, action',
                      lambda r: f"contaminated by {r['eval_set']} item {r['item_id']}: "
                                + ("dropped" if r["action"] == "dropped" else "matched span cut out"),
                      lambda r: f"{r['ngrams_matched']} shared n-gram(s), the first at character {r['offset']}: "
                                f"\"{r['ngram']}\""),
    "rejections": ('source, failed_rules, "values"', lambda r: "failed " + ", ".join(r["failed_rules"]),
                   lambda r: "; ".join(f["text"] for f in r["failed"])),
    "split": ("source, split, rank, cluster_id, duplicate_elsewhere",
              lambda r: "held out (evaluation only, never trained on)" if r["split"] == "heldout" else "train side",
              lambda r: f"rank {r['rank']} of the seeded order"
                        + (f", cluster of {r['cluster_id']}" if r["cluster_id"] else "")
                        + (f", near-duplicate of {r['duplicate_elsewhere']} keeps it in train"
                           if r["duplicate_elsewhere"] else "")),
    "tokenized": ("source, sequence, n_tokens", lambda r: "kept",
                  lambda r: f"sequence {r['sequence']} of the token store, {r['n_tokens']} tokens"),
}


def rule_verdicts(failed_rules: list[str], values: dict[str, float], rules: dict[str, dict]) -> tuple[list[dict], dict]:
    """A rejection as a person reads it: every failed rule with its measured value and the bound it
    broke (``rules``: the source's rules and parameters as the build used them), and the values of
    the rules it passed. A cross-source duplicate has no measured value: it names where to look."""
    from corpusmix.stages.quality import CROSS

    failed = []
    for name in failed_rules:
        if name == CROSS:
            failed.append({"rule": name, "value": None, "threshold": None,
                           "text": f"{name}: another source holds the same text (see the cross_source view)"})
            continue
        value, params = values.get(name), rules.get(name)
        bound = threshold_text(params) if params is not None else "? (rule not in this build's quality manifest)"
        failed.append({"rule": name, "value": value, "threshold": bound,
                       "text": f"{name}: {_num(value)} vs {bound}"})
    passed = {k: v for k, v in values.items() if k not in failed_rules}
    return failed, passed


def why(con, doc_id: str, source: str | None = None) -> list[dict]:
    """Every place a document left the corpus (or that it was kept), in build order. A quality
    rejection also carries ``failed`` (rule, value, threshold, text) and ``passed`` (rule: value)."""
    from corpusmix.pipeline import STAGES

    order = [s.name for s in STAGES]
    src = "" if source is None else " AND source = ?"
    p = [doc_id] + ([source] if source else [])
    found = []
    for view in sorted(_FINDINGS, key=lambda v: order.index(TABLE_KINDS[v][0])):
        columns, reason, detail = _FINDINGS[view]
        for r in _rows(con, f"SELECT {columns} FROM {view} WHERE doc_id = ?{src}", p):
            extra = {}
            if view == "rejections":
                rules = {n: orjson.loads(j) for n, j in con.execute(
                    "SELECT rule, parameters FROM rules WHERE source = ?", [r["source"]]).fetchall()}
                r["failed"], passed = rule_verdicts(list(r["failed_rules"]), orjson.loads(r["values"]), rules)
                extra = {"failed": r["failed"], "passed": passed}
            found.append({"stage": TABLE_KINDS[view][0], "source": r["source"], "why": reason(r),
                          "detail": detail(r), **extra})
    return found


def render_why(found: list[dict], width: int = 100) -> str:
    """``why``'s findings as text: one line per stage, then every failed rule on its own line as
    "rule: value vs threshold" (never cut), and the passing values in a wrapped summary."""
    lines = []
    for f in found:
        if "failed" not in f:
            lines.append(f"{f['stage']} [{f['source']}]: {f['why']}: {f['detail']}")
            continue
        lines.append(f"{f['stage']} [{f['source']}]: rejected, failed {len(f['failed'])} rule(s):")
        lines += [f"  {x['text']}" for x in f["failed"]]
        if f["passed"]:
            summary = ", ".join(f"{k}={_num(v)}" for k, v in f["passed"].items())
            lines += textwrap.wrap(f"passed {len(f['passed'])}: {summary}", width, initial_indent="  ",
                                   subsequent_indent="    ", break_on_hyphens=False)
    return "\n".join(lines)


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
    # kept = either side of the held-out split: a document that only changed sides was not added or removed
    kept_q = "SELECT source, doc_id FROM tokenized UNION SELECT source, doc_id FROM split"
    kept_old, kept_new = set(old.execute(kept_q).fetchall()), set(new.execute(kept_q).fetchall())
    by_source: dict[str, dict[str, list[str]]] = {}
    for label, rows in (("added", kept_new - kept_old), ("removed", kept_old - kept_new)):
        for s, d in sorted(rows):
            by_source.setdefault(s, {"added": [], "removed": []})[label].append(d)
    return {"changed": stages, "documents": by_source}
