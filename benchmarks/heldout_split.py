"""The held-out split of every source of ../shared/corpus with the default declaration (1 % of the
kept documents, at least 20): documents and tokens held out, near-duplicate clusters moved whole,
documents kept in train by a near-duplicate in another source, and the time per source against dedup's.

Usage:  python benchmarks/heldout_split.py [--workers 2]

Runs ingest, dedup, cross-source dedup and quality first (untimed), then the split per source.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SOURCES, build_through, write_spec

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.pipeline import run_stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_spec(write_spec(Path(tmp), SOURCES, args.workers))
        build_through(loaded, "quality")
        print(f"{'source':9} {'docs in':>8} {'held out':>8} {'tokens in':>11} {'held-out tok':>12} {'tok share':>9} "
              f"{'moved whole':>11} {'dup elsewhere':>13} {'split s':>8} {'dedup s':>8}")
        for s in SOURCES:
            t = time.perf_counter()
            m, _ = run_stage("heldout_split", loaded, s, progress=lambda msg: None)
            dt = time.perf_counter() - t
            c = m["counts"]
            dedup_s = read_manifest(manifest_path(loaded.manifest_root, "dedup", s))["elapsed_s"]
            print(f"{s:9} {c['documents_in']:8,} {c['heldout_documents']:8,} {c['tokens_in']:11,} "
                  f"{c['heldout_tokens']:12,} {c['heldout_tokens'] / c['tokens_in']:9.4f} "
                  f"{c['clusters_moved_whole']:11} {c['documents_with_duplicate_elsewhere']:13} {dt:8.2f} {dedup_s:8.2f}")


if __name__ == "__main__":
    main()
