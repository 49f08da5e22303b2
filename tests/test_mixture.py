"""mixed_shards on the real corpus: quotas per phase, byte-identical rebuilds, megatron-core reading,
lineage that leads back to the documents, and the trainer-side reader (resume, data parallelism)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.mixture.plan import PlanError
from corpusmix.mixture.shards import check_on_target, epoch_permutation, realised_vs_target
from corpusmix.pipeline import run_stage
from corpusmix.stages.tokenizer import load_tokenizer
from corpusmix.trainer.loader import SampleReader, TokenStream

from .conftest import GPT2, copy_build
from .test_tokenize import QUIET

MIXTURE = {"total_tokens": 3_000_000, "seq_len": 512, "seed": 3, "max_epochs": 4,
           "schedule": {"type": "phases", "transition": "linear", "phases": [
               {"name": "a", "end": 0.5, "weights": {"code": 1, "web": 1, "math": 2}},
               {"name": "b", "end": 0.8, "weights": {"code": 3, "web": 0.5, "math": 1}},
               {"name": "c", "end": 1.0, "weights": "unimax"}]}}


def _respec(loaded, path, **changes):
    spec = yaml.safe_load(loaded.path.read_text())
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec))
    return load_spec(path)


@pytest.fixture(scope="module")
def mixed(built_corpus, tmp_path_factory):
    loaded = copy_build(built_corpus, tmp_path_factory.mktemp("mix"), mixture=MIXTURE,
                        output={"shard_tokens": 500_000})
    run_stage("mixture_plan", loaded, **QUIET)
    manifest, _ = run_stage("mixed_shards", loaded, **QUIET)
    return loaded, manifest


def _dir(loaded, manifest):
    return loaded.storage_root / manifest["outputs"][0]["path"].rsplit("/", 1)[0]


def _lineage(loaded, manifest) -> pa.Table:
    return pa.concat_tables([pq.read_table(loaded.storage_root / o["path"]) for o in manifest["outputs"]
                             if o["kind"] == "lineage"])


def test_quotas_per_phase_are_met(mixed):
    loaded, m = mixed
    plan = read_manifest(manifest_path(loaded.manifest_root, "mixture_plan", None))["details"]
    # shards of 500k tokens, and one more edge at phase c's start (2.4M): every phase has shards of its own
    assert m["counts"]["tokens_out"] == 3_000_001 and m["counts"]["shards"] == 7
    starts = [info["stream_start"] for info in m["details"]["shards"]]
    assert starts == [0, 500_000, 1_000_000, 1_500_000, 2_000_000, 2_400_000, 2_500_000]
    assert [sorted(info["phases"]) for info in m["details"]["shards"]] == [["a"]] * 3 + [["b"]] * 2 + [["c"]] * 2
    for ph, want in zip(m["details"]["phases"], plan["phases"]):
        for s, r in ph["sources"].items():
            assert r["target"] == pytest.approx(want["quotas"][s])
            assert abs(r["realised"] - r["target"]) <= max(0.005 * r["target"], r["tolerance"]), (ph["name"], s, r)
            assert r["ok"]
    # phases are contiguous, in order, and sum to the stream
    assert sum(ph["tokens"] for ph in m["details"]["phases"]) == 3_000_001
    lin = _lineage(loaded, m)
    starts = lin.column("stream_start").to_numpy()
    assert np.array_equal(np.sort(starts), starts)
    assert np.array_equal(starts[1:], starts[:-1] + lin.column("n_tokens").to_numpy()[:-1])  # no gap, no overlap
    phases = lin.column("phase").to_pylist()
    assert phases == sorted(phases, key="abc".index)
    off, worst = check_on_target(loaded)
    assert off == [] and 0 < worst["of_tolerance"] <= 1  # a passing check still shows its margin


def test_documents_follow_a_fresh_permutation_each_epoch(mixed):
    loaded, m = mixed
    lin = _lineage(loaded, m).to_pylist()
    starts = [r for r in lin if r["doc_offset"] == 0]
    web = [r for r in starts if r["source"] == "web"]
    epochs = sorted({r["epoch"] for r in web})
    assert epochs[:4] == [0, 1, 2, 3]  # web is planned at ~3.2 epochs
    docs = pq.read_table(loaded.storage_root / next(
        o["path"] for o in read_manifest(manifest_path(loaded.manifest_root, "tokenize", "web"))["outputs"]
        if o["kind"] == "token_documents")).column("doc_id").to_pylist()
    for e in epochs[:3]:  # complete epochs: every document exactly once, in the seeded permutation's order
        ids = [r["doc_id"] for r in web if r["epoch"] == e]
        assert ids == [docs[i] for i in epoch_permutation(3, "web", e, len(docs))]
    assert [r["doc_id"] for r in web if r["epoch"] == 0] != [r["doc_id"] for r in web if r["epoch"] == 1]


def test_shards_are_byte_identical_across_builds(mixed, tmp_path):
    loaded, m = mixed
    outdir = _dir(loaded, m)
    before = {o["path"]: o["sha256"] for o in m["outputs"]}
    shutil.rmtree(outdir)
    code = ("import sys; from corpusmix.core.spec import load_spec; from corpusmix.pipeline import run_stage;"
            "run_stage('mixed_shards', load_spec(sys.argv[1]), progress=lambda m: None)")
    r = subprocess.run([sys.executable, "-c", code, str(loaded.path)], capture_output=True, text=True,
                       env=os.environ | {"PYTHONHASHSEED": "12345"})
    assert r.returncode == 0, r.stderr
    again = read_manifest(manifest_path(loaded.manifest_root, "mixed_shards", None))
    assert {o["path"]: o["sha256"] for o in again["outputs"]} == before
    assert again["content_hash"] == m["content_hash"]


def test_megatron_core_reads_the_shards(mixed):
    loaded, m = mixed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    stream = TokenStream.from_dir(_dir(loaded, m))
    lin = _lineage(loaded, m)
    for k, info in enumerate(m["details"]["shards"]):
        ds = IndexedDataset(str(_dir(loaded, m) / f"shard-{k:05d}"))
        assert len(ds) == info["sequences"] and int(ds.sequence_lengths.sum()) == info["tokens"]
        flat = np.concatenate([ds[i] for i in range(len(ds))])
        assert np.array_equal(flat, stream.tokens(info["stream_start"], info["stream_end"]))
        rows = lin.filter(pa.compute.equal(lin.column("shard"), k))
        assert rows.column("sequence").to_pylist()[-1] == len(ds) - 1


def test_lineage_leads_back_to_the_documents(mixed):
    loaded, m = mixed
    tok = load_tokenizer(str(GPT2))
    stream = TokenStream.from_dir(_dir(loaded, m))
    reader = SampleReader(stream, 512)
    lin = _lineage(loaded, m)
    starts = lin.column("stream_start").to_numpy()
    texts, stores = {}, {}
    for s in loaded.source_names:
        tm = read_manifest(manifest_path(loaded.manifest_root, "tokenize", s))
        q = pq.read_table(loaded.storage_root / tm["inputs"][0]["path"], columns=["doc_id", "text"])
        texts[s] = dict(zip(q.column("doc_id").to_pylist(), q.column("text").to_pylist()))
        from corpusmix.core.indexed import IndexedReader

        bin_out = next(o for o in tm["outputs"] if o["kind"] == "token_bin")
        docs = pq.read_table(loaded.storage_root / next(o["path"] for o in tm["outputs"]
                                                         if o["kind"] == "token_documents"))
        stores[s] = (IndexedReader((loaded.storage_root / bin_out["path"]).with_suffix("")),
                     dict(zip(docs.column("doc_id").to_pylist(), docs.column("sequence").to_pylist())))
    rng = np.random.default_rng(0)
    checked = 0
    for k in rng.choice(len(reader), 60, replace=False):
        lo, hi = int(k) * 512, int(k) * 512 + 513
        first = int(np.searchsorted(starts, lo, side="right")) - 1
        last = int(np.searchsorted(starts, hi, side="left"))
        for row in lin.slice(first, last - first).to_pylist():
            a, b = max(lo, row["stream_start"]), min(hi, row["stream_start"] + row["n_tokens"])
            piece = stream.tokens(a, b)
            store, seq_of = stores[row["source"]]
            doc_tokens = store[seq_of[row["doc_id"]]]
            off = row["doc_offset"] + (a - row["stream_start"])
            assert np.array_equal(piece, doc_tokens[off:off + (b - a)])  # the exact tokens of that document
            text = tok.decode(piece[piece != 50256].tolist()).strip("\ufffd")
            assert text in texts[row["source"]][row["doc_id"]]  # and they decode to its text
            checked += 1
    assert checked > 60


def test_every_token_after_the_first_is_a_target_once_and_resume_and_ranks(mixed):
    loaded, m = mixed
    stream = TokenStream.from_dir(_dir(loaded, m))
    reader = SampleReader(stream, 512)
    assert len(reader) == 3_000_000 // 512
    targets = np.concatenate([y for _, _, y in reader.iter()])
    assert np.array_equal(targets, stream.tokens(1, len(reader) * 512 + 1))
    inputs = np.concatenate([x for _, x, _ in reader.iter()])
    assert np.array_equal(inputs, stream.tokens(0, len(reader) * 512))
    full = [(k, x.tolist()) for k, x, _ in reader.iter()]
    resumed = [(k, x.tolist()) for k, x, _ in reader.iter(start=1234)]
    assert resumed == full[1234:]
    world = 4
    ranks = [list(reader.indices(start=8, rank=r, world=world)) for r in range(world)]
    assert sorted(i for r in ranks for i in r) == list(range(8, len(reader)))  # no overlap, no gap
    assert all(r[:3] == [8 + q, 8 + q + world, 8 + q + 2 * world] for q, r in enumerate(ranks))


def test_torch_dataset_with_workers_keeps_the_rank_order(mixed):
    import torch
    from torch.utils.data import DataLoader

    from corpusmix.trainer.torch_data import MixedShardsDataset

    loaded, m = mixed
    ds = MixedShardsDataset(_dir(loaded, m), 512, rank=1, world=3, start=30)
    got = list(DataLoader(ds, batch_size=None, num_workers=2))
    want = list(range(31, 3_000_000 // 512, 3))
    assert [int(b["sample"]) for b in got] == want and len(ds) == len(want)
    reader = SampleReader(TokenStream.from_dir(_dir(loaded, m)), 512)
    x, y = reader[want[5]]
    assert got[5]["input_ids"].dtype == torch.int64
    assert got[5]["input_ids"].tolist() == x.tolist() and got[5]["labels"].tolist() == y.tolist()


def test_a_plan_over_the_cap_stops_the_build(mixed, tmp_path):
    loaded, _ = mixed
    greedy = dict(MIXTURE, total_tokens=30_000_000)
    over = _respec(loaded, tmp_path / "over.yaml", mixture=greedy)
    with pytest.raises(PlanError, match="source 'web' would be repeated"):
        run_stage("mixture_plan", over, **QUIET)


def test_the_on_target_check_recounts_the_lineage_and_fails_when_it_is_off(mixed):
    loaded, m = mixed
    assert check_on_target(loaded)[0] == []
    paths = [loaded.storage_root / o["path"] for o in m["outputs"] if o["kind"] == "lineage"][:2]
    originals = [p.read_bytes() for p in paths]
    try:
        for path in paths:  # code's first ~320k tokens of phase a relabelled as math
            t = pq.read_table(path)
            relabelled = pa.array(["math" if s == "code" else s for s in t.column("source").to_pylist()])
            pq.write_table(t.set_column(t.schema.get_field_index("source"), "source", relabelled), path)
        off, _ = check_on_target(loaded)
        assert {(o["phase"], o["source"]) for o in off} >= {("a", "code"), ("a", "math")}
    finally:
        for path, original in zip(paths, originals):
            path.write_bytes(original)


def test_cumulative_tokens_track_the_target_at_every_shard_boundary(mixed):
    """At each shard boundary X, every source's realised tokens so far are within one document
    (the longest placed in the shards on either side, of any source) of its cumulative target."""
    loaded, m = mixed
    plan = read_manifest(manifest_path(loaded.manifest_root, "mixture_plan", None))
    plan_file = loaded.storage_root / plan["outputs"][0]["path"]
    import orjson

    grid = orjson.loads(plan_file.read_bytes())["grid"]
    x = np.array(grid["x"])
    realised = {s: 0 for s in loaded.source_names}
    shards = m["details"]["shards"]
    for k, info in enumerate(shards[:-1]):
        for s, n in info["tokens_per_source"].items():
            realised[s] += n
        boundary = info["stream_end"]
        near = [d for sh in shards[max(0, k - 1):k + 2] for ph in sh["longest_document"].values() for d in ph.values()]
        for s in realised:
            target = np.interp(boundary, x, np.array(grid["cumulative"][s]))
            assert abs(realised[s] - target) <= max(near), (k, s, realised[s], target)


def test_a_source_without_share_gets_no_tokens_in_that_phase(built_corpus, tmp_path):
    """A source with no share in a phase gets none of its tokens there: neither at the end of the
    stream (which follows the final shares) nor just after the boundary (documents due before it
    are fenced in front of it; before, two dialogue documents, 268 tokens, landed after it)."""
    mixture = {"total_tokens": 600_000, "seq_len": 512, "seed": 5, "max_epochs": 8,
               "schedule": {"type": "phases", "transition": "step", "phases": [
                   {"name": "all", "end": 0.7, "weights": {"code": 1, "web": 1, "math": 1, "dialogue": 1}},
                   {"name": "no_dialogue", "end": 1.0, "weights": {"code": 1, "web": 1, "math": 1}}]}}
    loaded = copy_build(built_corpus, tmp_path, mixture=mixture, output={"shard_tokens": 200_000})
    run_stage("mixture_plan", loaded, **QUIET)
    m, _ = run_stage("mixed_shards", loaded, **QUIET)
    assert check_on_target(loaded)[0] == []
    lin = pa.concat_tables(pq.read_table(loaded.storage_root / o["path"]) for o in m["outputs"]
                           if o["kind"] == "lineage")
    late = lin.filter(pc.and_(pc.equal(lin.column("source"), "dialogue"), pc.equal(lin.column("phase"), "no_dialogue")))
    assert late.num_rows == 0
    last = next(ph for ph in m["details"]["phases"] if ph["name"] == "no_dialogue")["sources"]["dialogue"]
    assert last["target"] == 0.0 and last["realised"] == 0 and last["tolerance"] == 0
    first = next(ph for ph in m["details"]["phases"] if ph["name"] == "all")["sources"]["dialogue"]
    assert first["ok"]  # the fenced documents count in the phase they were due in


def test_a_document_longer_than_the_whole_budget_fills_it(make_spec, tmp_path):
    """One document of ~90k tokens and a budget of 1,000: the stream is its first 1,001 tokens
    (before, the window search gave up: "no source has documents left to draw")."""
    import json

    from corpusmix.pipeline import build_all

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text(json.dumps({"id": "long", "text": " ".join(f"word{i}" for i in range(30000))}) + "\n")
    loaded = load_spec(make_spec([{"name": "s", "kind": "web", "paths": [str(raw / "*.jsonl")],
                                   "filters": {"rules": ["length_chars"]}}],
                                 mixture={"total_tokens": 1000, "seq_len": 10,
                                          "schedule": {"type": "static", "weights": {"s": 1}}},
                                 output={"shard_tokens": 1024}))
    build_all(loaded)
    m = read_manifest(manifest_path(loaded.manifest_root, "mixed_shards", None))
    assert m["counts"]["tokens_out"] == 1001 and m["counts"]["documents_started"] == 1
    stream = TokenStream.from_dir(_dir(loaded, m))
    tm = read_manifest(manifest_path(loaded.manifest_root, "tokenize", "s"))
    from corpusmix.core.indexed import IndexedReader

    store = IndexedReader((loaded.storage_root / next(o["path"] for o in tm["outputs"]
                                                      if o["kind"] == "token_bin")).with_suffix(""))
    assert np.array_equal(stream.tokens(0, 1001), store[0][:1001])


def test_the_loader_refuses_a_damaged_or_incomplete_shard_set(mixed, tmp_path):
    """A flipped byte, a zeroed page, a truncated .bin, a missing last shard, an id beyond the
    vocabulary: each stops the loader when it opens the set (or reads the sample), naming the file."""
    from corpusmix.trainer.loader import ShardSetError

    loaded, m = mixed
    good = tmp_path / "good"
    shutil.copytree(_dir(loaded, m), good)
    assert len(TokenStream.from_dir(good)) == m["counts"]["tokens_out"]
    n = m["counts"]["shards"]

    def damaged(name: str, change) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        change(d)
        return d

    def flip(d):
        f = d / "shard-00001.bin"
        data = bytearray(f.read_bytes())
        data[12345] ^= 0x01
        f.write_bytes(bytes(data))

    def zero_page(d):
        f = d / "shard-00000.bin"
        data = bytearray(f.read_bytes())
        data[8192:12288] = bytes(4096)
        f.write_bytes(bytes(data))

    def truncate(d):
        f = d / "shard-00000.bin"
        f.write_bytes(f.read_bytes()[:-2])

    def drop_last(d):
        for suffix in (".bin", ".idx", ".json"):
            (d / f"shard-{n - 1:05d}{suffix}").unlink()

    for name, change, message in (("flip", flip, r"shard-00001.bin: sha256 differs"),
                                  ("page", zero_page, r"shard-00000.bin: sha256 differs"),
                                  ("short", truncate, r"shard-00000.bin: .* bytes, the manifest says"),
                                  ("last", drop_last, rf"1 of the set's {n} shards are missing \(shard {n - 1}\)")):
        with pytest.raises(ShardSetError, match=message):
            TokenStream.from_dir(damaged(name, change))
    # without checksums the flip goes unseen, unless it makes an id the tokenizer cannot produce
    beyond = damaged("beyond", lambda d: None)
    f = beyond / "shard-00000.bin"
    tokens = np.fromfile(f, dtype=np.uint16)
    tokens[700] = 65_000  # GPT-2 has 50,257 ids
    tokens.tofile(f)
    reader = SampleReader(TokenStream.from_dir(beyond, verify=False), 512)
    reader[0]
    with pytest.raises(ShardSetError, match=r"sample 1 holds token id 65000, beyond the vocabulary of 50257"):
        reader[1]
    with pytest.raises(ShardSetError, match="sample 1"):
        list(reader.iter(start=0))


def test_each_source_is_held_to_its_own_documents_and_what_others_displace():
    """A source's tolerance is its own longest document in the phase plus what the other
    sources' longest documents can displace (share / (1 - their share) of them), not the
    longest document of any source: next to a 60k-token code document (share 0.7), math
    (share 0.2, documents of at most 400 tokens) is held to 400 + 0.2 / 0.3 × 60k = 40.4k and
    web (share 0.1) to 400 + 0.1 / 0.3 × 60k = 20.4k; web 35k over fails."""
    plan = {"sources": ["code", "math", "web"],
            "phases": [{"name": "p", "quotas": {"code": 700_000.0, "math": 200_000.0, "web": 100_000.0}}]}
    longest = {"p": {"code": 60_000, "math": 400, "web": 400}}

    def rows(code, math, web):
        return realised_vs_target(plan, [{"phases": {"p": {"code": code, "math": math, "web": web}},
                                          "longest_document": longest}])[0]["sources"]

    ok = rows(725_000, 180_000, 95_000)
    assert ok["web"]["tolerance"] == pytest.approx(400 + 0.1 / 0.3 * 60_000)
    assert ok["math"]["tolerance"] == pytest.approx(400 + min(1, 0.2 / 0.3) * 60_000)
    assert ok["code"]["tolerance"] == pytest.approx(60_000 + 0.7 / 0.8 * 400)
    assert all(r["ok"] for r in ok.values())
    off = rows(665_000, 200_000, 135_000)  # web over by 35k: more than code's document can explain
    assert not off["web"]["ok"] and off["code"]["ok"] and off["math"]["ok"]


def _phase_files(loaded, manifest, phases: set[str]) -> dict[str, str]:
    """sha256 of every file of the shards lying wholly in ``phases`` (shard, index, manifest, lineage)."""
    keep = {f"{p}-{i['shard']:05d}" for i in manifest["details"]["shards"] if set(i["phases"]) <= phases
            for p in ("shard", "lineage")}
    return {o["path"].rsplit("/", 1)[1]: o["sha256"] for o in manifest["outputs"]
            if o["path"].rsplit("/", 1)[1].split(".")[0] in keep}


@pytest.mark.parametrize("seed", [3, 11])
def test_replanning_a_later_phase_keeps_the_shards_before_it_byte_identical(built_corpus, tmp_path, seed):
    """New weights for phase b (an accepted next-phase proposal) rebuild b and c and leave every file of
    phase a's shards byte-identical; new weights for c leave a's and b's; the new phase meets its quotas."""
    def phases(b, c):
        return {"total_tokens": 2_000_000, "seq_len": 512, "seed": seed, "max_epochs": 6,
                "schedule": {"type": "phases", "phases": [
                    {"name": "a", "end": 0.37, "weights": {"code": 1, "web": 1, "math": 2}},
                    {"name": "b", "end": 0.71, "weights": b}, {"name": "c", "end": 1.0, "weights": c}]}}

    b0, c0 = {"code": 3, "web": 0.5, "math": 1}, {"code": 1, "web": 1, "math": 1}
    built = {}
    for name, mixture in [("before", phases(b0, c0)), ("new_b", phases({"code": 1, "web": 2.5, "math": 0.7}, c0)),
                          ("new_b2", phases({"code": 0.2, "web": 1, "math": 3}, c0)),
                          ("new_c", phases(b0, {"code": 2, "web": 0.1, "math": 1}))]:
        loaded = copy_build(built_corpus, tmp_path / name, mixture=mixture, output={"shard_tokens": 300_000})
        run_stage("mixture_plan", loaded, **QUIET)
        built[name] = (loaded, run_stage("mixed_shards", loaded, **QUIET)[0])
        assert check_on_target(loaded)[0] == [], name
    before = built["before"][1]
    for name, kept in (("new_b", {"a"}), ("new_b2", {"a"}), ("new_c", {"a", "b"})):
        m = built[name][1]
        same = _phase_files(*built["before"], kept)
        assert len(same) >= 8 and _phase_files(*built[name], kept) == same, name
        # and the phase after it did change
        assert {o["sha256"] for o in m["outputs"]} != {o["sha256"] for o in before["outputs"]}


def test_sources_per_target_token_match_a_duckdb_recount_of_the_lineage(mixed):
    """The dataset's source of every target token, over 100 random samples (workers and ranks as a trainer
    runs them), counted per sample and source, equals DuckDB's recount of the lineage files' token ranges."""
    import duckdb
    import torch

    from corpusmix.trainer.torch_data import MixedShardsDataset

    loaded, m = mixed
    directory = _dir(loaded, m)
    ds = MixedShardsDataset(directory, 512)
    names = ds.reader.stream.sources
    assert names == loaded.source_names
    wanted = set(np.random.default_rng(0).choice(len(ds.reader), 100, replace=False).tolist())
    got = {}
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for item in loader:
        if item["sample"] in wanted:
            assert item["sources"].shape == item["labels"].shape == (512,)
            counts = np.bincount(item["sources"].numpy(), minlength=len(names))
            got[item["sample"]] = {names[i]: int(n) for i, n in enumerate(counts) if n}
    assert len(got) == 100 and sum(len(v) for v in got.values()) > 100  # some samples mix sources
    files = [str(loaded.storage_root / o["path"]) for o in m["outputs"] if o["kind"] == "lineage"]
    rows = duckdb.connect().execute("""
        WITH s AS (SELECT unnest(?::BIGINT[]) AS k), w AS (SELECT k, k * 512 + 1 AS a, k * 512 + 513 AS b FROM s)
        SELECT k, source, sum(least(stream_start + n_tokens, b) - greatest(stream_start, a))::BIGINT
        FROM w JOIN read_parquet(?) ON stream_start < b AND stream_start + n_tokens > a GROUP BY ALL""",
        [sorted(wanted), files]).fetchall()
    recount = {}
    for k, source, n in rows:
        recount.setdefault(k, {})[source] = n
    assert got == recount
    # the per-sample path a Megatron-style trainer uses gives the same counts
    for k in sorted(wanted)[:10]:
        counts = ds.reader.source_counts(k)
        assert {names[i]: int(n) for i, n in enumerate(counts) if n} == recount[k]
