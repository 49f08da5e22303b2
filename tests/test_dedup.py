"""Dedup: hashing and signatures against datasketch, clustering policy, the labelled evaluation,
and what the stage finds in the real corpus."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash

import corpusmix.stages.dedup as dd
import corpusmix.stages.minhash as mh
from corpusmix.core.spec import Normalize, load_spec
from corpusmix.pipeline import run_stage
from corpusmix.stages.dedup import pick_representative
from corpusmix.stages.minhash import jaccard, normalize, permutations, shingle_hashes, signatures

from .conftest import CORPUS, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import dedup_eval  # noqa: E402


def test_normalize_rules():
    text = "Hello,  “World”!\tIt’s 2024 — ＦＵＬＬ。 snake_case"
    assert normalize(text, Normalize()) == b"hello world it s 2024 full snake_case"
    assert normalize(text, Normalize(digits="zero")) == b"hello world it s 0000 full snake_case"
    off = Normalize(lowercase=False, whitespace=False, punctuation=False, unicode="none")
    assert normalize(text, off) == text.encode()


def test_shingles_are_ordered_word_ngrams():
    a = shingle_hashes(b"a b c d e f", 5)
    assert len(a) == 2
    assert len(np.intersect1d(a, shingle_hashes(b"x a b c d e", 5))) == 1  # shares "a b c d e"
    assert not np.intersect1d(a, shingle_hashes(b"f e d c b a", 5)).size  # order matters
    assert len(shingle_hashes(b"too short", 5)) == 1 and len(shingle_hashes(b"", 5)) == 0


def test_signatures_equal_datasketch_even_across_vectorised_steps(monkeypatch):
    monkeypatch.setattr(mh, "SIG_BATCH_CELLS", 64 * 100)  # force giant documents across several steps
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32) for n in (0, 1, 7, 500, 40, 3000)]
    perms = permutations(64, 3)
    sigs = signatures(docs, perms)
    for doc, sig in zip(docs, sigs):
        if len(doc) == 0:
            assert (sig == mh.EMPTY_SIG).all()
            continue
        m = MinHash(num_perm=64, seed=3, hashfunc=lambda x: x)
        m.update_batch(doc.tolist())
        assert (m.hashvalues == sig).all()


def test_signature_agreement_estimates_true_jaccard():
    words = [f"w{i}".encode() for i in range(3000)]
    a = b" ".join(words)
    b = b" ".join(words[:2400] + [b"x"] * 600)
    sa, sb = shingle_hashes(a, 5), shingle_hashes(b, 5)
    sig = signatures([sa, sb], permutations(256, 1))
    est = float(np.mean(sig[0] == sig[1]))
    assert abs(est - jaccard(np.unique(sa), np.unique(sb))) < 0.08


def test_representative_policy_and_ties():
    import pyarrow as pa

    idx = dd._Index(pa.array(["b", "a", "c"]), np.array([10, 10, 5]), np.array([3, 3, 1]), np.zeros((3, 16), np.uint8), [],
                    np.array([0, 3]))
    assert pick_representative([0, 1, 2], idx, "longest") == 1  # tie on size -> smallest id
    assert pick_representative([0, 1, 2], idx, "shortest") == 2
    assert pick_representative([2, 0, 1], idx, "first") == 0


def test_labelled_near_duplicates_precision_and_recall():
    documents, pairs = dedup_eval.build_pairs(n_bases=180, seed=11)
    assert sum(j >= 0.85 for *_, j in pairs) > 30 and sum(j <= 0.75 for *_, j in pairs) > 80
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        rep = dedup_eval.predicted_clusters(documents, Path(tmp), 0.8, verify=True)
    s = dedup_eval.score(pairs, rep, 0.8, margin=0.05)
    assert s["precision"] >= 0.95 and s["recall"] >= 0.95, s


def _spec(make_spec, names, **dedup):
    kinds = {"dialogue": "dialogue", "web": "web", "code": "code", "books": "prose"}
    sources = [{"name": n, "kind": kinds[n], "paths": [str(CORPUS / n / "*.jsonl.gz")]} for n in names]
    return load_spec(make_spec(sources, dedup=dedup) if dedup else make_spec(sources))


def test_byte_identical_duplicates_match_the_corpus_readme(make_spec):
    """With normalisation off and near-dedup off, exact dedup finds exactly the byte-identical
    duplicates the corpus README lists: dialogue 742, web 11, code 4."""
    raw = {"lowercase": False, "whitespace": False, "punctuation": False, "unicode": "none"}
    loaded = _spec(make_spec, ["dialogue", "web", "code"], normalize=raw, near={"enabled": False})
    for name, expected in {"dialogue": 742, "web": 11, "code": 4}.items():
        run_stage("ingest", loaded, name, progress=lambda m: None)
        m, _ = run_stage("dedup", loaded, name, progress=lambda m: None)
        assert m["counts"]["removed_exact"] == expected and m["counts"]["removed_near"] == 0


def test_default_dedup_on_the_corpus_finds_each_kind(make_spec):
    loaded = _spec(make_spec, ["books", "code"])
    found = {}
    for name in ("books", "code"):
        run_stage("ingest", loaded, name, progress=lambda m: None)
        m, _ = run_stage("dedup", loaded, name, progress=lambda m: None)
        dup_path = next(o["path"] for o in m["outputs"] if o["kind"] == "duplicates")
        found[name] = pq.read_table(loaded.storage_root / dup_path).to_pylist()
        c = m["counts"]
        assert c["documents_out"] == c["documents_in"] - c["removed_exact"] - c["removed_near"]
        assert c["accepted_pairs"] + c["rejected_pairs"] == c["candidate_pairs"]
    # books: old Project Gutenberg editions of The Time Machine and Alice are near-duplicates
    near_books = {(r["doc_id"], r["representative_doc_id"]) for r in found["books"] if r["kind"] == "near"}
    assert ("pg11-old-alice30-001", "pg11-000") in near_books
    assert any("timem11" in a + b for a, b in near_books)
    assert all(r["true_jaccard"] >= 0.8 for r in found["books"])
    # code: near-identical codec tables (encodings/cp*.py)
    near_code = [r for r in found["code"] if r["kind"] == "near"]
    assert sum("encodings/cp" in r["doc_id"] for r in near_code) >= 3


def test_dedup_is_deterministic(make_spec, tmp_path):
    loaded = _spec(make_spec, ["web"])
    run_stage("ingest", loaded, "web", progress=lambda m: None)
    m1, _ = run_stage("dedup", loaded, "web", progress=lambda m: None)
    m2, _ = run_stage("dedup", loaded, "web", progress=lambda m: None)
    assert m1["content_hash"] == m2["content_hash"]
    assert [o["sha256"] for o in m1["outputs"]] == [o["sha256"] for o in m2["outputs"]]


def test_dedup_needs_its_ingest_first(make_spec):
    loaded = _spec(make_spec, ["web"])
    with pytest.raises(FileNotFoundError, match=r"materialize ingest\[web\] first"):
        run_stage("dedup", loaded, "web", progress=lambda m: None)


def test_cross_source_duplicates_enter_once_from_the_first_ranked_source(make_spec, tmp_path):
    from corpusmix.stages.quality import cross_source_drops

    first = str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")
    sources = [{"name": "gsm_a", "kind": "math", "paths": [first]},
               {"name": "gsm_b", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]}]
    loaded = load_spec(make_spec(sources))
    for name in ("gsm_a", "gsm_b"):
        run_stage("ingest", loaded, name, progress=lambda m: None)
        run_stage("dedup", loaded, name, progress=lambda m: None)
    m, _ = run_stage("cross_source_dedup", loaded, progress=lambda x: None)
    assert m["counts"]["removed_exact"] == 4397  # all of shard 0, held by gsm_a which is ranked first
    assert m["details"]["pairs_removed_from_kept"] == [{"removed_from": "gsm_b", "kept_in": "gsm_a", "documents": 4397}]
    assert cross_source_drops(loaded, "gsm_a") == set()
    assert len(cross_source_drops(loaded, "gsm_b")) == 4397


def test_batched_shingles_equal_one_document_at_a_time():
    norms = [b"a b c d e f g", b"", b"short doc", b"x", b"a b c d e f g", b"  ", b"one two three four five six"]
    hv, counts = mh.batch_shingles(norms, 5)
    pieces = np.split(hv, np.cumsum(counts)[:-1])
    for norm, piece in zip(norms, pieces):
        alone = mh.batch_shingles([norm], 5)[0]
        assert (piece == alone).all()
    assert list(counts) == [3, 0, 1, 1, 3, 0, 2]
    assert (pieces[0] == pieces[4]).all()


def test_numpy_banding_gives_datasketch_minhashlsh_candidates():
    from datasketch import LeanMinHash, MinHashLSH

    norms = [normalize(d["text"], Normalize()) for d in dedup_eval.build_pairs(n_bases=60, seed=3)[0]]
    sigs = mh.batch_signatures(*mh.batch_shingles(norms, 5), permutations(128, 1))
    bands, rows = 16, 8
    ours = mh.lsh_candidate_pairs(sigs, np.arange(len(sigs)), bands, rows)  # every document takes part
    lsh = MinHashLSH(num_perm=128, params=(bands, rows))
    sketches = [LeanMinHash(seed=1, hashvalues=s, scheme="affine32") for s in sigs]
    for i, m in enumerate(sketches):
        lsh.insert(i, m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(sketches) for j in lsh.query(m) if j != i}
    assert ours == theirs and len(ours) > 20


def test_cross_source_near_duplicates_on_request(make_spec, tmp_path):
    import gzip
    import json


    documents, pairs = dedup_eval.build_pairs(n_bases=60, seed=5)
    close = {a: b for a, b, j in pairs if b.endswith("-edit") and 0.85 <= j < 1.0}
    text = {d["id"]: d["text"] for d in documents}
    for name, ids in (("first", list(close)), ("second", list(close.values()))):
        (tmp_path / name).mkdir()
        with gzip.open(tmp_path / name / "docs.jsonl.gz", "wt") as f:
            for i in ids:
                f.write(json.dumps({"id": i, "text": text[i]}) + "\n")
    sources = [{"name": n, "kind": "prose", "paths": [str(tmp_path / n / "*.jsonl.gz")]} for n in ("first", "second")]
    for near, expected in ((False, 0), (True, len(close))):
        loaded = load_spec(make_spec(sources, name=f"near-{near}.yaml",
                                     dedup={"cross_source": {"exact": True, "near": near}}))
        for name in ("first", "second"):
            run_stage("ingest", loaded, name, progress=lambda m: None)
            run_stage("dedup", loaded, name, progress=lambda m: None)
        m, _ = run_stage("cross_source_dedup", loaded, progress=lambda x: None)
        assert m["counts"]["removed_near"] == expected and len(close) > 5


@pytest.mark.slow  # 24 dedup runs
def test_every_threshold_and_permutation_count_dedups_end_to_end(make_spec):
    """datasketch's layout for most thresholds uses fewer than num_perm permutations (0.7 at 128:
    21 x 6 = 126): banding must take the first bands x rows values, as MinHashLSH does. Every
    accepted pair reaches the threshold, and a higher threshold never removes more."""
    for num_perm in (64, 128, 256):
        removed = []
        for threshold in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
            sources = [{"name": "dialogue", "kind": "dialogue",
                        "paths": [str(CORPUS / "dialogue" / "dialogue-0000-of-0002.jsonl.gz")]}]
            loaded = load_spec(make_spec(sources, name=f"t{num_perm}-{threshold}.yaml",
                                         dedup={"near": {"num_perm": num_perm, "threshold": threshold}}))
            run_stage("ingest", loaded, "dialogue", progress=lambda m: None)
            m, _ = run_stage("dedup", loaded, "dialogue", progress=lambda m: None)
            dups = pq.read_table(loaded.storage_root / next(o["path"] for o in m["outputs"]
                                                            if o["kind"] == "duplicates")).to_pylist()
            near = [r for r in dups if r["kind"] == "near"]
            removed_from = Counter(r["cluster_id"] for r in dups)
            # against its representative a member reaches the threshold, unless the cluster chains
            # through a third document (A ~ B ~ C: A and C may be further apart)
            assert near and all(r["true_jaccard"] >= threshold or removed_from[r["cluster_id"]] > 1
                                for r in near), (num_perm, threshold)
            removed.append(m["counts"]["removed_near"])
        assert removed == sorted(removed, reverse=True), (num_perm, removed)
