"""Ingest throughput on ../shared/corpus, against a read+parse baseline measured in the same run.

Usage:  python benchmarks/ingest_throughput.py [--repeats 5] [--workers 2]

For each repeat, alternating, it times
  * baseline: read + gunzip + parse every line with orjson (no validation, no output),
    with the same number of processes, one file per task;
  * corpusmix ingest of each source (read, screen, validate, write zstd Parquet,
    calibrate token estimate, manifest), into a fresh storage root.
It prints per-source documents, tokens and rates, the median elapsed and MB/s of
UTF-8 text, and the ratio of ingest to baseline throughput. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, SOURCES, write_spec  # noqa: E402


def _parse_file(path: str) -> int:
    """Baseline unit: gunzip and parse every line; returns UTF-8 text bytes."""
    data = zlib.decompress(Path(path).read_bytes(), wbits=31)
    return sum(len(orjson.loads(line)["text"].encode()) for line in data.splitlines() if line)


def main() -> None:
    from corpusmix.core.executor import open_executor
    from corpusmix.core.spec import Execution, load_spec
    from corpusmix.pipeline import run_stage

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    files = {n: sorted(glob.glob(str(CORPUS / n / "*.jsonl.gz"))) for n in SOURCES}
    base_t: dict[str, list[float]] = {n: [] for n in SOURCES}
    ing_t: dict[str, list[float]] = {n: [] for n in SOURCES}
    conc_t: list[float] = []
    conc_base_t: list[float] = []
    manifests: dict[str, dict] = {}
    text_bytes: dict[str, int] = {}
    ctx = get_context("forkserver")
    with ProcessPoolExecutor(args.workers, mp_context=ctx) as base_pool, open_executor(Execution(workers=args.workers)) as pool:
        # warm both pools (worker start-up and imports are not per-source costs)
        list(base_pool.map(_parse_file, files["math"]))
        with tempfile.TemporaryDirectory() as warm:
            run_stage("ingest", load_spec(write_spec(Path(warm), SOURCES, args.workers)), "math", pool, progress=lambda m: None)
        for rep in range(args.repeats):
            root = Path(tempfile.mkdtemp(prefix="cm-bench-"))
            loaded = load_spec(write_spec(root, SOURCES, args.workers))
            for name in SOURCES:
                t = time.perf_counter()
                text_bytes[name] = sum(base_pool.map(_parse_file, files[name]))
                base_t[name].append(time.perf_counter() - t)
                t = time.perf_counter()
                manifests[name], _ = run_stage("ingest", loaded, name, executor=pool, progress=lambda m: None)
                ing_t[name].append(time.perf_counter() - t)
            shutil.rmtree(root)
            root = Path(tempfile.mkdtemp(prefix="cm-bench-"))
            loaded = load_spec(write_spec(root, SOURCES, args.workers))
            t = time.perf_counter()
            list(base_pool.map(_parse_file, [f for n in SOURCES for f in files[n]]))
            conc_base_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            with ThreadPoolExecutor(len(SOURCES)) as threads:  # each source's reduce overlaps others' units
                list(threads.map(lambda n, spec=loaded: run_stage("ingest", spec, n, executor=pool, progress=lambda m: None),
                                 SOURCES))
            conc_t.append(time.perf_counter() - t)
            shutil.rmtree(root)
            print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)

    print(f"ingest of ../shared/corpus, {args.workers} worker processes, median of {args.repeats} runs")
    print("per source, one after another (as `corpusmix build` runs them):")
    hdr = (f"{'source':9} {'docs in':>8} {'docs out':>8} {'doc acc':>8} {'tok in':>10} {'tok out':>10} "
           f"{'tok acc':>8} {'text MB':>8} {'ingest s':>9} {'MB/s':>7} {'parse MB/s':>10} {'ratio':>6}")
    print(hdr)
    tot_b = tot_i = tot_p = 0.0
    for name in SOURCES:
        m = manifests[name]
        c, r = m["counts"], m["rates"]
        mb = text_bytes[name] / 1e6
        ti, tp = statistics.median(ing_t[name]), statistics.median(base_t[name])
        tot_b, tot_i, tot_p = tot_b + mb, tot_i + ti, tot_p + tp
        print(f"{name:9} {c['documents_in']:>8} {c['documents_out']:>8} {r['document_acceptance']:>8.4f} "
              f"{c['tokens_in']:>10} {c['tokens_out']:>10} {r['token_acceptance']:>8.4f} {mb:>8.2f} "
              f"{ti:>9.3f} {mb / ti:>7.1f} {mb / tp:>10.1f} {tp / ti:>6.2f}")
    print(f"{'total':9} {'':>8} {'':>8} {'':>8} {'':>10} {'':>10} {'':>8} {tot_b:>8.2f} {tot_i:>9.3f} "
          f"{tot_b / tot_i:>7.1f} {tot_b / tot_p:>10.1f} {tot_p / tot_i:>6.2f}")
    tc, tb = statistics.median(conc_t), statistics.median(conc_base_t)
    print(f"all six sources at once (units of every source share the pool, as a backfill of all partitions "
          f"would): ingest {tc:.3f} s = {tot_b / tc:.1f} MB/s; read+parse {tb:.3f} s = {tot_b / tb:.1f} MB/s; "
          f"ratio {tb / tc:.2f}")
    print("token counts: " + "; ".join(f"{n}: {manifests[n]['token_counting']['description']}" for n in SOURCES))


if __name__ == "__main__":
    main()
