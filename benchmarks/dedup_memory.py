"""Memory of the dedup stage per document: peak RSS of a dedup run at two corpus sizes.

Usage:  python benchmarks/dedup_memory.py [--small 50000] [--large 250000]

Synthetic documents (60 words drawn from a 5,000-word vocabulary, ~1 % near copies)
are ingested, then ``dedup_source`` runs in a fresh process; the slope between the
two peak RSS figures is the memory per document of the index (signatures, exact
keys, ids, sizes, LSH grouping), extrapolated to a million documents.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_spec  # noqa: E402

CHILD = """
import resource, sys, json
sys.path.insert(0, {repo!r})
from corpusmix.pipeline import run_stage
from corpusmix.core.spec import load_spec

m, _ = run_stage("dedup", load_spec({spec!r}), "syn", progress=lambda s: None)
print(json.dumps({{"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "docs": m["counts"]["documents_in"], "near": m["counts"]["removed_near"]}}))
"""


def make(raw: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    (raw / "syn").mkdir(parents=True)
    with gzip.open(raw / "syn" / "syn.jsonl.gz", "wt", compresslevel=1) as f:
        prev = None
        for i in range(n):
            if prev is not None and rng.random() < 0.01:
                words = list(prev)
                words[rng.randrange(len(words))] = rng.choice(vocab)
            else:
                words = [rng.choice(vocab) for _ in range(60)]
            prev = words
            f.write(json.dumps({"id": f"d{i}", "text": " ".join(words)}) + "\n")


def measure(n: int) -> dict:

    from corpusmix.core.spec import load_spec
    from corpusmix.pipeline import run_stage

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make(root / "raw", n)
        spec = write_spec(root, {"syn": "web"}, workers=0, raw=root / "raw")
        run_stage("ingest", load_spec(spec), "syn", progress=lambda m: None)
        out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), spec=str(spec))],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=50_000)
    ap.add_argument("--large", type=int, default=250_000)
    args = ap.parse_args()
    a, b = measure(args.small), measure(args.large)
    per_doc = (b["rss_mb"] - a["rss_mb"]) * 2**20 / (b["docs"] - a["docs"])
    print(f"dedup peak RSS: {a['docs']:,} docs {a['rss_mb']:.0f} MB; {b['docs']:,} docs {b['rss_mb']:.0f} MB")
    print(f"slope: {per_doc:.0f} bytes per document = {per_doc * 1e6 / 2**30:.2f} GiB per million documents "
          f"(128 permutations; signatures alone are 512 bytes per document)")


if __name__ == "__main__":
    main()
