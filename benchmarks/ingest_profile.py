"""Where ingest spends its CPU: cProfile over every unit of ../shared/corpus, in one process.

Usage:  python benchmarks/ingest_profile.py

Runs each unit once to warm up, then once under the profiler, and prints the
cumulative seconds of each step of ``ingest_unit`` (profiler overhead included, so
compare shares, not absolute speed).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, SOURCES, write_spec  # noqa: E402

from corpusmix.core.spec import load_spec  # noqa: E402
from corpusmix.core.storage import new_staging_dir  # noqa: E402
from corpusmix.stages.ingest import ingest_unit, plan_units  # noqa: E402

STEPS = {
    "_decompressed": "gunzip (ISA-L)",
    "_arrow_safe": "fast-path byte checks",
    "_arrow_text_and_id": "Arrow JSON parse (text, id)",
    "_metadata_of_lines": "orjson metadata",
    "_exact_block": "exact (per-line) path",
    "_screen": "screening",
    "validate_table": "pandera validation",
    "write": "Parquet write (zstd-1)",
    "offer": "calibration sample",
    "close": "part close + sha256",
}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="cm-profile-"))
    loaded = load_spec(write_spec(root, SOURCES, 0))
    units = [u for s in SOURCES for u in plan_units(loaded, loaded.source(s), new_staging_dir(root / s))]
    for u in units:
        ingest_unit(u)
    prof = cProfile.Profile()
    prof.enable()
    for u in units:
        ingest_unit(u)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[3] for k, v in stats.items() if k[2] == "ingest_unit")
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    mb = sum(manifest[s]["text_bytes"] for s in SOURCES) / 1e6
    print(f"ingest_unit over {len(units)} units, {mb:.2f} MB of text: {total:.3f} CPU s (profiled)")
    for (file, _, name), v in sorted(stats.items(), key=lambda kv: -kv[1][3]):
        if name in STEPS and ("corpusmix" in file or "schemas" in file):
            print(f"  {STEPS[name]:30} {v[3]:6.3f} s  {v[3] / mb * 1000:5.2f} ms per MB of text  {100 * v[3] / total:4.1f} %")


if __name__ == "__main__":
    main()
