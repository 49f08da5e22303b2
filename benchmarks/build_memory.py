"""Peak memory of a whole build on ../shared/corpus and on the same corpus grown 10x, and whether
two builds of the same spec are byte-identical.

Usage:  python benchmarks/build_memory.py [--factor 10] [--skip-big]

Each build runs every engine stage, ingest to mixed shards, in a fresh subprocess
(workers: 2), with specs/shared-corpus.yaml's settings; peak RSS is the largest
resident set of that process or any worker it waited for (getrusage of children,
sampled per build). The grown corpus has `factor` copies of every file; copy k > 0
gets new document ids and, in one document of every five, one word replaced, so dedup
still has near-duplicates to find. The 1x build runs twice into two roots to compare
every output's sha256 (determinism).
"""

from __future__ import annotations

import argparse
import gzip
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, REPO, SOURCES  # noqa: E402

BUILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[2])
from common import build_through

from corpusmix.pipeline import run_stage

from corpusmix.core.spec import load_spec
t = time.perf_counter()
loaded = load_spec(sys.argv[1])
build_through(loaded, "mixture_plan")
run_stage("mixed_shards", loaded, progress=lambda m: None)
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{max(own, kids) / 1024:.0f} {time.perf_counter() - t:.1f}")
"""


def grow(dst: Path, factor: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for src_dir in sorted(CORPUS.iterdir()):
        if not src_dir.is_dir():
            continue
        (dst / src_dir.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(src_dir.glob("*.jsonl.gz")):
            lines = gzip.decompress(f.read_bytes()).splitlines()
            for k in range(factor):
                out = []
                for line in lines:
                    rec = orjson.loads(line)
                    if k:
                        rec["id"] = f"{rec.get('id')}~{k}"
                        words = str(rec.get("text") or "").split(" ")
                        if rng.random() < 0.2 and len(words) > 3:
                            words[rng.randrange(len(words))] = rng.choice(["alpha", "beta", "gamma", "delta"])
                            rec["text"] = " ".join(words)
                    out.append(orjson.dumps(rec))
                (dst / src_dir.name / f"{f.name[:-9]}-copy{k:02d}.jsonl.gz").write_bytes(
                    gzip.compress(b"\n".join(out) + b"\n", compresslevel=1))


def spec_for(root: Path, raw: Path) -> Path:
    spec = yaml.safe_load((REPO / "specs" / "shared-corpus.yaml").read_text())
    spec["storage"] = {"root": str(root / "data"), "manifests": str(root / "manifests")}
    for src in spec["sources"]:
        src["paths"] = [str(raw / src["name"] / "*.jsonl.gz")]
    spec["tokenizer"]["path"] = str(REPO.parent / "shared" / "tokenizers" / "gpt2" / "tokenizer.json")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def build(spec: Path) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", BUILD, str(spec), str(Path(__file__).resolve().parent)],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def outputs(root: Path) -> dict[str, str]:
    from corpusmix.core.manifest import iter_manifests, read_manifest

    return {o["path"]: o["sha256"] for p in iter_manifests(root / "manifests") for o in read_manifest(p)["outputs"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args()
    assert set(SOURCES) <= {d.name for d in CORPUS.iterdir()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        a, b = tmp / "a", tmp / "b"
        rss_a, t_a = build(spec_for(a, CORPUS))
        rss_b, t_b = build(spec_for(b, CORPUS))
        same = outputs(a) == outputs(b)
        print(f"1x build: peak RSS {rss_a:.0f} MB, {t_a:.1f} s; again: {rss_b:.0f} MB, {t_b:.1f} s; "
              f"{len(outputs(a))} outputs, byte-identical: {same}")
        if args.skip_big:
            return
        grow(tmp / "raw", args.factor)
        size = sum(f.stat().st_size for f in (tmp / "raw").rglob("*.gz"))
        rss_big, t_big = build(spec_for(tmp / "big", tmp / "raw"))
        print(f"{args.factor}x build ({size / 1e6:.0f} MB gzip): peak RSS {rss_big:.0f} MB, {t_big:.1f} s; "
              f"ratio to 1x {rss_big / rss_a:.2f} (target < 1.5)")


if __name__ == "__main__":
    main()
