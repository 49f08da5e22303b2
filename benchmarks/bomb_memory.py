"""Peak memory of ingest on hostile files: decompression bombs and a file larger than any document.

    python benchmarks/bomb_memory.py [--keep]

Files (built in a temp directory, each ingested by a fresh process with the default spec settings):
  zst_bomb     a .jsonl.zst of ~0.5 MB that expands to 16 GiB (16 frames of 1 GiB of zeros)
  gz_blanks    a .jsonl.gz of ~3 MB that expands to 3 GiB of blank lines (48 members of 64 MiB)
  text_2g      a 2 GiB plain-text file (format: text), larger than ingest.max_text_bytes (64 MiB)
For each: peak RSS of the ingesting process (VmHWM), wall time, and what the build said.
Criterion, decided before the run: peak RSS under 1 GB for every file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
import zstandard

REPO = Path(__file__).resolve().parents[1]
GPT2 = REPO.parent / "shared" / "tokenizers" / "gpt2" / "tokenizer.json"
CHILD = """
import json, sys
from corpusmix.core.spec import load_spec
from corpusmix.pipeline import run_stage
try:
    m, _ = run_stage("ingest", load_spec(sys.argv[1]), "s", progress=lambda s: None)
    outcome = f"kept {m['counts']['documents_out']}, quarantined {m['reasons']}"
except Exception as e:
    outcome = f"{type(e).__name__}: {str(e).splitlines()[0]}"
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report the parent's peak
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rss_mb": int(hwm.split()[1]) / 1024, "outcome": outcome}))
"""


def make_files(root: Path) -> dict[str, tuple[Path, dict]]:
    out = {}
    zst = root / "zst_bomb" / "bomb.jsonl.zst"
    zst.parent.mkdir(parents=True)
    frame = zstandard.ZstdCompressor(level=19).compress(b"\0" * (1 << 30))
    zst.write_bytes(frame * 16)
    out["zst_bomb"] = (zst, {})
    gz = root / "gz_blanks" / "blanks.jsonl.gz"
    gz.parent.mkdir(parents=True)
    gz.write_bytes(gzip.compress(b"\n" * (64 << 20), compresslevel=9) * 48)
    out["gz_blanks"] = (gz, {})
    txt = root / "text_2g" / "huge.txt"
    txt.parent.mkdir(parents=True)
    with open(txt, "wb") as f:
        block = b"all work and no play makes a very large document " * (1 << 14)
        written = 0
        while written < 2 << 30:
            f.write(block)
            written += len(block)
    out["text_2g"] = (txt, {"format": "text"})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bombs-"))
    try:
        print(f"{'file':10} {'on disk':>12} {'peak RSS':>10} {'seconds':>8}  outcome")
        worst = 0.0
        for name, (path, extra) in make_files(root).items():
            spec = {"name": name, "storage": {"root": str(root / name / "data"), "manifests": str(root / name / "m")},
                    "execution": {"workers": 0},
                    "sources": [{"name": "s", "kind": "web", "paths": [str(path)], "on_unreadable": "fail"} | extra],
                    "tokenizer": {"path": str(GPT2)},
                    "mixture": {"total_tokens": 1000, "seq_len": 10,
                                "schedule": {"type": "static", "weights": {"s": 1}}}}
            (root / name / "spec.yaml").write_text(yaml.safe_dump(spec))
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD, str(root / name / "spec.yaml")], capture_output=True,
                               text=True, cwd=REPO)
            secs = time.perf_counter() - t0
            res = json.loads(r.stdout.strip().splitlines()[-1])
            worst = max(worst, res["rss_mb"])
            print(f"{name:10} {path.stat().st_size / 1e6:10.2f} MB {res['rss_mb']:8.0f} MB {secs:8.1f}  "
                  f"{res['outcome'][:150]}")
        print(f"criterion: peak RSS < 1000 MB for every file: {'met' if worst < 1000 else 'NOT met'} "
              f"(worst {worst:.0f} MB)")
        return 0 if worst < 1000 else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
