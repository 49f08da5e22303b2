"""Peak memory of ingest grows with the block size, not with the file.

Usage:  python benchmarks/ingest_memory.py [--copies 10] [--repeats 3]

Builds two single-file sources from ../shared/corpus/books (all its records once,
and ``--copies`` times with distinct ids), ingests each in a fresh process
(in-process executor, so one RSS covers all the work) and prints the median peak
RSS of each and their ratio.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, REPO, write_spec  # noqa: E402

CHILD = """
import resource, sys, json
sys.path.insert(0, {repo!r})
from corpusmix.pipeline import run_stage
from corpusmix.core.spec import load_spec

m, _ = run_stage("ingest", load_spec({spec!r}), "books", progress=lambda s: None)
print(json.dumps({{"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "text_mb": m["counts"]["bytes_in"] / 1e6, "docs": m["counts"]["documents_out"]}}))
"""


def _make_source(raw: Path, copies: int) -> None:
    (raw / "books").mkdir(parents=True)
    with gzip.open(raw / "books" / "books.jsonl.gz", "wb", compresslevel=1) as out:
        for k in range(copies):
            for f in sorted(glob.glob(str(CORPUS / "books" / "*.jsonl.gz"))):
                for line in gzip.open(f):
                    rec = orjson.loads(line)
                    rec["id"] = f"{rec['id']}~{k}"
                    out.write(orjson.dumps(rec) + b"\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for copies in (1, args.copies):
            root = Path(tmp) / f"x{copies}"
            _make_source(root / "raw", copies)
            spec = write_spec(root, {"books": "prose"}, workers=0, raw=root / "raw")
            runs = []
            for _ in range(args.repeats):
                out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), spec=str(spec))],
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                subprocess.run(["rm", "-rf", str(root / "data"), str(root / "manifests")], check=True)
            results[copies] = runs
    print(f"peak RSS of ingest (one process), median of {args.repeats} runs")
    for copies, runs in results.items():
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        print(f"  books x{copies:<3} {runs[0]['text_mb']:8.1f} MB text  {runs[0]['docs']:7} docs  peak RSS {rss:7.1f} MB")
    a = statistics.median(r["peak_rss_mb"] for r in results[1])
    b = statistics.median(r["peak_rss_mb"] for r in results[args.copies])
    print(f"  ratio x{args.copies}/x1 peak RSS: {b / a:.2f} (input grew {args.copies}x)")


if __name__ == "__main__":
    main()
