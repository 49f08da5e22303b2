"""corpusmix audit: why a document was dropped, where it went, what changed, and SQL (DuckDB)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from corpusmix.core.indexed import IndexedReader
from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.ops import audit
from corpusmix.pipeline import build_all
from corpusmix.trainer.loader import TokenStream

from .conftest import copy_build, write_spec

Q = {"progress": lambda m: None}


@pytest.fixture(scope="module")
def built(built_corpus, tmp_path_factory):
    return copy_build(built_corpus, tmp_path_factory.mktemp("audit"))


def test_why_names_the_stage_the_reason_and_the_values(built):
    con = audit.connect(built)
    rej = con.execute("SELECT doc_id, failed_rules, \"values\" FROM rejections WHERE source = 'web' LIMIT 1").fetchone()
    found = audit.why(con, rej[0])
    assert [f["stage"] for f in found] == ["quality"]
    assert found[0]["why"] == "failed " + ", ".join(rej[1])
    values = json.loads(rej[2])
    assert [f["rule"] for f in found[0]["failed"]] == list(rej[1])
    assert {f["rule"]: f["value"] for f in found[0]["failed"]} | found[0]["passed"] == values
    assert found[0]["detail"] == "; ".join(f"{f['rule']}: {audit._num(f['value'])} vs {f['threshold']}"
                                           for f in found[0]["failed"])
    dup = con.execute("SELECT doc_id, representative_doc_id, kind FROM duplicates WHERE source = 'dialogue' "
                      "LIMIT 1").fetchone()
    found = audit.why(con, dup[0], "dialogue")
    assert found[0]["stage"] == "dedup" and found[0]["why"] == f"{dup[2]} duplicate" and dup[1] in found[0]["detail"]
    rep = audit.why(con, dup[1], "dialogue")
    assert rep[-1]["stage"] == "tokenize" and rep[-1]["why"] == "kept"
    q = con.execute("SELECT doc_id, reason FROM quarantine WHERE doc_id IS NOT NULL LIMIT 1").fetchone()
    assert audit.why(con, q[0])[0] == {**audit.why(con, q[0])[0], "stage": "ingest", "why": f"quarantined: {q[1]}"}
    assert audit.why(con, "no-such-document") == []


def test_why_thresholds_agree_with_every_rule_decision(built):
    """On every rejection of the build, every failed rule's value breaks the bound ``audit`` shows
    for it and every passed rule's value keeps it: the thresholds are the ones the rules applied."""
    con = audit.connect(built)
    rules = {}
    for source, rule, params in con.execute("SELECT source, rule, parameters FROM rules").fetchall():
        rules.setdefault(source, {})[rule] = json.loads(params)
    assert set(rules) == set(built.source_names)
    assert rules["web"]["gopher_word_count"] == {"min_words": 50, "max_words": 100_000}
    checked = 0
    for source, failed, values in con.execute('SELECT source, failed_rules, "values" FROM rejections').fetchall():
        values = json.loads(values)
        for rule, value in values.items():
            assert audit.violates(value, rules[source][rule]) == (rule in failed), (source, rule, value)
            checked += 1
    assert checked > 1000


def test_why_cli_prints_every_failed_rule_with_its_threshold_uncut(built):
    con = audit.connect(built)
    doc, failed, values = con.execute(
        'SELECT doc_id, failed_rules, "values" FROM rejections WHERE source = \'web\' '
        "ORDER BY len(failed_rules) DESC, doc_id LIMIT 1").fetchone()
    assert len(failed) >= 3
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "audit", str(built.path), "why", doc],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"quality [web]: rejected, failed {len(failed)} rule(s):"
    params = {rule: json.loads(p) for rule, p in con.execute(
        "SELECT rule, parameters FROM rules WHERE source = 'web'").fetchall()}
    for rule in failed:
        want = f"  {rule}: {audit._num(json.loads(values)[rule])} vs {audit.threshold_text(params[rule])}"
        assert want in lines, (want, r.stdout)
    passed = " ".join(ln.strip() for ln in lines[len(failed) + 1:])
    assert passed.startswith(f"passed {len(json.loads(values)) - len(failed)}: ")
    assert all(f"{k}=" in passed for k in json.loads(values) if k not in failed)


def test_views_help_lists_the_columns_duckdb_shows(built):
    """The columns ``audit sql --help`` lists are the ones the views have on a real build."""
    con = audit.connect(built)
    for view, columns in audit.view_columns().items():
        assert [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description] == columns, view
    listed = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {v for v in listed if not v.endswith(("_t", "_empty"))} == set(audit.VIEWS)  # not the Arrow tables


def test_help_has_examples_and_sql_help_lists_every_view_with_its_columns():
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "audit", "any.yaml", "sql", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    flat = re.sub(r"\s+", " ", r.stdout)
    for view, columns in audit.view_columns().items():
        assert f" {view} {audit.VIEWS[view]} {', '.join(columns)} " in flat, view
    assert "examples:" in r.stdout and "FROM rejections" in r.stdout
    commands = [["init"], ["validate"], ["verify"], ["plan"], ["audit"], ["audit", "s", "why"],
                ["audit", "s", "where"], ["audit", "s", "diff"], ["report"], ["stages"], ["propose"], ["train-proxy"],
                ["proxies"]]
    for cmd in commands + [["build"], ["demo"]]:
        r = subprocess.run([sys.executable, "-m", "workflows.cli", *cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "\nexamples:\n" in r.stdout and "\n  corpusmix " in r.stdout, (cmd, r.stdout)


def test_where_points_at_the_exact_tokens(built):
    con = audit.connect(built)
    doc_id = con.execute("SELECT doc_id FROM lineage WHERE source = 'web' AND doc_offset = 0 LIMIT 1").fetchone()[0]
    rows = audit.where(con, doc_id, built.spec.mixture.seq_len)
    assert rows and all(r["source"] == "web" for r in rows)
    shards = read_manifest(manifest_path(built.manifest_root, "mixed_shards", None))
    stream = TokenStream.from_dir(built.storage_root / shards["outputs"][0]["path"].rsplit("/", 1)[0])
    tm = read_manifest(manifest_path(built.manifest_root, "tokenize", "web"))
    store = IndexedReader((built.storage_root / next(o["path"] for o in tm["outputs"]
                                                     if o["kind"] == "token_bin")).with_suffix(""))
    seq = con.execute("SELECT sequence FROM tokenized WHERE source = 'web' AND doc_id = ?", [doc_id]).fetchone()[0]
    for r in rows:
        got = stream.tokens(r["stream_start"], r["stream_start"] + r["n_tokens"])
        assert np.array_equal(got, store[seq][r["doc_offset"]:r["doc_offset"] + r["n_tokens"]])
        assert r["first_sample"] == r["stream_start"] // built.spec.mixture.seq_len


def test_sql_over_the_tables_agrees_with_the_manifests(built):
    con = audit.connect(built)
    for s in built.source_names:
        m = read_manifest(manifest_path(built.manifest_root, "quality", s))
        n = con.execute("SELECT count(*) FROM rejections WHERE source = ?", [s]).fetchone()[0]
        assert n == m["counts"]["rejected"]
    from corpusmix.pipeline import active_stages

    stages = active_stages(built.spec)
    per_source = sum(st.per_source for st in stages)
    assert con.execute("SELECT count(*) FROM manifests").fetchone()[0] == (
        len(built.source_names) * per_source + len(stages) - per_source)  # one per stage and partition
    total = con.execute("SELECT sum(n_tokens) FROM lineage").fetchone()[0]
    assert total == built.spec.mixture.total_tokens + 1


def test_diff_between_two_versions(built, tmp_path):
    old = tmp_path / "old_manifests"
    shutil.copytree(built.manifest_root, old)
    spec = yaml.safe_load(built.path.read_text())
    dialogue = next(s for s in spec["sources"] if s["name"] == "dialogue")
    dialogue["filters"] = {"overrides": {"length_chars": {"min_chars": 400}}}  # drop short dialogues
    changed = load_spec(write_spec(built.path.parent / "spec_changed.yaml", spec))
    build_all(changed)
    d = audit.diff(changed, old)
    assets = {(c["asset"], c["partition"]) for c in d["changed"]}
    assert ("quality", "dialogue") in assets and ("tokenize", "dialogue") in assets
    assert ("quality", "web") not in assets and ("ingest", "dialogue") not in assets
    assert ("mixed_shards", None) in assets
    removed = d["documents"]["dialogue"]["removed"]
    assert removed and not d["documents"]["dialogue"]["added"] and "web" not in d["documents"]
    con = audit.connect(changed)
    assert audit.why(con, removed[0], "dialogue")[0]["why"].startswith("failed length_chars")
    build_all(built)  # put the module's build back for the other tests


def test_cli(built):
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "audit", str(built.path), "--json", "sql",
                        "SELECT source, count(*) AS n FROM tokenized GROUP BY ALL ORDER BY source"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [x["source"] for x in json.loads(r.stdout)] == sorted(built.source_names)
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "audit", str(built.path), "why", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "is in no table" in r.stderr
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "audit", str(built.path), "sql", "SELECT nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "query failed" in r.stderr


def test_report_summarises_the_build(built):
    from corpusmix.ops.report import build_report, write_report

    text = build_report(built)
    assert text.startswith("# Build report: test")
    for line in ("| quality | web |", "| tokenize | dialogue |", "## Mixture plan", "## Mixed shards",
                 "Every token count is exact", "## Why documents were removed"):
        assert line in text
    assert "## Token estimate" not in text  # nothing was estimated: the tokenizer is a file
    # web's reasons, each document charged once: the rows' documents add up to what quality rejected
    q = read_manifest(manifest_path(built.manifest_root, "quality", "web"))
    top = sorted(q["reasons"].items(), key=lambda kv: (-kv[1]["tokens"], kv[0]))[:5]
    for reason, r in top:
        assert f"| quality | web | {reason} | {r['records']:,} | {r['tokens']:,} |" in text
    assert "**no**" not in text  # every phase and source within tolerance
    path = write_report(built)
    assert open(path).read() == text


def test_verify_catches_a_flipped_byte_or_a_missing_file_in_every_output_kind(built):
    from corpusmix.core.manifest import iter_manifests
    from corpusmix.ops.verify import verify

    assert verify(str(built.path)) == []
    kinds = {}
    for m in iter_manifests(built.manifest_root):
        for o in read_manifest(m)["outputs"]:
            kinds.setdefault(o["kind"], o["path"])
    assert {"documents", "quarantine", "duplicates", "cross_source_duplicates", "rejections", "audit", "tokenizer",
            "token_bin", "token_index", "token_documents", "plan", "shard_bin", "shard_index", "shard_manifest",
            "lineage"} <= set(kinds)
    for kind, rel in kinds.items():
        f = built.storage_root / rel
        original = f.read_bytes()
        try:
            data = bytearray(original)
            data[len(data) // 2] ^= 0x01
            f.write_bytes(bytes(data))
            assert any(rel in p and "sha256" in p for p in verify(str(built.path))), kind
            f.unlink()
            assert any(rel in p and "missing" in p for p in verify(str(built.path))), kind
        finally:
            f.write_bytes(original)
    assert verify(str(built.path)) == []


def test_why_and_where_on_a_build_with_absent_tables(make_spec):
    """A build of ingest and dedup only, with nothing quarantined: every view exists, empty, with its
    columns, so `why` finds the document's dedup story and `where` says it is in no shard."""
    from corpusmix.pipeline import run_stage

    from .conftest import CORPUS

    loaded = load_spec(make_spec([{"name": "math", "kind": "math",
                                   "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]}]))
    m, _ = run_stage("ingest", loaded, "math", progress=lambda x: None)
    assert m["counts"]["quarantined"] == 0
    run_stage("dedup", loaded, "math", progress=lambda x: None)
    con = audit.connect(loaded)
    doc = con.execute("SELECT doc_id FROM read_parquet(?) LIMIT 1",
                      [str(loaded.storage_root / m["outputs"][0]["path"])]).fetchone()[0]
    assert audit.why(con, doc) == []  # kept by dedup, never tokenized: no table names it
    assert audit.where(con, doc, 512) == []
    for view in ("quarantine", "duplicates", "cross_source", "rejections", "tokenized", "lineage"):
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone()[0] == 0
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "audit", str(loaded.path), "why", doc],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "is in no table" in r.stderr, r.stderr
