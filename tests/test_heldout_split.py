"""The held-out split on real documents: planted near-duplicates never straddle it, its sizes are
as declared, its bytes do not depend on the run or the worker count, megatron-core reads the held-out
store, and held-out text never reaches the plan or the mixed shards."""

from __future__ import annotations

import gzip
import json
import math
import warnings
from collections import defaultdict

import numpy as np
import pytest

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import SpecError, load_spec
from corpusmix.pipeline import build_all, run_stage
from corpusmix.stages.heldout_split import Clusters, Target, choose, target
from corpusmix.stages.minhash import jaccard, normalize, shingle_hashes
from corpusmix.stages.tokenizer import load_tokenizer

from .conftest import CORPUS, GPT2, base_spec, read_outputs, write_spec
from .test_tokenize import _store

MATH = CORPUS / "math" / "math-0000-of-0002.jsonl.gz"
OTHER = CORPUS / "math" / "math-0001-of-0002.jsonl.gz"
QUIET = {"progress": lambda m: None}
PLANTED_TOKENS = 5_000


def _records(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _edited(text: str) -> str:
    """A light edit as a copy would carry: the first words in capitals, other punctuation, and one
    word changed near the end (2 of a GSM8K problem's 50-100 word 5-grams)."""
    words = text.split(" ")
    words[-2] = "zebra"
    text = " ".join(words)
    return text[:40].upper() + text[40:].replace(".", " !") + "  "


def _spec(root, sources: list[dict], workers: int = 0):
    spec = base_spec(sources, root, execution={"workers": workers},
                     # within a source too: dedup's own near pass off, so the split's must see the copies
                     dedup={"near": {"enabled": False}},
                     mixture={"total_tokens": 200_000, "seq_len": 512,
                              "schedule": {"type": "static", "weights": {s["name"]: 1 for s in sources}}})
    return load_spec(write_spec(root / "spec.yaml", spec))


def _split(loaded, source: str):
    m = read_manifest(manifest_path(loaded.manifest_root, "heldout_split", source))
    return m, read_outputs(m, loaded.storage_root, "heldout_split").to_pandas().set_index("doc_id")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Math alone first (which documents its split holds out); then the same math file with lightly
    edited copies of 6 held-out documents appended (same source), and a second source of 300 real
    other math documents plus edited copies of 8 other held-out documents (across sources), built
    with 0 and with 2 workers."""
    base = tmp_path_factory.mktemp("heldout")
    (base / "first").mkdir()
    first = _spec(base / "first", [{"name": "math", "kind": "math", "paths": [str(MATH)]}])
    build_all(first, until="heldout_split", **QUIET)
    _, split = _split(first, "math")
    held = split[split["split"] == "heldout"].sort_values("rank").index.tolist()
    across, within = held[:8], held[8:14]
    records = _records(MATH)
    by_id = {r["id"]: r for r in records}
    data = base / "raw"
    data.mkdir()
    with gzip.open(data / "math.jsonl.gz", "wt", encoding="utf-8") as f:
        for r in records + [{**by_id[d], "id": f"{d}-copy", "text": _edited(by_id[d]["text"])} for d in within]:
            f.write(json.dumps(r) + "\n")
    with gzip.open(data / "planted.jsonl.gz", "wt", encoding="utf-8") as f:
        for r in _records(OTHER)[:300] + [{**by_id[d], "id": f"{d}-planted", "text": _edited(by_id[d]["text"])}
                                           for d in across]:
            f.write(json.dumps(r) + "\n")
    sources = [{"name": "math", "kind": "math", "paths": [str(data / "math.jsonl.gz")]},
               {"name": "planted", "kind": "math", "paths": [str(data / "planted.jsonl.gz")],
                "heldout": {"tokens": PLANTED_TOKENS, "min_documents": 5, "seed": 7}}]
    builds = {}
    for workers in (0, 2):
        (base / f"w{workers}").mkdir()
        builds[workers] = _spec(base / f"w{workers}", sources, workers)
        build_all(builds[workers], until="mixed_shards" if workers == 0 else "tokenize", **QUIET)
    return builds, across, within


def _texts(loaded, source: str, kind: str) -> dict[str, str]:
    m = read_manifest(manifest_path(loaded.manifest_root, "heldout_split", source))
    t = read_outputs(m, loaded.storage_root, kind)
    return dict(zip(t.column("doc_id").to_pylist(), t.column("text").to_pylist())) if t is not None else {}


@pytest.mark.slow  # builds math and a planted source three times
def test_planted_near_duplicates_never_straddle_the_split(planted):
    builds, across, within = planted
    loaded = builds[0]
    near = loaded.spec.dedup.near
    (m_math, math_split), (m_planted, planted_split) = _split(loaded, "math"), _split(loaded, "planted")
    # across sources: each original and its copy both stay in train, each naming the other
    for d in across:
        assert math_split.loc[d, "split"] == "train" and math_split.loc[d, "duplicate_elsewhere"] == f"planted:{d}-planted"
        copy = planted_split.loc[f"{d}-planted"]
        assert copy["split"] == "train" and copy["duplicate_elsewhere"] == f"math:{d}"
    # within a source: original and copy form one cluster, on one side; the clusters ranked first moved whole
    moved = 0
    for d in within:
        a, b = math_split.loc[d], math_split.loc[f"{d}-copy"]
        assert a["cluster_size"] == b["cluster_size"] == 2 and a["cluster_id"] == b["cluster_id"]
        assert a["split"] == b["split"]
        moved += a["split"] == "heldout"
    assert moved >= 1 and m_math["counts"]["clusters_moved_whole"] == moved

    # Independent of LSH: the true Jaccard of every held-out document (both sources) against every
    # train document (both sources) that shares a shingle with it.
    def shingles(text: str) -> np.ndarray:
        return np.unique(shingle_hashes(normalize(text, loaded.spec.dedup.normalize), near.shingle_words))

    held = {**_texts(loaded, "math", "heldout_documents"), **_texts(loaded, "planted", "heldout_documents")}
    train = {**_texts(loaded, "math", "documents"), **_texts(loaded, "planted", "documents")}
    assert len(held) == m_math["counts"]["heldout_documents"] + m_planted["counts"]["heldout_documents"]
    held_sh = {d: shingles(t) for d, t in held.items()}
    owners = defaultdict(set)
    for d, sh in held_sh.items():
        for h in sh.tolist():
            owners[h].add(d)
    straddling, planted_pairs = [], []
    for d, text in train.items():
        sh = shingles(text)
        for h in {o for x in sh.tolist() for o in owners.get(x, ())}:
            if jaccard(held_sh[h], sh) >= near.threshold:
                straddling.append((h, d))
    for d in across:  # the check can see a planted pair: each is a near-duplicate by dedup's definition
        planted_pairs.append(jaccard(shingles(train[d]), shingles(train[f"{d}-planted"])))
    for d in within:
        texts = {**held, **train}
        planted_pairs.append(jaccard(shingles(texts[d]), shingles(texts[f"{d}-copy"])))
    assert straddling == []
    assert min(planted_pairs) >= near.threshold


@pytest.mark.slow  # builds math and a planted source three times
def test_sizes_are_as_declared(planted):
    builds, _, _ = planted
    loaded = builds[0]
    m, split = _split(loaded, "math")
    n = m["counts"]["documents_in"]
    assert m["counts"]["heldout_documents"] == max(math.ceil(0.01 * n), 20) == (split["split"] == "heldout").sum()
    m, split = _split(loaded, "planted")
    held = split[split["split"] == "heldout"].sort_values("rank")
    tokens = held["n_tokens"].tolist()
    # the first eligible documents in rank order until the budget is reached: one fewer would not reach it
    assert sum(tokens) >= PLANTED_TOKENS > sum(tokens[:-1]) and len(tokens) >= 5
    assert m["counts"]["heldout_tokens"] == sum(tokens) and m["details"]["target"]["met"]
    skipped = split[(split["split"] == "train") & (split["rank"] < held["rank"].max())]
    assert skipped["duplicate_elsewhere"].notna().all()  # only documents with a duplicate elsewhere were passed over
    for name in ("math", "planted"):  # additive funnel: in - held out = train, documents and tokens
        c = _split(loaded, name)[0]["counts"]
        assert c["documents_in"] - c["heldout_documents"] == c["documents_out"]
        assert c["tokens_in"] - c["heldout_tokens"] == c["tokens_out"]


@pytest.mark.slow  # builds math and a planted source three times
def test_outputs_are_byte_identical_across_runs_and_worker_counts(planted):
    builds, _, _ = planted

    def digests(loaded) -> dict:
        out = {}
        for stage in ("heldout_split", "tokenize"):
            for s in loaded.source_names:
                m = read_manifest(manifest_path(loaded.manifest_root, stage, s))
                out |= {(stage, s, o["path"].rsplit("/", 1)[-1]): o["sha256"] for o in m["outputs"]}
        return out

    a, b = digests(builds[0]), digests(builds[2])
    assert a == b and any(k[2].startswith("heldout-") for k in a) and ("tokenize", "math", "valid.bin") in a


@pytest.mark.slow  # builds math and a planted source three times
def test_megatron_core_reads_the_heldout_store_and_it_never_enters_training(planted):
    builds, _, _ = planted
    loaded = builds[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    tok = load_tokenizer(str(GPT2))
    lineage = set(read_outputs(read_manifest(manifest_path(loaded.manifest_root, "mixed_shards", None)),
                               loaded.storage_root, "lineage").column("doc_id").to_pylist())
    plan = read_manifest(manifest_path(loaded.manifest_root, "mixture_plan", None))
    for s in loaded.source_names:
        m = read_manifest(manifest_path(loaded.manifest_root, "tokenize", s))
        reader, docs = _store(loaded, m, ("valid_bin", "valid_documents"))
        held = _texts(loaded, s, "heldout_documents")
        ds = IndexedDataset(str(reader.prefix))
        assert len(ds) == len(reader) == docs.num_rows == len(held) == m["counts"]["valid_documents"]
        assert ds.sequence_lengths.tolist() == docs.column("n_tokens").to_pylist()
        for i in (0, len(ds) // 2, len(ds) - 1):
            assert np.array_equal(ds[i], reader[i])
            assert tok.decode(ds[i][:-1].tolist()) == held[docs.column("doc_id")[i].as_py()]
        assert not lineage & set(held)  # no held-out document in the mixed shards
        assert plan["details"]["per_source"][s]["available"] == m["counts"]["tokens_stored"]  # train tokens only
        train_store, _ = _store(loaded, m)
        assert m["counts"]["tokens_stored"] == int(train_store.index.sizes.sum())


def test_other_sources_signatures_come_from_dedup_and_give_the_same_split(tmp_path):
    """With near dedup on, dedup publishes its survivors' signatures and exact keys, and each source's
    split reads the other sources' from there instead of hashing their text again: the split is the
    same bytes as one that hashes everything (the published files removed), near-duplicates planted
    across the two sources included."""
    import shutil

    web = [r for r in _records(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")[:150]]
    math = _records(MATH)[:300]
    a = [{"id": f"a-{i}", "text": r["text"]} for i, r in enumerate(web)]
    a += [{"id": f"a-copy-{i}", "text": _edited(f"{r['question']} {r['answer']}")} for i, r in enumerate(math[:40])]
    b = [{"id": f"b-{i}", "text": f"{r['question']} {r['answer']}"} for i, r in enumerate(math)]
    files = {}
    for name, rows in (("a", a), ("b", b)):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = base_spec([{"name": n, "kind": "web", "paths": [str(f)], "filters": {"rules": []},
                       "heldout": {"fraction": 0.2, "min_documents": 1}} for n, f in files.items()], tmp_path / "one")
    (tmp_path / "one").mkdir()
    loaded = load_spec(write_spec(tmp_path / "one" / "spec.yaml", spec))
    said: list[str] = []
    build_all(loaded, until="heldout_split", progress=said.append)
    assert any("heldout_split: pass 1" in line and "dedup's signatures" in line for line in said)
    first = {s: read_manifest(manifest_path(loaded.manifest_root, "heldout_split", s)) for s in ("a", "b")}
    assert first["a"]["counts"]["documents_with_duplicate_elsewhere"] >= 30  # the copies reach into b
    # the same storage without the published hashes: the split hashes every text itself
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    spec["storage"] = {"root": str(tmp_path / "two" / "data"), "manifests": str(tmp_path / "two" / "manifests")}
    again = load_spec(write_spec(tmp_path / "two" / "spec.yaml", spec))
    removed = [f.unlink() for f in (again.storage_root / "dedup").rglob("minhash-*.npy")]
    assert removed
    for s in ("a", "b"):
        manifest_path(again.manifest_root, "heldout_split", s).unlink()
    said.clear()
    for s in ("a", "b"):
        run_stage("heldout_split", again, s, progress=said.append)
    assert not any("dedup's signatures" in line for line in said)
    for s in ("a", "b"):
        second = read_manifest(manifest_path(again.manifest_root, "heldout_split", s))
        assert ([(o["path"], o["sha256"]) for o in second["outputs"]]
                == [(o["path"], o["sha256"]) for o in first[s]["outputs"]])


def test_choose_takes_whole_clusters_in_rank_order():
    """Pure: 6 documents; 1 and 4 are one cluster, 2 has a near-duplicate in another source."""
    cl = Clusters(root=np.array([0, 1, 2, 3, 1, 5]), members={1: [1, 4], 2: [2]}, outside={2: 99})
    order = np.array([2, 1, 0, 3, 4, 5])
    held, passed = choose(order, cl, np.array([10, 10, 10, 10, 10, 10]), Target(3, 0, True, 3, False))
    assert held.tolist() == [True, True, False, False, True, False] and passed == 1  # 2 passed over, 1+4 whole
    held, _ = choose(order, cl, np.ones(6, np.int64) * 10, Target(1, 25, False, 3, False))
    assert held.tolist() == [True, True, False, False, True, False]  # tokens: 20 < 25, then 30
    assert target(None, 100).documents == 0
    t = target(load_spec_heldout({"fraction": 0.3, "min_documents": 40}), 100)
    assert (t.documents, t.capped) == (40, False)
    t = target(load_spec_heldout({"min_documents": 80}), 100)
    assert (t.documents, t.capped) == (50, True)


def load_spec_heldout(decl: dict):
    from corpusmix.core.spec import HeldOut

    return HeldOut.model_validate(decl)


@pytest.mark.parametrize("heldout, field, fragment", [
    ({"fraction": 0.01, "tokens": 1000}, "sources[0].heldout", "give fraction or tokens, not both"),
    ({"fraction": 0.7}, "sources[0].heldout.fraction", "less than or equal to 0.5"),
    ({"fractoin": 0.1}, "sources[0].heldout.fractoin", "did you mean 'fraction'"),
    ({"tokens": -5}, "sources[0].heldout.tokens", "greater than or equal to 0"),
])
def test_heldout_spec_errors_name_the_field_and_the_fix(make_spec, heldout, field, fragment):
    with pytest.raises(SpecError) as e:
        load_spec(make_spec([{"name": "math", "kind": "math", "paths": [str(MATH)], "heldout": heldout}]))
    assert field in str(e.value) and fragment in str(e.value) and "fix:" in str(e.value)


def test_heldout_defaults_and_opting_out(make_spec):
    loaded = load_spec(make_spec([{"name": "math", "kind": "math", "paths": [str(MATH)]},
                                  {"name": "web", "kind": "web", "paths": [str(MATH)], "heldout": False}]))
    assert loaded.source("math").heldout.target == ("fraction", 0.01)
    assert loaded.source("math").heldout.min_documents == 20 and loaded.source("web").heldout is None


def _excerpt(text: str, words: int = 40) -> str:
    """Words from the middle of a text, in capitals with its punctuation changed: a quotation."""
    w = text.split()
    mid = max(0, len(w) // 2 - words // 2)
    return " ".join(w[mid:mid + words]).upper().replace(",", " ;")


def test_a_split_that_is_an_eval_set_shares_no_ngram_with_train(tmp_path):
    """wiki's held-out split declared as an eval set. Excerpts (40 words, case and punctuation changed)
    of its first held-out documents are planted inside web documents and inside a wiki document
    ranked last: those candidates stay in train, named with the document that holds the excerpt,
    and links.parquet gives the shared n-gram and its offset there; the split still meets its target
    with other documents; and, recounted here from the texts, no held-out document shares a 13-gram
    with any train document of either source."""
    from corpusmix.stages.eval_index import NORMALIZE, text_ngrams

    wiki = _records(CORPUS / "wiki" / "wiki-0000-of-0003.jsonl.gz")[:300]
    web = _records(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")[:300]
    sources = [{"name": "wiki", "kind": "prose", "paths": [str(tmp_path / "wiki.jsonl")],
                "heldout": {"fraction": 0.1, "min_documents": 1}},
               {"name": "web", "kind": "web", "paths": [str(tmp_path / "web.jsonl")]}]

    def build(name: str, eval_sets: list[dict]):
        for src, rows in (("wiki", wiki), ("web", web)):
            (tmp_path / f"{src}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp_path / name).mkdir()
        loaded = load_spec(write_spec(tmp_path / name / "spec.yaml",
                                      base_spec(sources, tmp_path / name, eval_sets=eval_sets)))
        build_all(loaded, until="heldout_split", **QUIET)
        return loaded

    first = build("plain", [])
    _, split = _split(first, "wiki")
    held = split[split["split"] == "heldout"].sort_values("rank").index.tolist()
    last = split.sort_values("rank").index[-1]
    by_id = {r["id"]: r for r in wiki}
    web_hosts = {h: web[i]["id"] for i, h in enumerate(held[:3])}
    for h, host in web_hosts.items():
        r = next(r for r in web if r["id"] == host)
        r["text"] += "\n" + _excerpt(by_id[h]["text"]) + "\n"
    by_id[last]["text"] += "\n" + _excerpt(by_id[held[3]]["text"]) + "\n"

    loaded = build("eval", [{"name": "wiki-heldout", "source": "wiki", "heldout": True}])
    m, split = _split(loaded, "wiki")
    for h, host in web_hosts.items():
        assert split.loc[h, "split"] == "train" and split.loc[h, "duplicate_elsewhere"] == f"web:{host}"
    assert split.loc[held[3], "split"] == "train" and split.loc[held[3], "duplicate_elsewhere"] == f"wiki:{last}"
    want = m["details"]["target"]["documents"]
    assert m["details"]["target"]["met"] and m["counts"]["heldout_documents"] == want > 4
    links = read_outputs(m, loaded.storage_root, "heldout_links").to_pandas()
    texts = {f"web:{r['id']}": r["text"] for r in web} | {f"wiki:{r['id']}": r["text"] for r in wiki}
    for h, other in [*((h, f"web:{host}") for h, host in web_hosts.items()), (held[3], f"wiki:{last}")]:
        row = links[(links["doc_id"] == h) & (links["other"] == other)].iloc[0]
        assert row["ngrams_matched"] >= 20 and row["offset"] >= 0
        shown = normalize(texts[other][row["offset"]:], NORMALIZE).split()[:13]
        assert b" ".join(shown).decode() == row["ngram"]  # the n-gram, found where the offset says
    heldout_texts = list(_texts(loaded, "wiki", "heldout_documents").values())
    train_texts = list(_texts(loaded, "wiki", "documents").values()) + list(_texts(loaded, "web", "documents").values())
    assert len(heldout_texts) == want
    shared = set(text_ngrams(heldout_texts, 13).hashes.tolist()) & set(text_ngrams(train_texts, 13).hashes.tolist())
    assert not shared


@pytest.mark.parametrize("eval_set,fragment", [
    ({"name": "h", "source": "math", "heldout": True, "where": {"split": "test"}}, "give 'source' and no 'where'"),
    ({"name": "h", "paths": ["x.jsonl"], "heldout": True}, "give 'source' and no 'where'"),
])
def test_a_heldout_eval_set_is_checked(make_spec, eval_set, fragment):
    with pytest.raises(SpecError, match=fragment):
        load_spec(make_spec([{"name": "math", "kind": "math", "paths": [str(MATH)]}], eval_sets=[eval_set]))


def test_a_heldout_eval_set_needs_the_source_to_have_a_split(make_spec):
    with pytest.raises(SpecError, match=r"source 'math'.s held-out split, and that source has none"):
        load_spec(make_spec([{"name": "math", "kind": "math", "paths": [str(MATH)], "heldout": False}],
                            eval_sets=[{"name": "h", "source": "math", "heldout": True}]))
