"""Decontamination on the dev corpus (issue 19): scan throughput, index memory, planted recall,
false positives on clean text.

1. Index: 13-grams of >= 10,000 eval items (every GSM8K record of ../shared/corpus/math, plus
   dialogue records up to 11,000 items), built with ``eval_index.build_index``; memory per
   indexed n-gram as stored (hash + item row) and the build's peak (tracemalloc).
2. Throughput: ``decontaminate.find_matches`` (normalise, hash, look up) over every document
   of wiki, web, books and code, in one process (one core), median of --repeats runs. (Math
   and dialogue hold the indexed items themselves: scanning them measures the bookkeeping of
   11,633 matching documents, not a scan; with them the figure is 22 MB/s.)
3. Planted contamination: GSM8K test items, lightly edited (case, punctuation, whitespace,
   one word in the middle changed), inserted into real wiki documents; recall at n = 13.
   False positives: documents of wiki, books, web, code and dialogue (no GSM8K text) that
   match the GSM8K test set; each is listed with its n-gram so it can be judged.

Criteria decided before the run (issue 19): throughput >= 50 MB/s per core with >= 10,000
items; recall >= 0.99; false positives <= 0.1 % of clean documents.

    python benchmarks/decontamination.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS  # noqa: E402

from corpusmix.stages.decontaminate import READ_ROWS, find_matches  # noqa: E402
from corpusmix.stages.eval_index import build_index  # noqa: E402


def records(name: str) -> list[dict]:
    out = []
    for p in sorted((CORPUS / name).glob("*.jsonl.gz")):
        with gzip.open(p, "rt") as f:
            out += [json.loads(line) for line in f]
    return out


def index_of(texts: list[str]) -> tuple:
    tracemalloc.start()
    t0 = time.perf_counter()
    table, stats = build_index(pa.table({"text": texts}), 13, 10)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return table.column("hash").to_numpy(), table.column("item").to_numpy(), stats, elapsed, peak


def edit(text: str, rng: random.Random) -> str:
    words = text.split()
    k = rng.randrange(len(words) // 2 - 5, len(words) // 2 + 5)
    words[k] = "zebra"
    out = " ".join(w.upper() if rng.random() < 0.2 else w for w in words)
    return out.replace(". ", "!  ").replace(", ", " ;\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    math = records("math")
    dialogue = records("dialogue")
    items = [f"{r['question']}\n{r['answer']}" for r in math] + [r["text"] for r in dialogue[: 11_000 - len(math)]]
    hashes, owners, stats, build_s, peak = index_of(items)
    print(f"index: {len(items):,} items, {stats['ngrams']:,} (n-gram, item) rows, {stats['distinct_ngrams']:,} "
          f"distinct 13-grams, {stats['too_common_ngrams']} too common; built in {build_s:.2f} s")
    print(f"  memory: {(hashes.nbytes + owners.nbytes) / len(hashes):.1f} bytes per indexed n-gram as stored "
          f"({(hashes.nbytes + owners.nbytes) / 1e6:.1f} MB); build peak {peak / 1e6:.1f} MB "
          f"({peak / len(hashes):.0f} bytes per n-gram, transient)")

    texts = [r["text"] for s in ("wiki", "web", "books", "code") for r in records(s)]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        n_found = 0
        for i in range(0, len(texts), READ_ROWS):  # in the batches the stage reads
            n_found += len(find_matches(texts[i:i + READ_ROWS], 13, hashes, owners))
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"scan: {len(texts):,} documents, {mb:.1f} MB of wiki, web, books and code text, one process: median "
          f"{med:.2f} s of {[round(t, 2) for t in times]} -> {mb / med:.1f} MB/s per core "
          f"(criterion >= 50: {'met' if mb / med >= 50 else 'NOT met'}); {n_found} document(s) matched")

    rng = random.Random(7)
    test = [r for r in math if r["split"] == "test"]
    t_hashes, t_owners, *_ = index_of([f"{r['question']}\n{r['answer']}" for r in test])
    hosts = [r["text"] for r in records("wiki") if len(r["text"]) >= 400]
    long_items = [i for i, r in enumerate(test) if len(f"{r['question']} {r['answer']}".split()) >= 40]
    planted, truth = [], []
    for host, i in zip(hosts, long_items):
        cut = rng.randrange(len(host) // 4, 3 * len(host) // 4)
        planted.append(host[:cut] + "\n" + edit(f"{test[i]['question']} {test[i]['answer']}", rng) + "\n" + host[cut:])
        truth.append(i)
    found = find_matches(planted, 13, t_hashes, t_owners)
    right = sum(1 for d, m in found.items() if any(x.item == truth[d] for x in m))
    print(f"planted: {len(planted)} edited GSM8K test items in wiki documents: recall {right / len(planted):.4f} "
          f"({right}/{len(planted)}; criterion >= 0.99: {'met' if right / len(planted) >= 0.99 else 'NOT met'})")
    clean = {s: [r for r in records(s)] for s in ("wiki", "books", "web", "code", "dialogue")}
    n_clean = sum(len(v) for v in clean.values())
    false = []
    for s, rows in clean.items():
        hits = find_matches([r["text"] for r in rows], 13, t_hashes, t_owners)
        false += [(s, rows[d]["id"], test[m[0].item]["id"], m[0].count) for d, m in hits.items()]
    print(f"false positives on clean text: {len(false)} of {n_clean:,} documents ({100 * len(false) / n_clean:.3f} %; "
          f"criterion <= 0.1 %: {'met' if len(false) / n_clean <= 0.001 else 'NOT met'})")
    for s, doc, item, count in false:
        print(f"  {s} {doc} ~ {item}: {count} shared 13-gram(s)")


if __name__ == "__main__":
    main()
