"""Incremental rebuilds through Dagster: nothing changed starts no run; one changed source rebuilds
that source's partitions and the global assets, and leaves the other sources' partitions alone."""

from __future__ import annotations

import gzip
import json
import shutil

import orjson
import pytest

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.ops.freshness import everything_current, is_current
from corpusmix.pipeline import run_stage
from workflows.build import run_build

from .conftest import CORPUS

pytestmark = pytest.mark.slow  # builds through Dagster


def _manifests(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def test_no_op_and_one_changed_source(make_spec, tmp_path):
    raw = tmp_path / "raw"
    for s in ("math", "dialogue"):
        shutil.copytree(CORPUS / s, raw / s)
    spec = make_spec([{"name": s, "kind": s, "paths": [str(raw / s / "*.jsonl.gz")]} for s in ("math", "dialogue")])
    loaded = load_spec(spec)
    first: list[str] = []
    assert run_build(spec, echo=first.append)
    assert everything_current(loaded)
    before = _manifests(loaded.manifest_root)

    again: list[str] = []
    assert run_build(spec, echo=again.append)
    assert again == [f"up to date: every stage of {loaded.spec.name} has the content key it would compute now; "
                     "no run started"]
    assert _manifests(loaded.manifest_root) == before  # not even rewritten

    # edit one math record
    f = raw / "math" / "math-0000-of-0002.jsonl.gz"
    lines = gzip.decompress(f.read_bytes()).splitlines()
    rec = orjson.loads(lines[0])
    rec["text"] += "\nA freshly added line of worked solution."
    lines[0] = orjson.dumps(rec)
    f.chmod(0o644)
    f.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    assert not is_current(loaded, "ingest", "math") and is_current(loaded, "ingest", "dialogue")

    third: list[str] = []
    assert run_build(spec, echo=third.append)
    text = "\n".join(third)
    for line in ("math ingest + dedup: ok", "cross_source_dedup + tokenizer: ok",
                 "math quality + heldout_split + tokenize: ok",
                 "swarm_design + mixture_plan + mixed_shards + megatron_blends: ok",
                 "dialogue ingest + dedup: up to date (no run)",
                 # dialogue's held-out split reads math's dedup survivors (a near-duplicate there would keep a
                 # dialogue document in train), so its run starts; it moves nothing, and tokenize stays current
                 "dialogue quality + heldout_split + tokenize: ok"):
        assert line in text, text
    after = _manifests(loaded.manifest_root)
    assert after["tokenizer/_all.json"] == before["tokenizer/_all.json"]  # in the run, but it skipped itself
    for stage in ("ingest", "dedup", "quality", "tokenize"):
        assert after[f"{stage}/dialogue.json"] == before[f"{stage}/dialogue.json"]
        assert after[f"{stage}/math.json"] != before[f"{stage}/math.json"]
    split_files = [{o["path"].rsplit("/", 1)[-1]: o["sha256"] for o in orjson.loads(m)["outputs"]}
                   for m in (before["heldout_split/dialogue.json"], after["heldout_split/dialogue.json"])]
    assert split_files[0] == split_files[1]  # same split, same bytes: nothing after it rebuilt
    assert after["tokenizer/_all.json"] == before["tokenizer/_all.json"]
    assert after["mixed_shards/_all.json"] != before["mixed_shards/_all.json"]
    assert everything_current(loaded)


def test_a_damaged_output_is_not_current_and_the_rebuild_repairs_it(make_spec, tmp_path):
    from corpusmix.ops.verify import verify


    spec = make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]}])
    loaded = load_spec(spec)
    m, _ = run_stage("ingest", loaded, "math", progress=lambda x: None)
    assert is_current(loaded, "ingest", "math")
    part = loaded.storage_root / m["outputs"][0]["path"]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different
    part.write_bytes(bytes(data))
    assert not is_current(loaded, "ingest", "math") and verify(str(loaded.path), until="ingest")
    run_stage("ingest", loaded, "math", progress=lambda x: None)
    assert is_current(loaded, "ingest", "math") and verify(str(loaded.path), until="ingest") == []


def test_a_damaged_drop_list_or_an_edited_manifest_is_rebuilt(built_corpus, tmp_path):
    """A flipped byte in the cross-source drop list (which quality's key reads) and a hand-edited
    manifest both make their stage stale instead of crashing the freshness check or passing as
    current; rebuilding repairs both, and the root verifies again."""
    from corpusmix.ops.verify import verify
    from corpusmix.pipeline import build_all

    from .conftest import copy_build

    loaded = copy_build(built_corpus, tmp_path)
    assert everything_current(loaded) and verify(str(loaded.path)) == []
    drops = loaded.storage_root / read_manifest(manifest_path(loaded.manifest_root, "cross_source_dedup", None))[
        "outputs"][0]["path"]
    data = bytearray(drops.read_bytes())
    data[len(data) // 2] ^= 0xFF
    drops.write_bytes(bytes(data))
    edited = manifest_path(loaded.manifest_root, "dedup", "web")
    m = json.loads(edited.read_text())
    m["counts"]["documents_out"] += 1  # still valid JSON and schema: only its content hash tells
    edited.write_text(json.dumps(m))
    assert not is_current(loaded, "cross_source_dedup") and not is_current(loaded, "quality", "web")
    assert not is_current(loaded, "dedup", "web") and not everything_current(loaded)
    assert verify(str(loaded.path))
    build_all(loaded)
    assert everything_current(loaded) and verify(str(loaded.path)) == []
    assert read_manifest(edited)["counts"]["documents_out"] == m["counts"]["documents_out"] - 1
