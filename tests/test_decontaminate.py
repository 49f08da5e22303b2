"""Decontamination against eval sets: GSM8K's test split out of math, planted contamination found,
clean text left alone, spans cut GPT-3 style, bad eval files refused before any work."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys

import pyarrow as pa
import pytest
from tokenizers import Tokenizer

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.ops import audit
from corpusmix.pipeline import build_all
from corpusmix.stages.decontaminate import find_matches, word_spans
from corpusmix.stages.eval_index import build_index, text_ngrams

from .conftest import CORPUS, GPT2, read_outputs

QUIET = {"progress": lambda m: None}
GSM8K = sorted((CORPUS / "math").glob("*.jsonl.gz"))


def _records(path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def _gsm8k_test() -> list[dict]:
    return [r for p in GSM8K for r in _records(p) if r["split"] == "test"]


def _jsonl(path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _decontaminated(loaded, source):
    m = read_manifest(manifest_path(loaded.manifest_root, "decontaminate", source))
    return m, read_outputs(m, loaded.storage_root, "documents"), read_outputs(m, loaded.storage_root, "contamination")


# ----------------------------------------------------------------------------- fast: the pieces


def test_word_spans_map_normalised_words_back_to_characters():
    text = "Hello,  World! It's 3.5 km"
    spans = word_spans(text)
    assert [text[a:b] for a, b in spans] == ["Hello", "World", "It", "s", "3", "5", "km"]
    text = "Straße, «ΟΔΟΣ»—x"  # non-ASCII letters stay in words; Unicode punctuation separates them
    assert [text[a:b] for a, b in word_spans(text)] == ["Straße", "ΟΔΟΣ", "x"]


def test_matches_survive_case_punctuation_and_whitespace_but_not_a_changed_word():
    item = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    items = pa.table({"text": [item]})
    index, stats = build_index(items, 13, 10)
    hashes, owners = index.column("hash").to_numpy(), index.column("item").to_numpy()
    assert stats["ngrams"] == len(text_ngrams([item], 13).hashes) == 20 - 13 + 1
    edited = "NATALIA sold clips -- to 48 of her\n\nfriends in April; and then she sold half as many clips in May!"
    found = find_matches(["unrelated words " * 20, f"Intro text. {edited} Outro."], 13, hashes, owners)
    assert list(found) == [1] and found[1][0].count == 8  # every 13-gram of the item, offsets from word 2
    changed = item.replace("friends", "cousins")  # word 8 of 20: no 13-word window avoids it
    assert find_matches([changed], 13, hashes, owners) == {}


def test_batch_punctuation_folding_gives_normalizes_words_on_real_text():
    """The scan folds Unicode punctuation over a whole batch with numpy; the words must be exactly
    those of the per-text regex (dedup's normaliser), on every real document and on each edge of
    the folded ranges."""
    from corpusmix.stages.eval_index import NORMALIZE
    from corpusmix.stages.minhash import blank_unicode_punct, normalize

    edges = "".join(chr(c) for c in (0xA0, 0xA1, 0xBF, 0xC0, 0xD7, 0xF7, 0x1FFF, 0x2000, 0x206F, 0x2070,
                                     0x2FFF, 0x3000, 0x303F, 0x3040, 0xFF01))
    texts = [r["text"] for name in ("wiki", "web", "dialogue")
             for r in _records(sorted((CORPUS / name).glob("*.jsonl.gz"))[0])]
    texts += [" ".join(f"a{ch}b" for ch in edges), edges, "plain ascii, no change."]
    assert sum(not t.isascii() for t in texts) > 100
    for t in texts:
        batched = blank_unicode_punct(normalize(t, NORMALIZE, unicode_punct=False))
        assert batched.split() == normalize(t, NORMALIZE).split()
        assert len(batched) == len(normalize(t, NORMALIZE, unicode_punct=False))  # offsets kept


def test_an_ngram_in_too_many_items_is_ignored():
    common = "please read the question below carefully and answer it with a single number only"
    items = pa.table({"text": [f"{common} item {i} " + " ".join(f"w{i}x{j}" for j in range(13)) for i in range(12)]})
    index, stats = build_index(items, 13, max_items=10)
    assert stats["too_common_ngrams"] > 0
    found = find_matches([common], 13, index.column("hash").to_numpy(), index.column("item").to_numpy())
    assert found == {}  # the shared instructions alone are not contamination


def _small_build(tmp_path, docs: list[dict], items: list[dict], **decon):
    from .conftest import base_spec, write_spec

    src = _jsonl(tmp_path / "docs.jsonl", docs)
    ev = _jsonl(tmp_path / "eval.jsonl", items)
    spec = base_spec([{"name": "web", "kind": "web", "paths": [str(src)]}], tmp_path,
                     eval_sets=[{"name": "bench", "paths": [str(ev)], "fields": ["question", "answer"]}],
                     decontamination=decon)
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", spec))
    build_all(loaded, until="decontaminate", **QUIET)
    return loaded


def test_remove_span_cuts_the_match_with_its_margin_and_recounts_exact_tokens(tmp_path):
    q = "A farmer has 17 sheep and buys 5 more every week for 3 weeks, then sells a third of them at the market."
    a = "He has 17 + 15 = 32 sheep and sells 32 / 3, which is not a whole number, so the question is wrong."
    before, after = "Lorem ipsum dolor sit amet. " * 40, " Consectetur adipiscing elit sed do. " * 40
    docs = [{"id": "long", "text": before + q + "\n" + a + after},
            {"id": "short", "text": "Intro. " + q + " " + a},
            {"id": "clean", "text": before + after}]
    loaded = _small_build(tmp_path, docs, [{"id": "item-1", "question": q, "answer": a}], policy="remove_span")
    m, kept, hits = _decontaminated(loaded, "web")
    rows = {r["doc_id"]: r for r in kept.to_pylist()}
    assert set(rows) == {"long", "clean"}  # "short" would keep under 200 characters: dropped
    cut = rows["long"]["text"]
    assert q[:30] not in cut and cut.startswith(before[:200 - 1]) and cut.endswith(after[-200:])
    assert len(before + q + "\n" + a + after) - len(cut) >= len(q) + len(a) + 400  # match ± 200 characters
    tok = Tokenizer.from_file(str(GPT2))
    assert rows["long"]["n_tokens"] == len(tok.encode(cut).ids) and rows["long"]["n_bytes"] == len(cut.encode())
    assert m["reasons"]["span_removed"]["records"] == 0 and m["counts"]["documents_cut"] == 1
    assert m["reasons"]["contaminated: bench"]["records"] == 1
    h = {r["doc_id"]: r for r in hits.to_pylist()}
    assert h["long"]["action"] == "span_removed" and h["short"]["action"] == "dropped"
    assert h["long"]["item_id"] == "item-1" and docs[0]["text"][h["long"]["offset"]:].lower().startswith("a farmer")
    c = m["counts"]
    assert c["tokens_in"] - sum(r["tokens"] for r in m["reasons"].values()) == c["tokens_out"]


def test_tokenize_encodes_a_cut_document_again_and_takes_the_rest_from_ingests_token_ids(tmp_path):
    """ingest keeps the ids it counted with; a document decontamination cut no longer has that
    text, so tokenize must encode it afresh (the digest check), and reuse only the untouched."""
    from .conftest import base_spec, write_spec

    item = _gsm8k_test()[0]
    wiki = _records(sorted((CORPUS / "wiki").glob("*.jsonl.gz"))[0])[:3]
    long = wiki[0]["text"][:3000] + "\n" + item["question"] + "\n" + wiki[0]["text"][3000:6000]
    docs = [{"id": "cut", "text": long}, {"id": "clean-1", "text": wiki[1]["text"]},
            {"id": "clean-2", "text": wiki[2]["text"]}]
    src, ev = _jsonl(tmp_path / "docs.jsonl", docs), _jsonl(tmp_path / "eval.jsonl", [item])
    spec = base_spec([{"name": "wiki", "kind": "prose", "paths": [str(src)], "filters": {"rules": []},
                       "heldout": False}], tmp_path,
                     eval_sets=[{"name": "gsm8k", "paths": [str(ev)], "fields": ["question", "answer"]}],
                     decontamination={"policy": "remove_span"})
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", spec))
    build_all(loaded, until="tokenize", **QUIET)
    m, kept, _ = _decontaminated(loaded, "wiki")
    assert m["counts"]["documents_cut"] == 1
    cut = next(r["text"] for r in kept.to_pylist() if r["doc_id"] == "cut")
    t = read_manifest(manifest_path(loaded.manifest_root, "tokenize", "wiki"))
    assert t["details"]["ids_reused_documents"] == 2 and t["details"]["ids_encoded_documents"] == 1
    from corpusmix.core.indexed import IndexedReader

    bin_out = next(o for o in t["outputs"] if o["kind"] == "token_bin")
    reader = IndexedReader((loaded.storage_root / bin_out["path"]).with_suffix(""))
    order = read_outputs(t, loaded.storage_root, "token_documents").column("doc_id").to_pylist()
    tok = Tokenizer.from_file(str(GPT2))
    texts = {"cut": cut, "clean-1": wiki[1]["text"], "clean-2": wiki[2]["text"]}
    for i, doc_id in enumerate(order):  # every stored sequence is its current text's ids, then EOS
        assert reader[i][:-1].tolist() == tok.encode(texts[doc_id], add_special_tokens=False).ids
    assert t["details"]["estimate_check"]["relative_error"] == 0


def test_a_bad_eval_file_stops_validate_and_build_before_any_work(tmp_path):
    from .conftest import base_spec, write_spec

    src = _jsonl(tmp_path / "docs.jsonl", [{"id": "d", "text": "some text"}])
    ev = _jsonl(tmp_path / "eval.jsonl", [{"id": "i1", "question": "q?", "answer": "a"}, {"id": "i2", "question": "q"}])
    spec = write_spec(tmp_path / "spec.yaml", base_spec(
        [{"name": "web", "kind": "web", "paths": [str(src)]}], tmp_path,
        eval_sets=[{"name": "bench", "paths": [str(ev)], "fields": ["question", "answer"]}]))
    for cmd in (["corpusmix.cli", "validate"], ["workflows.cli", "build"]):
        r = subprocess.run([sys.executable, "-m", *cmd, str(spec)], capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "DAGSTER_HOME": str(tmp_path / "home")})
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"{ev}:2: field 'answer' is missing or empty" in r.stderr and "eval_sets[0].fields" in r.stderr
    assert not (tmp_path / "data").exists()  # no stage ran
    ev.write_text("")
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "validate", str(spec)], capture_output=True, text=True)
    assert r.returncode == 2 and "holds no item" in r.stderr


# ----------------------------------------------------------------------------- slow: the dev corpus


@pytest.mark.slow
def test_gsm8k_test_split_declared_as_an_eval_set_leaves_math_training(tmp_path):
    """The eval set is taken from the math source itself (records with split: test); every one
    of its 1,319 documents leaves math's training documents, each match is recorded and `audit
    why` names it. Train documents sharing a 13-gram with a test item go too, and are listed.
    The held-out split, checked against the eval set, holds none of its items."""
    from .conftest import base_spec, write_spec

    spec = base_spec([{"name": "math", "kind": "math", "paths": [str(p) for p in GSM8K]}], tmp_path,
                     eval_sets=[{"name": "gsm8k_test", "source": "math", "where": {"split": "test"},
                                 "fields": ["question", "answer"]}])
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", spec))
    build_all(loaded, until="heldout_split", **QUIET)
    m, kept, hits = _decontaminated(loaded, "math")
    split = read_manifest(manifest_path(loaded.manifest_root, "heldout_split", "math"))
    assert split["counts"]["heldout_documents"] > 0 and split["details"]["eval_items_in_heldout"] == []
    test_ids = {r["id"] for r in _gsm8k_test()}
    assert len(test_ids) == 1319
    kept_ids = set(kept.column("doc_id").to_pylist())
    assert not kept_ids & test_ids  # 1,319 of 1,319 out of training
    dedup = read_manifest(manifest_path(loaded.manifest_root, "dedup", "math"))
    assert dedup["counts"]["documents_out"] - m["counts"]["documents_out"] == m["reasons"]["contaminated: gsm8k_test"]["records"]
    rows = hits.to_pylist()
    own = {r["doc_id"] for r in rows if r["doc_id"] == r["item_id"]}
    assert own == test_ids  # each test document matched its own item
    train_hits = sorted({r["doc_id"] for r in rows if r["doc_id"] not in test_ids})
    assert all(d.startswith("gsm8k-train-") for d in train_hits) and len(train_hits) < 20
    assert m["details"]["contamination"]["gsm8k_test"]["items_found"] == 1319
    con = audit.connect(loaded)
    found = audit.why(con, "gsm8k-test-00000")
    assert any(f["stage"] == "decontaminate" and "gsm8k_test item gsm8k-test-00000" in f["why"] for f in found)


@pytest.mark.slow
def test_planted_contamination_is_found_and_clean_text_is_left_alone(tmp_path):
    """300 GSM8K test items, lightly edited (case, punctuation, whitespace, one word changed
    outside a 13-word window), planted inside real wiki documents: recall >= 0.99 at n = 13.
    Documents of sources that share no text with GSM8K (wiki, books, code, dialogue, web):
    false positives <= 0.1 %."""
    from .conftest import base_spec, write_spec

    rng = random.Random(7)
    items = [r for r in _gsm8k_test() if len(f"{r['question']} {r['answer']}".split()) >= 40][:300]
    ev = _jsonl(tmp_path / "eval.jsonl", [{"id": r["id"], "question": r["question"], "answer": r["answer"]}
                                          for r in items])
    hosts = [r for p in sorted((CORPUS / "wiki").glob("*.jsonl.gz"))[1:] for r in _records(p)
             if len(r["text"]) >= 400][:len(items)]
    assert len(hosts) == len(items)

    def edit(text: str) -> str:
        words = text.split()
        k = rng.randrange(len(words) // 2 - 5, len(words) // 2 + 5)  # middle: >= 13 intact words either side
        words[k] = "zebra"
        out = " ".join(w.upper() if rng.random() < 0.2 else w for w in words)
        return out.replace(". ", "!  ").replace(", ", " ;\n")

    planted = []
    for host, item in zip(hosts, items):
        cut = rng.randrange(len(host["text"]) // 4, 3 * len(host["text"]) // 4)
        text = host["text"][:cut] + "\n" + edit(item["question"] + " " + item["answer"]) + "\n" + host["text"][cut:]
        planted.append({"id": f"planted-{item['id']}", "text": text})
    src = _jsonl(tmp_path / "planted.jsonl", planted)
    clean = [{"name": n, "kind": k, "paths": [str(sorted((CORPUS / n).glob("*.jsonl.gz"))[0])]}
             for n, k in (("wiki", "prose"), ("books", "prose"), ("code", "code"), ("dialogue", "dialogue"),
                          ("web", "web"))]
    spec = base_spec([{"name": "planted", "kind": "prose", "paths": [str(src)]}, *clean], tmp_path,
                     eval_sets=[{"name": "gsm8k", "paths": [str(ev)], "fields": ["question", "answer"]}],
                     execution={"workers": 2})
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", spec))
    build_all(loaded, until="decontaminate", **QUIET)
    m, _, hits = _decontaminated(loaded, "planted")
    found = {r["doc_id"] for r in hits.to_pylist()}
    assert len(found) / len(planted) >= 0.99, sorted({p["id"] for p in planted} - found)
    assert all(r["item_id"] == r["doc_id"].removeprefix("planted-") for r in hits.to_pylist())
    docs = flagged = 0
    for s in (c["name"] for c in clean):
        mc, _, hc = _decontaminated(loaded, s)
        docs += mc["counts"]["documents_in"]
        flagged += len(set(hc.column("doc_id").to_pylist()))
    assert docs > 5000 and flagged / docs <= 0.001, (flagged, docs)
