"""Ingest of the real six-source dev corpus: exact counts, checksums, token estimates,
byte-identical rebuilds, and `corpusmix verify` catching damage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tokenizers import Tokenizer

from corpusmix.core.executor import open_executor
from corpusmix.core.spec import Execution, load_spec
from corpusmix.ops.verify import verify
from corpusmix.pipeline import run_stage

from .conftest import CORPUS, GPT2, corpus_manifest, read_outputs

pytestmark = pytest.mark.slow  # ingests the whole shared corpus

SOURCES = {"wiki": "prose", "web": "web", "books": "prose", "code": "code", "math": "math", "dialogue": "dialogue"}
KNOWN_EMPTY = {"wiki": 10, "code": 14, "web": 27}  # from ../shared/corpus/README.md


def _spec(make_spec, workers: int, name: str = "spec.yaml", root=None):
    sources = [{"name": n, "kind": k, "paths": [str(CORPUS / n / "*.jsonl.gz")]} for n, k in SOURCES.items()]
    kw = {"execution": {"workers": workers}}
    if root is not None:
        kw["storage"] = {"root": str(root / "data"), "manifests": str(root / "manifests")}
    return load_spec(make_spec(sources, name=name, **kw))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """All six sources ingested once with a 2-process pool."""
    from .conftest import base_spec, write_spec

    root = tmp_path_factory.mktemp("corpus")
    sources = [{"name": n, "kind": k, "paths": [str(CORPUS / n / "*.jsonl.gz")]} for n, k in SOURCES.items()]
    loaded = load_spec(write_spec(root / "spec.yaml", base_spec(sources, root, execution={"workers": 2})))
    manifests = {}
    with open_executor(Execution(workers=2)) as pool:
        for name in SOURCES:
            manifests[name] = run_stage("ingest", loaded, name, executor=pool, progress=lambda m: None)[0]
    return loaded, manifests


def test_counts_and_checksums_match_the_corpus_manifest(built):
    loaded, manifests = built
    truth = corpus_manifest()
    for name, m in manifests.items():
        c = m["counts"]
        assert c["records_read"] == truth[name]["docs"]
        assert c["quarantined"] == KNOWN_EMPTY.get(name, 0)
        assert set(m["reasons"]) == ({"empty_text"} if name in KNOWN_EMPTY else set())
        assert c["documents_out"] == truth[name]["docs"] - KNOWN_EMPTY.get(name, 0)
        assert c["bytes_in"] == truth[name]["text_bytes"]  # every UTF-8 byte of text accounted for
        expected = {f["file"].split("/")[-1]: f["sha256"] for f in truth[name]["files"]}
        assert {i["path"].split("/")[-1]: i["sha256"] for i in m["inputs"]} == expected
        assert m["rates"]["document_acceptance"] == pytest.approx(c["documents_out"] / c["documents_in"])
        assert m["token_counting"]["method"] == "exact"
        parts = [o["tokens"] for o in m["outputs"] if o["kind"] == "documents"]
        assert sum(parts) == c["tokens_out"]  # the parts' tokens add up to the stage's
        assert c["tokens_in"] - sum(r["tokens"] for r in m["reasons"].values()) == c["tokens_out"]


def test_documents_keep_ids_text_and_metadata(built):
    loaded, manifests = built
    docs = read_outputs(manifests["math"], loaded.storage_root, "documents")
    first = json.loads(next(iter(__import__("gzip").open(CORPUS / "math" / "math-0000-of-0002.jsonl.gz"))))
    row = docs.slice(0, 1).to_pylist()[0]
    assert row["doc_id"] == first["id"] and row["text"] == first["text"] and row["record_no"] == 1
    meta = json.loads(row["metadata"])
    assert meta["final_answer"] == first["final_answer"] and "text" not in meta and "id" not in meta


def test_every_documents_token_count_is_exact(built):
    """With a tokenizer file, ingest's n_tokens is each document's own encoding length (web mixes
    scripts: one bytes-per-token ratio overstated it by a third), and the stage's count is their sum."""
    loaded, manifests = built
    tok = Tokenizer.from_file(str(GPT2))
    for name in ("web", "code"):
        docs = read_outputs(manifests[name], loaded.storage_root, "documents")
        exact = [len(e) for e in tok.encode_batch(docs.column("text").to_pylist(), add_special_tokens=False)]
        assert docs.column("n_tokens").to_pylist() == exact
        assert manifests[name]["counts"]["tokens_out"] == sum(exact)


def test_rebuild_is_byte_identical_and_independent_of_workers(make_spec, tmp_path, built):
    _, first = built
    loaded = _spec(make_spec, workers=0, root=tmp_path / "again")
    for name in ("math", "code"):
        again, _ = run_stage("ingest", loaded, name, progress=lambda m: None)
        assert again["version"] == first[name]["version"]
        assert [(o["path"], o["sha256"]) for o in again["outputs"]] == \
               [(o["path"], o["sha256"]) for o in first[name]["outputs"]]


def test_verify_detects_a_flipped_byte_a_removed_file_and_an_edited_manifest(make_spec, tmp_path):
    loaded = _spec(make_spec, workers=0)
    m, mpath = run_stage("ingest", loaded, "web", progress=lambda x: None)
    missing = verify(str(loaded.path), until="ingest")  # the other five sources were never built
    assert len(missing) == 5 and all("was never built" in p for p in missing)
    assert len(verify(str(loaded.path))) > 5  # and no stage after ingest was
    for name in SOURCES:
        if name != "web":
            run_stage("ingest", loaded, name, progress=lambda x: None)
    assert verify(str(loaded.path), until="ingest") == []
    doc_part = loaded.storage_root / m["outputs"][0]["path"]
    quar_part = loaded.storage_root / next(o["path"] for o in m["outputs"] if o["kind"] == "quarantine")
    data = bytearray(doc_part.read_bytes())
    data[len(data) // 3] ^= 0x01
    doc_part.write_bytes(bytes(data))
    quar_part.unlink()
    problems = verify(str(loaded.path), until="ingest")
    assert any(doc_part.name in p and "sha256" in p for p in problems)
    assert any(quar_part.name in p and "missing" in p for p in problems)
    manifest = json.loads(mpath.read_text())
    manifest["counts"]["documents_out"] += 1
    mpath.write_text(json.dumps(manifest))
    assert any("content_hash" in p for p in verify(str(loaded.path), until="ingest"))
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "verify", str(loaded.path), "--until", "ingest"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and doc_part.name in r.stderr


def test_same_spec_twice_gives_identical_manifests_but_for_timestamps(make_spec, tmp_path):
    import shutil

    loaded = _spec(make_spec, workers=0)
    m1, path = run_stage("ingest", loaded, "dialogue", progress=lambda x: None)
    shutil.rmtree(loaded.storage_root)
    m2, _ = run_stage("ingest", loaded, "dialogue", progress=lambda x: None)
    assert m1["content_hash"] == m2["content_hash"]
    assert {k: v for k, v in m1.items() if k not in ("started_at", "finished_at", "elapsed_s", "timing")} == \
           {k: v for k, v in m2.items() if k not in ("started_at", "finished_at", "elapsed_s", "timing")}
