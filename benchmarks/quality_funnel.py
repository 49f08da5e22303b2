"""The quality funnel of every source of ../shared/corpus: documents and tokens in, removed per
rule (a document failing several rules counts under each), out, and the time per source.

Usage:  python benchmarks/quality_funnel.py

Runs ingest, dedup and cross-source dedup first (untimed), then the quality stage per source
with each source kind's default rules.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SOURCES, build_through, write_spec  # noqa: E402

from corpusmix.core.spec import load_spec  # noqa: E402
from corpusmix.pipeline import run_stage


def main() -> None:
    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_spec(write_spec(Path(tmp), SOURCES, 0))
        build_through(loaded, "decontaminate")
        for s in SOURCES:
            t = time.perf_counter()
            m, _ = run_stage("quality", loaded, s, progress=quiet)
            dt = time.perf_counter() - t
            c = m["counts"]
            print(f"\n{s} ({loaded.source(s).kind}): {c['documents_in']} docs / {c['tokens_in']} tokens in -> "
                  f"{c['documents_out']} docs / {c['tokens_out']} tokens out "
                  f"(doc acceptance {m['rates']['document_acceptance']:.3f}, token acceptance "
                  f"{m['rates']['token_acceptance']:.3f}); {dt:.2f} s, {c['bytes_in'] / 1e6 / dt:.1f} MB/s")
            for rule, r in sorted(m["reasons"].items(), key=lambda kv: -kv[1]["tokens"]):
                print(f"  {rule:34} {r['records']:6} docs {r['tokens']:9} tokens  ({r['only_this_rule']} only this rule)")


if __name__ == "__main__":
    main()
