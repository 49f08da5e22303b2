"""The quality stage gives the same bytes in-process and on a process pool, with many parts per source."""

from __future__ import annotations

import shutil

from corpusmix.core.spec import load_spec
from corpusmix.core.storage import sha256_file
from corpusmix.pipeline import build_all, run_stage
from corpusmix.stages.quality import CROSS, _sample_key

from .conftest import CORPUS, base_spec, read_outputs, write_spec

MiB = 1 << 20
SOURCES = [{"name": "web_a", "kind": "web", "paths": [str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]},
           {"name": "web_b", "kind": "web", "paths": [str(CORPUS / "web" / "*.jsonl.gz")]}]


def _spec(root, execution):
    root.mkdir(parents=True, exist_ok=True)
    # the smallest part size allowed, so that web_b has several dedup parts (units)
    return load_spec(write_spec(root / "spec.yaml", base_spec(SOURCES, root, execution=execution,
                                                              ingest={"part_bytes": MiB})))


def _files(manifest, storage_root):
    """Every output of a manifest: path -> sha256 of the file on disk, after checking it against the manifest."""
    out = {}
    for o in manifest["outputs"]:
        digest = sha256_file(storage_root / o["path"])
        assert digest == o["sha256"], o["path"]
        out[o["path"]] = digest
    return out


def test_inline_and_process_pool_write_identical_outputs(tmp_path):
    inline_root, pool_root = tmp_path / "inline", tmp_path / "pool"
    inline = _spec(inline_root, {"backend": "inline"})
    build_all(inline, until="decontaminate")  # every stage quality reads
    for d in ("data", "manifests"):  # the same upstream under a second root: only quality runs twice
        shutil.copytree(inline_root / d, pool_root / d)
    pool = _spec(pool_root, {"backend": "processes", "workers": 2})
    assert pool.spec.execution.backend == "processes"

    for s in SOURCES:
        messages = []
        m_inline, _ = run_stage("quality", inline, s["name"], progress=lambda m: None)
        m_pool, _ = run_stage("quality", pool, s["name"], progress=messages.append)
        n_parts = len(m_pool["inputs"])
        assert sum("quality: part " in m for m in messages) == n_parts
        assert {o["kind"] for o in m_pool["outputs"]} == {"documents", "rejections", "audit"}

        files = _files(m_inline, inline.storage_root)
        assert files == _files(m_pool, pool.storage_root)
        assert m_inline["outputs"] == m_pool["outputs"]
        for key in ("counts", "reasons", "details"):
            assert m_inline[key] == m_pool[key], key
        # nothing else was published next to the outputs the manifest names
        version_dir = pool.storage_root / "quality" / s["name"] / m_pool["version"]
        assert {f"quality/{s['name']}/{m_pool['version']}/{p.name}" for p in version_dir.iterdir()} == set(files)
        assert m_pool["counts"]["documents_out"] + m_pool["counts"]["rejected"] == m_pool["counts"]["documents_in"]
        # merging the units' audit samples gives what one pass would: each rule's k smallest keys over all parts
        rejected = read_outputs(m_pool, pool.storage_root, "rejections").to_pylist()
        k = pool.spec.quality.audit_samples
        for rule in m_pool["reasons"]:
            want = sorted((r["doc_id"] for r in rejected if rule in r["failed_rules"]), key=_sample_key)[:k]
            assert [a["doc_id"] for a in m_pool["details"]["audit"][rule]] == want, rule

    # web_b (one part per MiB of text) is the case this test is for: several units, several output parts
    # (its first part is all web_a's documents, so that unit keeps nothing and writes no part)
    assert n_parts > 1 and [o["kind"] for o in m_pool["outputs"]].count("documents") > 1
    assert CROSS in m_pool["reasons"], "web_b holds web_a's documents: the drop set reached the units"
