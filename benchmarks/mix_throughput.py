"""mixed_shards throughput against a raw numpy write of the same tokens, and loader throughput.

Usage:  python benchmarks/mix_throughput.py [--repeats 5]

Builds ../shared/corpus up to tokenize once (untimed) with specs/shared-corpus.yaml's
mixture (20 M tokens, three linear phases, 4 Mi-token shards), plans it, then per repeat,
alternating which goes first:
  stage     mix_stage: draw, order, gather tokens from the six token stores, write the
            .bin/.idx shards, lineage and shard manifests, checksums, fsync, publish;
  raw       the same tokens, already in one numpy array, written with ndarray.tofile to
            one file, then fsync (a durable raw write; also reported without fsync).
Loader: SampleReader over the shards, seq_len from the spec, every sample's inputs and
targets converted to int64 (what a trainer hands to torch), one process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SOURCES, build_through, write_spec  # noqa: E402

from corpusmix.core.spec import load_spec  # noqa: E402
from corpusmix.pipeline import run_stage
from corpusmix.trainer.loader import SampleReader, TokenStream  # noqa: E402


def raw_write(tokens: np.ndarray, path: Path, fsync: bool) -> float:
    t = time.perf_counter()
    with open(path, "wb") as f:
        tokens.tofile(f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    dt = time.perf_counter() - t
    path.unlink()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    quiet = lambda m: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec_path = write_spec(root, SOURCES, 2)
        spec = yaml.safe_load(spec_path.read_text())
        shared = yaml.safe_load((REPO / "specs" / "shared-corpus.yaml").read_text())
        spec["mixture"], spec["output"] = shared["mixture"], shared["output"]
        for src, theirs in zip(spec["sources"], shared["sources"]):
            src.update({k: theirs[k] for k in ("quality", "filters") if k in theirs})
        spec_path.write_text(yaml.safe_dump(spec))
        loaded = load_spec(spec_path)
        build_through(loaded, "mixture_plan")
        m, _ = run_stage("mixed_shards", loaded, progress=quiet)  # warm the page cache of the token stores
        out_dir = loaded.storage_root / m["outputs"][0]["path"].rsplit("/", 1)[0]
        tokens = np.concatenate([r.tokens for r in TokenStream.from_dir(out_dir).readers])
        n = len(tokens)
        times: dict[str, list[float]] = {"stage": [], "raw+fsync": [], "raw": []}
        for r in range(args.repeats):
            order = ["stage", "raw+fsync", "raw"] if r % 2 == 0 else ["raw", "raw+fsync", "stage"]
            for kind in order:
                if kind == "stage":
                    shutil.rmtree(out_dir)
                    t = time.perf_counter()
                    run_stage("mixed_shards", loaded, progress=quiet)
                    times[kind].append(time.perf_counter() - t)
                else:
                    times[kind].append(raw_write(tokens, root / "raw.bin", kind == "raw+fsync"))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"mixed_shards: {n:,} tokens ({tokens.dtype}), {m['counts']['shards']} shards, "
              f"{m['counts']['sequences']:,} sequences; median of {args.repeats}")
        for k in ("stage", "raw+fsync", "raw"):
            print(f"  {k:10} {med[k]:8.3f} s  {n / med[k] / 1e6:9.1f} M tokens/s")
        print(f"  ratio stage / raw+fsync = {med['raw+fsync'] / med['stage']:.3f}   "
              f"stage / raw (no fsync) = {med['raw'] / med['stage']:.3f}   (target >= 0.5)")

        seq_len = loaded.spec.mixture.seq_len
        reader = SampleReader(TokenStream.from_dir(out_dir), seq_len)
        rates, view_rates = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for _, x, y in reader.iter():
                x.astype(np.int64)
                y.astype(np.int64)
            rates.append(len(reader) * seq_len / (time.perf_counter() - t))
            t = time.perf_counter()
            for _ in reader.iter():
                pass
            view_rates.append(len(reader) * seq_len / (time.perf_counter() - t))
        print(f"loader: {len(reader):,} samples of {seq_len}, one process; median of {args.repeats}: "
              f"{statistics.median(rates) / 1e6:.0f} M tokens/s with int64 inputs and targets, "
              f"{statistics.median(view_rates) / 1e6:.0f} M tokens/s as zero-copy views (target >= 100)")

        # Opening the set: what the checks cost (sizes and counts always; sha256 by default), against
        # reading every token once (a sum over the memory maps), alternating, warm page cache.
        opens = {"checks + sha256": [], "checks only": [], "read every token": []}
        for _ in range(args.repeats):
            for label, fn in (("checks + sha256", lambda: TokenStream.from_dir(out_dir)),
                              ("checks only", lambda: TokenStream.from_dir(out_dir, verify=False)),
                              ("read every token", lambda: sum(int(a.sum(dtype=np.uint64)) for a in
                                                               TokenStream.from_dir(out_dir, verify=False)._arrays))):
                t = time.perf_counter()
                fn()
                opens[label].append(time.perf_counter() - t)
        size = sum(f.stat().st_size for f in out_dir.glob("shard-*.*"))
        print(f"opening the set ({size / 1e6:.1f} MB of .bin/.idx/.json), median of {args.repeats}: " + ", ".join(
            f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in opens.items()) +
            f"; sha256 verification {size / 1e9 / statistics.median(opens['checks + sha256']):.2f} GB/s")


if __name__ == "__main__":
    main()
