"""The held-out split of every source of ../shared/corpus with the default declaration (1 % of the
kept documents, at least 20): documents and tokens held out, near-duplicate clusters moved whole,
documents kept in train by a near-duplicate in another source, and the time per source against dedup's.
Then the same split with every source's held-out split declared as an eval set (no held-out document
may share a 13-gram with any train document, in any source): the candidates checked, those kept in
train by a shared n-gram, and the split's time against the plain split's, medians of --repeats runs.

Usage:  python benchmarks/heldout_split.py [--workers 2] [--repeats 3]

Runs ingest, dedup, cross-source dedup and quality first (untimed, once per spec), then the split per source.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SOURCES, build_through, write_spec

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import load_spec
from corpusmix.pipeline import run_stage


def timed_split(loaded, source: str, repeats: int) -> tuple[dict, float]:
    """The split's manifest and its median time over ``repeats`` fresh builds."""
    times = []
    for _ in range(repeats):
        manifest_path(loaded.manifest_root, "heldout_split", source).unlink(missing_ok=True)
        t = time.perf_counter()
        m, _ = run_stage("heldout_split", loaded, source, progress=lambda msg: None)
        times.append(time.perf_counter() - t)
    return m, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "plain").mkdir()
        plain = load_spec(write_spec(Path(tmp) / "plain", SOURCES, args.workers))
        spec = yaml.safe_load(plain.path.read_text())
        spec["eval_sets"] = [{"name": f"{s}-heldout", "source": s, "heldout": True} for s in SOURCES]
        spec["storage"] = {"root": str(Path(tmp) / "eval" / "data"), "manifests": str(Path(tmp) / "eval" / "manifests")}
        (Path(tmp) / "eval").mkdir()
        (Path(tmp) / "eval" / "spec.yaml").write_text(yaml.safe_dump(spec))
        clean = load_spec(Path(tmp) / "eval" / "spec.yaml")
        build_through(plain, "quality")
        build_through(clean, "quality")
        print(f"{'source':9} {'docs in':>8} {'held out':>8} {'tokens in':>11} {'held-out tok':>12} {'tok share':>9} "
              f"{'moved whole':>11} {'dup elsewhere':>13} {'split s':>8} {'dedup s':>8} | {'candidates':>10} "
              f"{'n-gram kept':>11} {'links':>6} {'eval split s':>12} {'ratio':>6}")
        for s in SOURCES:
            m, dt = timed_split(plain, s, args.repeats)
            e, et = timed_split(clean, s, args.repeats)
            c, ec = m["counts"], e["counts"]
            dedup_s = read_manifest(manifest_path(plain.manifest_root, "dedup", s))["elapsed_s"]
            print(f"{s:9} {c['documents_in']:8,} {c['heldout_documents']:8,} {c['tokens_in']:11,} "
                  f"{c['heldout_tokens']:12,} {c['heldout_tokens'] / c['tokens_in']:9.4f} "
                  f"{c['clusters_moved_whole']:11} {c['documents_with_duplicate_elsewhere']:13} {dt:8.2f} {dedup_s:8.2f} "
                  f"| {ec['ngram_candidates']:10,} {ec['candidates_sharing_ngram_in_train']:11,} {ec['ngram_links']:6,} {et:12.2f} "
                  f"{et / dt:6.2f}", flush=True)


if __name__ == "__main__":
    main()
