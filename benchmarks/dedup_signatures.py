"""MinHash signature throughput: corpusmix's vectorised path against datasketch's own
``MinHash.update_batch`` per document, on the same normalised text, in the same run.

Usage:  python benchmarks/dedup_signatures.py [--mb-per-source 2] [--repeats 3] [--num-perm 128]

Both sides start from the same normalised UTF-8 text (normalisation is timed
separately) and produce a 128-permutation signature per document:
  * datasketch: build the word 5-gram byte strings, then ``MinHash(num_perm).update_batch``
    per document (its default sha1-based 32-bit hash);
  * corpusmix: ``batch_shingles`` (vectorised word and shingle hashing over a batch of
    2,048 documents, as the stage reads them) then ``batch_signatures``.
Medians over repeats; the two are timed alternately. MB = 10^6 bytes of normalised text.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, SOURCES  # noqa: E402
from datasketch import MinHash  # noqa: E402

from corpusmix.core.spec import Normalize  # noqa: E402
from corpusmix.stages.minhash import (
    batch_shingles,
    batch_signatures,
    normalize,
    permutations,  # noqa: E402
)

K = 5


def sample(mb_per_source: float) -> list[str]:
    texts = []
    for src in SOURCES:
        size = 0
        for f in sorted((CORPUS / src).glob("*.jsonl.gz")):
            for line in gzip.open(f):
                t = json.loads(line)["text"]
                if t and size < mb_per_source * 1e6:
                    texts.append(t)
                    size += len(t.encode())
    return texts


def datasketch_sigs(norms: list[bytes], num_perm: int) -> list:
    out = []
    for n in norms:
        words = n.split()
        shingles = [b" ".join(words[i:i + K]) for i in range(max(1, len(words) - K + 1))] if words else []
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch(shingles)
        out.append(m.hashvalues)
    return out


def ours(norms: list[bytes], num_perm: int, batch: int = 2048):
    """The stage's own path: batches of documents (as pass 1 reads them) hashed and signed at once."""
    perms = permutations(num_perm, 1)
    return [batch_signatures(*batch_shingles(norms[i:i + batch], K), perms) for i in range(0, len(norms), batch)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb-per-source", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-perm", type=int, default=128)
    args = ap.parse_args()
    texts = sample(args.mb_per_source)
    cfg = Normalize()
    t = time.perf_counter()
    norms = [normalize(x, cfg) for x in texts]
    t_norm = time.perf_counter() - t
    mb = sum(len(n) for n in norms) / 1e6
    ours(norms[:10], args.num_perm)  # warm caches (power tables)
    t_ds, t_us = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        datasketch_sigs(norms, args.num_perm)
        t_ds.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours(norms, args.num_perm)
        t_us.append(time.perf_counter() - t)
    ds, us = statistics.median(t_ds), statistics.median(t_us)
    n = len(norms)
    print(f"{n} documents, {mb:.2f} MB normalised text from 6 sources, {args.num_perm} permutations, "
          f"word {K}-grams, median of {args.repeats}")
    print(f"  normalisation (once, not in the figures below): {t_norm:.3f} s = {mb / t_norm:.1f} MB/s")
    print(f"  datasketch update_batch per document: {ds:.3f} s = {n / ds:,.0f} docs/s, {mb / ds:.2f} MB/s")
    print(f"  corpusmix vectorised:                 {us:.3f} s = {n / us:,.0f} docs/s, {mb / us:.2f} MB/s")
    print(f"  speed-up: {ds / us:.1f}x")


if __name__ == "__main__":
    main()
