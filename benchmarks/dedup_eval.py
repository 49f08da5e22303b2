"""Labelled near-duplicate evaluation of the dedup stage, built from ../shared/corpus.

Usage:  python benchmarks/dedup_eval.py [--bases 400] [--seed 7]

Pairs and their truth:
  * for each base document (>= 100 words, from every source), a copy with words
    replaced at random positions, the number chosen so that the word-5-gram Jaccard
    similarity lands uniformly in [0.4, 1.0];
  * similar-but-distinct pairs: two different documents of the same source.
The truth is the exact word-5-gram Jaccard of the two normalised texts, computed
here with Python sets of word tuples (independently of the stage's hashing).
Every document is written to JSON Lines and goes through the real stages (ingest,
dedup); a pair is predicted duplicate when both end in the same cluster.
Precision and recall are over the pairs at least ``--margin`` (0.05) away from the
threshold, for thresholds 0.5 .. 0.9, with and without verification.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, GPT2, SOURCES  # noqa: E402

from corpusmix.core.spec import Normalize, load_spec  # noqa: E402
from corpusmix.pipeline import run_stage
from corpusmix.stages.minhash import normalize  # noqa: E402

K = 5


def five_grams(words: list[str]) -> set[tuple[str, ...]]:
    if len(words) < K:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + K]) for i in range(len(words) - K + 1)}


def true_jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = five_grams(a), five_grams(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def build_pairs(n_bases: int, seed: int, max_words: int = 1500) -> tuple[list[dict], list[tuple[str, str, float]]]:
    """Documents (id, text) and labelled pairs (id_a, id_b, true Jaccard)."""
    rng = random.Random(seed)
    norm = Normalize()
    pool: dict[str, list[list[str]]] = {}
    for src in SOURCES:
        docs = []
        for f in sorted((CORPUS / src).glob("*.jsonl.gz")):
            for line in gzip.open(f):
                words = normalize(json.loads(line)["text"], norm).decode().split()
                if len(words) >= 100:
                    docs.append(words[:max_words])
        rng.shuffle(docs)
        pool[src] = docs
    vocab = sorted({w for docs in pool.values() for d in docs[:50] for w in d})
    documents, pairs = [], []
    per_source = max(1, n_bases // len(SOURCES))
    for src, docs in pool.items():
        for i, words in enumerate(docs[:per_source]):
            target = rng.uniform(0.4, 1.0)
            keep_shingles = 2 * target / (1 + target)
            p = 1 - keep_shingles ** (1 / K)
            edited = list(words)
            for pos in rng.sample(range(len(words)), round(p * len(words))):
                edited[pos] = rng.choice(vocab)
            a, b = f"{src}-{i}", f"{src}-{i}-edit"
            documents += [{"id": a, "text": " ".join(words)}, {"id": b, "text": " ".join(edited)}]
            pairs.append((a, b, true_jaccard(words, edited)))
        for i in range(0, min(per_source, len(docs)) - 1, 2):  # similar-but-distinct: same source
            pairs.append((f"{src}-{i}", f"{src}-{i + 1}", true_jaccard(docs[i], docs[i + 1])))
    return documents, pairs


def predicted_clusters(documents: list[dict], root: Path, threshold: float, verify: bool) -> dict[str, str]:
    """doc_id -> cluster representative, from the real ingest + dedup stages."""
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    with gzip.open(raw / "eval.jsonl.gz", "wt") as f:
        for d in documents:
            f.write(json.dumps(d) + "\n")
    spec = {"name": "eval", "storage": {"root": str(root / "data"), "manifests": str(root / "manifests")},
            "execution": {"workers": 0},
            "dedup": {"exact": True, "near": {"threshold": threshold, "verify": verify}},
            "sources": [{"name": "eval", "kind": "prose", "paths": [str(raw / "*.jsonl.gz")]}],
            "tokenizer": {"path": str(GPT2)},
            "mixture": {"total_tokens": 1000, "seq_len": 8, "schedule": {"type": "static", "weights": {"eval": 1}}}}
    path = root / f"spec-{threshold}-{verify}.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = load_spec(path)
    run_stage("ingest", loaded, "eval", progress=lambda m: None)
    manifest, _ = run_stage("dedup", loaded, "eval", progress=lambda m: None)
    dup_path = next(o["path"] for o in manifest["outputs"] if o["kind"] == "duplicates")
    dups = pq.read_table(loaded.storage_root / dup_path).to_pylist()
    rep = {d["id"]: d["id"] for d in documents}
    rep.update({r["doc_id"]: r["representative_doc_id"] for r in dups})
    return rep


def score(pairs: list[tuple[str, str, float]], rep: dict[str, str], threshold: float,
          margin: float) -> dict:
    tp = fp = fn = tn = 0
    for a, b, j in pairs:
        if abs(j - threshold) < margin:
            continue
        truth, pred = j >= threshold, rep[a] == rep[b]
        tp += truth and pred
        fp += (not truth) and pred
        fn += truth and not pred
        tn += (not truth) and not pred
    return {"threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bases", type=int, default=600)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--margin", type=float, default=0.05)
    args = ap.parse_args()
    documents, pairs = build_pairs(args.bases, args.seed)
    print(f"{len(documents)} documents, {len(pairs)} labelled pairs "
          f"({sum(j >= 0.8 for *_, j in pairs)} with true Jaccard >= 0.8)")
    print(f"{'threshold':>9} {'verify':>6} {'TP':>5} {'FP':>5} {'FN':>5} {'TN':>5} {'precision':>9} {'recall':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for verify in (True, False):
            for t in (0.5, 0.6, 0.7, 0.8, 0.9):
                rep = predicted_clusters(documents, Path(tmp) / f"{t}-{verify}", t, verify)
                s = score(pairs, rep, t, args.margin)
                print(f"{t:>9.2f} {str(verify):>6} {s['tp']:>5} {s['fp']:>5} {s['fn']:>5} {s['tn']:>5} "
                      f"{s['precision']:>9.3f} {s['recall']:>7.3f}")


if __name__ == "__main__":
    main()
