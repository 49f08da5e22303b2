"""Tokenize and tokenizer stages on the real corpus: exact counts, round trips, the Megatron format
(read back by our reader and by megatron-core), safe splitting, and the trained tokenizer."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpusmix.core import indexed
from corpusmix.core.indexed import IndexedFormatError, IndexedReader, IndexedWriter, read_index, token_dtype
from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import SpecError, load_spec
from corpusmix.pipeline import build_all, run_stage
from corpusmix.stages.tokenizer import PIECE_CHARS, load_tokenizer, pieces, split_is_exact

from .conftest import CORPUS, GPT2, base_spec, copy_build, read_outputs, write_spec

QUIET = {"progress": lambda m: None}
SOURCES = [("code", "code", "code-0000-of-0004"), ("web", "web", "web-0000-of-0003"),
           ("math", "math", "math-0000-of-0002")]


def _build_to_quality(root, tokenizer: dict | None = None, sources=SOURCES, **overrides):
    """Ingest, dedup, quality and the held-out split of ``sources`` ((name, kind, file) each) under ``root``;
    spec overrides apply."""
    spec = base_spec([{"name": n, "kind": k, "paths": [str(CORPUS / n / f"{f}.jsonl.gz")]} for n, k, f in sources],
                     root, **overrides)
    if tokenizer:
        spec["tokenizer"] = tokenizer
    loaded = load_spec(write_spec(root / "spec.yaml", spec))
    build_all(loaded, until="heldout_split", **QUIET)  # every stage tokenize reads but the tokenizer
    return loaded


@pytest.fixture(scope="module")
def gpt2_build(built_corpus, tmp_path_factory):
    loaded = copy_build(built_corpus, tmp_path_factory.mktemp("gpt2"))
    return loaded, {n: run_stage("tokenize", loaded, n, **QUIET)[0] for n, _, _ in SOURCES}  # current: no work


def _store(loaded, manifest, kinds=("token_bin", "token_documents")):
    """(reader over tokens.bin/.idx, documents table) of one source; ``kinds=("valid_bin",
    "valid_documents")`` for its held-out store."""
    bin_out = next(o for o in manifest["outputs"] if o["kind"] == kinds[0])
    prefix = (loaded.storage_root / bin_out["path"]).with_suffix("")
    docs = read_outputs(manifest, loaded.storage_root, kinds[1])
    return IndexedReader(prefix), docs


def test_counts_equal_a_direct_tokenizers_call_and_text_round_trips(gpt2_build):
    loaded, manifests = gpt2_build
    tok = load_tokenizer(str(GPT2))
    eos = tok.token_to_id("<|endoftext|>")
    split_docs = 0
    for name, _, _ in SOURCES:
        m = manifests[name]
        reader, docs = _store(loaded, m)
        from corpusmix.core.manifest import manifest_path, read_manifest

        quality = read_outputs(read_manifest(manifest_path(loaded.manifest_root, "heldout_split", name)),
                               loaded.storage_root, "documents")  # the train side of the split
        texts = dict(zip(quality.column("doc_id").to_pylist(), quality.column("text").to_pylist()))
        assert docs.column("doc_id").to_pylist() == quality.column("doc_id").to_pylist()  # every kept doc, in order
        assert docs.column("sequence").to_pylist() == list(range(len(reader)))
        direct = tok.encode_batch_fast([texts[d] for d in docs.column("doc_id").to_pylist()],
                                       add_special_tokens=False)
        for i, (doc_id, n_tokens) in enumerate(zip(docs.column("doc_id").to_pylist(),
                                                   docs.column("n_tokens").to_pylist())):
            seq = reader[i]
            assert seq[-1] == eos and n_tokens == len(seq)
            assert seq[:-1].tolist() == direct[i].ids  # same ids as encoding the whole document at once
            assert tok.decode(seq[:-1].tolist()) == texts[doc_id]  # byte-level BPE reproduces the text exactly
            split_docs += len(texts[doc_id]) > PIECE_CHARS
        c = m["counts"]
        assert c["tokens_out"] == sum(len(e.ids) for e in direct)
        assert c["tokens_stored"] == c["tokens_out"] + c["documents_out"] == reader.index.sizes.sum()
        check = m["details"]["estimate_check"]
        assert check["exact_tokens"] == c["tokens_out"]
        assert check["relative_error"] == pytest.approx((check["estimated_tokens"] - c["tokens_out"]) / c["tokens_out"])
        # ingest counted every document with the same tokenizer file: no error at all, web included
        # (one bytes-per-token ratio per source once overstated web by 28 %)
        assert check["method"] == "exact" and check["relative_error"] == 0
        # and its ids were those ingest encoded to count them: no document encoded twice
        assert m["details"]["ids_encoded_documents"] == 0
        assert m["details"]["ids_reused_documents"] == c["documents_in"] + m["details"]["valid"]["documents_in"]
        assert m["details"]["dtype"] == "uint16" and reader.index.dtype == np.uint16
    assert split_docs > 10  # long documents really were cut before encoding, and still match
    assert {m["details"]["encoder"] for m in manifests.values()} == {"tiktoken"}  # the fast path ran


def test_without_ingests_ids_the_tokenizers_library_writes_the_same_token_stores(gpt2_build, tmp_path):
    import shutil

    loaded, manifests = gpt2_build
    spec = load_spec(loaded.path).spec.model_dump(mode="json")
    spec["storage"] = {"root": str(tmp_path / "data"), "manifests": str(tmp_path / "manifests")}
    spec["tokenizer"]["encoder"] = "huggingface"
    shutil.copytree(loaded.storage_root, tmp_path / "data")
    shutil.copytree(loaded.manifest_root, tmp_path / "manifests")
    for cache in (tmp_path / "data" / "ingest").glob("*/*/token-ids-*.parquet"):
        cache.unlink()  # ingest's ids (tiktoken's) gone: every document is encoded here, by the tokenizers library
    slow = load_spec(write_spec(tmp_path / "hf.yaml", spec))
    assert run_stage("tokenizer", slow, **QUIET)[0]["details"]["encoder"] == "huggingface"
    for name, _, _ in SOURCES:
        m = run_stage("tokenize", slow, name, **QUIET)[0]
        assert m["details"]["encoder"] == "huggingface" and m["version"] != manifests[name]["version"]
        assert m["details"]["ids_reused_documents"] == 0 and manifests[name]["details"]["ids_encoded_documents"] == 0
        assert ({o["kind"]: o["sha256"] for o in m["outputs"]}
                == {o["kind"]: o["sha256"] for o in manifests[name]["outputs"]})


def test_megatron_core_reads_the_token_store(gpt2_build):
    loaded, manifests = gpt2_build
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    for name in ("code", "math"):
        reader, docs = _store(loaded, manifests[name])
        ds = IndexedDataset(str(reader.prefix))
        assert len(ds) == len(reader) == docs.num_rows
        assert ds.sequence_lengths.tolist() == docs.column("n_tokens").to_pylist()
        assert ds.document_indices.tolist() == list(range(len(reader) + 1))
        for i in (0, len(ds) // 2, len(ds) - 1):
            assert np.array_equal(ds[i], reader[i]) and ds[i].dtype == np.uint16
        # a token span inside a document, as Megatron's GPT dataset reads samples
        assert np.array_equal(ds.get(1, offset=3, length=5), reader[1][3:8])


def test_verify_covers_token_stores_and_the_tokenizer(gpt2_build):
    from corpusmix.ops.verify import verify

    loaded, manifests = gpt2_build
    assert verify(str(loaded.path)) == []
    out = next(o for o in manifests["math"]["outputs"] if o["kind"] == "token_index")
    path = loaded.storage_root / out["path"]
    original = path.read_bytes()
    try:
        data = bytearray(original)
        data[-1] ^= 1
        path.write_bytes(bytes(data))
        assert any("tokenize/math" in p and "sha256" in p for p in verify(str(loaded.path)))
    finally:
        path.write_bytes(original)


def test_indexed_layout_byte_by_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(indexed, "_CHUNK", 2)  # several chunks when assembling the index
    docs = [np.array([5, 6, 7]), np.array([1]), np.array([9, 9, 9, 9, 9]), np.array([3, 4])]
    w = IndexedWriter(tmp_path / "x", np.dtype(np.int32))
    w.add(np.concatenate(docs[:3]), [3, 1, 5])
    w.add(docs[3], [2])
    w.close()
    raw = (tmp_path / "x.idx").read_bytes()
    magic, version, code, s, d = struct.unpack_from("<9sQBQQ", raw)
    assert (magic, version, code, s, d) == (b"MMIDIDX\x00\x00", 1, 4, 4, 5)
    off = struct.calcsize("<9sQBQQ")
    assert np.frombuffer(raw, np.int32, 4, off).tolist() == [3, 1, 5, 2]
    assert np.frombuffer(raw, np.int64, 4, off + 16).tolist() == [0, 12, 16, 36]  # byte offsets (int32 tokens)
    assert np.frombuffer(raw, np.int64, 5, off + 48).tolist() == [0, 1, 2, 3, 4]
    assert len(raw) == off + 48 + 40 and not (tmp_path / "x.idx.sizes").exists()
    assert (tmp_path / "x.bin").read_bytes() == np.concatenate(docs).astype("<i4").tobytes()
    r = IndexedReader(tmp_path / "x")
    assert [r[i].tolist() for i in range(len(r))] == [d.tolist() for d in docs]


def test_ingests_token_ids_are_a_cache_tokenize_writes_the_same_bytes_without(tmp_path):
    """ingest keeps the ids it counted with (``token_ref`` points at them) and tokenize takes them
    instead of encoding again; with ``ingest.token_id_cache: false`` there is no cache, every
    document is encoded by tokenize, and the stores are the same bytes."""
    tok = {"path": str(GPT2), "eos_token": "<|endoftext|>"}
    stores = {}
    for cache in (True, False):
        (tmp_path / str(cache)).mkdir()
        loaded = _build_to_quality(tmp_path / str(cache), tok, sources=[("math", "math", "math-0000-of-0002")],
                                   ingest={"token_id_cache": cache})
        ingest = read_manifest(manifest_path(loaded.manifest_root, "ingest", "math"))
        files = [o for o in ingest["outputs"] if o["kind"] == "token_ids"]
        refs = read_outputs(ingest, loaded.storage_root, "documents").column("token_ref")
        if cache:
            assert len(files) == 1 and sum(o["rows"] for o in files) == ingest["counts"]["documents_out"]
            assert refs.null_count == 0
        else:
            assert files == [] and refs.null_count == len(refs)
        run_stage("tokenizer", loaded, **QUIET)
        m = run_stage("tokenize", loaded, "math", **QUIET)[0]
        n = m["counts"]["documents_in"] + m["details"]["valid"]["documents_in"]
        assert m["details"]["ids_reused_documents"] == (n if cache else 0)
        stores[cache] = {o["kind"]: o["sha256"] for o in m["outputs"]}
    assert stores[True] == stores[False]


def test_dtype_follows_vocabulary_size():
    assert token_dtype(50257) == np.uint16 and token_dtype(65499) == np.uint16
    assert token_dtype(65500) == np.int32 and token_dtype(128256) == np.int32


def test_empty_store_and_damaged_files_are_named(tmp_path):
    w = IndexedWriter(tmp_path / "e", np.dtype(np.uint16))
    w.close()
    assert len(IndexedReader(tmp_path / "e")) == 0
    w = IndexedWriter(tmp_path / "d", np.dtype(np.uint16))
    w.add(np.arange(10), [4, 6])
    w.close()
    with open(tmp_path / "d.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(IndexedFormatError, match=r"d\.bin: 22 bytes, but d\.idx says 20"):
        read_index(tmp_path / "d")
    (tmp_path / "d.idx").write_bytes((tmp_path / "d.idx").read_bytes()[:-8])
    with pytest.raises(IndexedFormatError, match=r"d\.idx: .* implies"):
        read_index(tmp_path / "d")
    (tmp_path / "d.bin").unlink()
    with pytest.raises(IndexedFormatError, match=r"d\.bin: missing"):
        read_index(tmp_path / "d")


def test_safe_cuts_give_the_same_ids_on_real_text():
    """Cut real documents every ~200 characters: the pieces must encode to the whole's ids."""
    import gzip

    import orjson

    tok = load_tokenizer(str(GPT2))
    assert split_is_exact(tok)
    texts = []
    for src in ("code", "wiki", "dialogue", "web"):
        with gzip.open(next((CORPUS / src).glob("*.jsonl.gz"))) as f:
            texts += [orjson.loads(line)["text"] for _, line in zip(range(40), f)]
    cuts = 0
    for text in texts:
        ps = pieces(text, 200)
        assert "".join(ps) == text
        cuts += len(ps) - 1
        whole = tok.encode(text, add_special_tokens=False).ids
        assert [i for e in tok.encode_batch_fast(ps, add_special_tokens=False) for i in e.ids] == whole
    assert cuts > 1000


def test_a_metaspace_tokenizer_fails_the_probe_and_is_not_split():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(["hello world\nnew line here", "def f(x):\n    return x"] * 50,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"], show_progress=False))
    assert not split_is_exact(tok)


def _train_in_subprocess(spec_path, threads: str) -> str:
    code = ("import sys; from corpusmix.core.spec import load_spec; from corpusmix.pipeline import run_stage;"
            "m, _ = run_stage('tokenizer', load_spec(sys.argv[1]), progress=lambda m: None); "
            "print(m['outputs'][0]['sha256'])")
    r = subprocess.run([sys.executable, "-c", code, str(spec_path)], capture_output=True, text=True,
                       env=os.environ | {"RAYON_NUM_THREADS": threads})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.slow  # trains a tokenizer three times
def test_trained_tokenizer_is_deterministic_and_works_end_to_end(tmp_path):
    train = {"vocab_size": 2048, "sample_bytes": 2 << 20, "special_tokens": ["<|endoftext|>", "<|pad|>"]}
    loaded = _build_to_quality(tmp_path, {"train": train})
    # two processes (different hash seeds), one and two threads: the same tokenizer.json bytes
    assert _train_in_subprocess(loaded.path, "1") == _train_in_subprocess(loaded.path, "2")
    m, _ = run_stage("tokenizer", loaded, **QUIET)
    d = m["details"]
    assert d["origin"] == "trained" and d["vocab_size"] == 2048 and d["eos_id"] == 0 and d["dtype"] == "uint16"
    assert d["encoder"] == "tiktoken", d["encoder_note"]
    sample = d["sample"]
    assert set(sample) == {"code", "web", "math"} and all(s["documents"] > 0 for s in sample.values())
    total = sum(s["bytes"] for s in sample.values())
    assert 0.5 * (2 << 20) < total < 1.5 * (2 << 20)  # the seeded sample is about sample_bytes
    # a different seed draws a different sample
    spec = load_spec(loaded.path).spec.model_dump(mode="json")
    spec["tokenizer"]["train"]["seed"] = 1
    other = load_spec(write_spec(tmp_path / "seed1.yaml", spec))
    assert run_stage("tokenizer", other, **QUIET)[0]["details"]["sample"] != sample
    run_stage("tokenizer", loaded, **QUIET)
    tm, _ = run_stage("tokenize", loaded, "math", **QUIET)
    reader, docs = _store(loaded, tm)
    tok = load_tokenizer(str(loaded.storage_root / m["outputs"][0]["path"]))
    quality = pq.read_table(loaded.storage_root / tm["inputs"][0]["path"])
    for i in range(0, len(reader), 97):
        assert tok.decode(reader[i][:-1].tolist()) == quality.column("text")[i].as_py()
    assert tm["token_counting"]["tokenizer_sha256"] == m["outputs"][0]["sha256"]


@pytest.mark.parametrize("tokenizer, field, fragment", [
    ({"train": {"vocab_size": 4096, "special_tokens": ["<pad>"]}}, "tokenizer.eos_token", "not among"),
    ({"train": {"vocab_size": 257}}, "tokenizer.train.vocab_size", "no room"),
    ({"path": str(GPT2), "eos_token": "</s>"}, "tokenizer.eos_token", "not in the vocabulary"),
])
def test_tokenizer_spec_errors(make_spec, tokenizer, field, fragment):
    spec = make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]}],
                     tokenizer=tokenizer)
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert any(i.path == field and fragment in i.message for i in e.value.issues), str(e.value)


def test_unloadable_tokenizer_file_is_named(make_spec, tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"not": "a tokenizer"}')
    spec = make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]}],
                     tokenizer={"path": str(bad)})
    with pytest.raises(SpecError, match="not a loadable tokenizer.json"):
        load_spec(spec)
