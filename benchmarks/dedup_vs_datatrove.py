"""corpusmix dedup against datatrove's 4-stage MinHash dedup, on ../shared/corpus, in the same run.

Usage:  python benchmarks/dedup_vs_datatrove.py [--repeats 3] [--workers 2] [--sources dialogue,math]
            [--detail dialogue] [--layout auto] [--extra-layouts 9x13,14x8,16x8] [--no-split-variant]

datatrove lives in its own virtualenv, ``.bench-venv`` at the repository root
(git-ignored), created and filled on first use; it is never installed into the
project's ``.venv``. This file is also datatrove's runner: the parent runs
``.bench-venv/bin/python benchmarks/dedup_vs_datatrove.py --datatrove-child ...``
as a subprocess, which imports only datatrove and the standard library.

For each repeat and source, alternating which tool goes first, it times
  * corpusmix: ``ingest_source`` (worker pool of --workers, untimed for the
    dedup figure) then ``dedup_source`` (one process), into a fresh storage
    root; it reports dedup alone and ingest+dedup;
  * datatrove: MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster
    -> MinhashDedupFilter (+ JsonlWriter), each a LocalPipelineExecutor with
    --workers workers, reading the same JSONL.gz files with JsonlReader. The
    time is measured inside the child around the four ``executor.run()`` calls
    (worker start-up included; interpreter start-up and imports not); the
    subprocess wall time is printed too;
  * datatrove again with str.split as its word tokenizer (on its simplified
    text) instead of spaCy's, unless --no-split-variant: spaCy tokenisation
    is most of datatrove's time, and corpusmix splits on whitespace.
datatrove's MinHash layout (num_buckets x hashes_per_bucket) defaults to
``--layout auto``: the bands x rows corpusmix's default spec uses (its
``lsh_params``: datasketch's choice for threshold 0.8 and 128 permutations,
16 x 8 = 128 with corpusmix's recall weighting, 9 x 13 = 117 with datasketch's
own weights), so both tools have the same LSH S-curve. Medians are quoted.
MB = 10^6 bytes of UTF-8 text.

For the --detail sources it also compares which documents each tool removes
(by document id) and, untimed, what datatrove removes with --extra-layouts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
BENCH_VENV = REPO / ".bench-venv"
BENCH_PY = BENCH_VENV / "bin" / "python"
CORPUS = REPO.parent / "shared" / "corpus"
# The minimal set that datatrove's MinHash pipeline needs here (found by trying): orjson for
# JsonlReader/JsonlWriter, regex for its text normalisation, xxhash for its default shingle
# hash, spacy for its English word tokenizer (spacy.blank("en"): no model download), tokenizers
# because datatrove.pipeline.dedup's __init__ imports its exact-substring module.
DATATROVE_REQS = ["datatrove==0.10.1", "orjson", "regex", "xxhash<4", "spacy", "tokenizers"]
DATATROVE_IMPORTS = "import datatrove.pipeline.dedup, orjson, regex, xxhash, spacy"


# --------------------------------------------------------------------------- bench venv

def ensure_bench_venv(reqs: list[str]) -> str:
    """Create .bench-venv and install datatrove into it if needed; returns datatrove's version."""
    if Path(sys.prefix).resolve() == BENCH_VENV.resolve():
        raise SystemExit("run the parent with the project's .venv, not .bench-venv")
    if not BENCH_PY.exists():
        print(f"creating {BENCH_VENV}", file=sys.stderr)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(BENCH_VENV)], check=True)
    ok = subprocess.run([str(BENCH_PY), "-c", DATATROVE_IMPORTS], capture_output=True).returncode == 0
    if not ok:
        print(f"installing {' '.join(reqs)} into {BENCH_VENV}", file=sys.stderr)
        subprocess.run([str(BENCH_PY), "-m", "pip", "install", "-q", *reqs], check=True)
    out = subprocess.run([str(BENCH_PY), "-c", "import importlib.metadata as m; print(m.version('datatrove'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


# --------------------------------------------------------------------------- datatrove child

def datatrove_child(args: argparse.Namespace) -> None:
    """Run datatrove's MinHash dedup on one source; write timings and results as JSON to --out."""
    import glob
    import struct

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    src = Path(args.input_dir)
    work = Path(args.work)
    files = sorted(glob.glob(str(src / "*.jsonl.gz")))
    n_files = len(files)
    cfg = MinhashConfig(n_grams=args.ngrams, num_buckets=args.buckets, hashes_per_bucket=args.hashes,
                        seed=1, hash_config=HashConfig(precision=64, hash_fc="xxhash"))

    def reader() -> JsonlReader:
        return JsonlReader(str(src), glob_pattern="*.jsonl.gz", text_key="text", id_key="id")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from datatrove_words import datatrove_language

    language = datatrove_language("split" if args.tokenizer == "split" else "spacy")

    w = args.workers
    stages = [
        ("signature", LocalPipelineExecutor(
            [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg, language=language)],
            tasks=n_files, workers=min(w, n_files), logging_dir=str(work / "logs/sigs"), skip_completed=False)),
        ("buckets", LocalPipelineExecutor(
            [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg)],
            tasks=cfg.num_buckets, workers=min(w, cfg.num_buckets), logging_dir=str(work / "logs/buckets"),
            skip_completed=False)),
        ("cluster", LocalPipelineExecutor(
            [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"),
                                 config=cfg)],
            tasks=1, workers=1, logging_dir=str(work / "logs/clusters"), skip_completed=False)),
        ("filter", LocalPipelineExecutor(
            [reader(), MinhashDedupFilter(input_folder=str(work / "remove_ids")),
             JsonlWriter(str(work / "output"))],
            tasks=n_files, workers=min(w, n_files), logging_dir=str(work / "logs/filter"), skip_completed=False)),
    ]
    times = {}
    t_all = time.perf_counter()
    for name, ex in stages:
        t = time.perf_counter()
        ex.run()
        times[name] = time.perf_counter() - t
    total = time.perf_counter() - t_all

    result = {"total_s": total, "stage_s": times, "files": n_files,
              "config": str(cfg), "num_hashes": cfg.num_buckets * cfg.hashes_per_bucket}
    # untimed: map (task rank, index of the document in its task) -> id, as the stages saw them
    ids: dict[tuple[int, int], str] = {}
    n_in = text_bytes = 0
    for rank in range(n_files):
        for i, doc in enumerate(reader().run(None, rank, n_files)):
            ids[(rank, i)] = doc.id
            n_in += 1
            text_bytes += len(doc.text.encode())
    removed = []
    for rank in range(n_files):
        path = work / "remove_ids" / f"{rank:06d}.remove"
        if path.exists():
            data = path.read_bytes()
            removed += [ids[(rank, d)] for (d,) in struct.iter_unpack("<I", data)]
    in_cluster = set()
    for dups in glob.glob(str(work / "buckets" / "*.dups")):
        for f1, d1, f2, d2 in struct.iter_unpack("<4I", Path(dups).read_bytes()):
            in_cluster.add(ids[(f1, d1)])
            in_cluster.add(ids[(f2, d2)])
    pairs = sum(os.path.getsize(p) // 16 for p in glob.glob(str(work / "buckets" / "*.dups")))
    result.update(documents_in=n_in, text_bytes=text_bytes, removed=len(removed), band_matches=pairs,
                  removed_ids=sorted(removed) if args.with_ids else [],
                  cluster_ids=sorted(in_cluster) if args.with_ids else [])
    Path(args.out).write_text(json.dumps(result))


def run_datatrove(source: str, workers: int, layout: tuple[int, int], ngrams: int, with_ids: bool,
                  tokenizer: str = "spacy") -> dict:
    work = Path(tempfile.mkdtemp(prefix="dt-bench-"))
    out = work / "result.json"
    log = work / "child.log"
    cmd = [str(BENCH_PY), str(HERE), "--datatrove-child", "--input-dir", str(CORPUS / source),
           "--work", str(work / "run"), "--workers", str(workers), "--buckets", str(layout[0]),
           "--hashes", str(layout[1]), "--ngrams", str(ngrams), "--out", str(out), "--tokenizer", tokenizer] + (["--with-ids"] if with_ids else [])
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{BENCH_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    t = time.perf_counter()
    with open(log, "wb") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(work)).returncode
    wall = time.perf_counter() - t
    if rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"datatrove child failed (rc {rc}) on {source}; log tail:\n{tail}")
    res = json.loads(out.read_text())
    res["wall_s"] = wall
    shutil.rmtree(work, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- corpusmix side

def run_corpusmix(source: str, kind: str, pool, workers: int, with_ids: bool) -> dict:
    import pyarrow.parquet as pq
    from common import write_spec

    from corpusmix.core.spec import load_spec
    from corpusmix.pipeline import run_stage

    quiet = lambda m: None  # noqa: E731
    root = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    try:
        loaded = load_spec(write_spec(root, {source: kind}, workers))
        t0 = time.perf_counter()
        run_stage("ingest", loaded, source, executor=pool, progress=quiet)
        t1 = time.perf_counter()
        m, _ = run_stage("dedup", loaded, source, progress=quiet)
        t2 = time.perf_counter()
        res = {"dedup_s": t2 - t1, "ingest_dedup_s": t2 - t0, "counts": m["counts"]}
        if with_ids:
            dup = next(o for o in m["outputs"] if o["kind"] == "duplicates")
            t = pq.read_table(loaded.storage_root / dup["path"], columns=["doc_id", "representative_doc_id", "kind"])
            d = t.to_pydict()
            res["removed_ids"] = sorted(d["doc_id"])
            res["removed_exact_ids"] = sorted(i for i, k in zip(d["doc_id"], d["kind"]) if k == "exact")
            res["cluster_ids"] = sorted(set(d["doc_id"]) | set(d["representative_doc_id"]))
        return res
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- main

def parse_layout(s: str) -> tuple[int, int]:
    b, r = s.lower().split("x")
    return int(b), int(r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sources", default="all", help="comma-separated, or 'all'")
    ap.add_argument("--detail", default="dialogue", help="sources whose removals are compared by id ('' for none)")
    ap.add_argument("--layout", default="auto",
                    help="datatrove num_buckets x hashes_per_bucket, e.g. 9x13; auto: corpusmix's bands x rows")
    ap.add_argument("--extra-layouts", default="9x13,14x8,16x8",
                    help="other datatrove layouts run once, untimed, on the --detail sources ('' for none)")
    ap.add_argument("--no-split-variant", dest="split_variant", action="store_false",
                    help="skip the timed datatrove variant with a str.split word tokenizer instead of spaCy")
    ap.add_argument("--datatrove-req", action="append", default=None,
                    help="pip requirement for .bench-venv (repeatable; default: %s)" % " ".join(DATATROVE_REQS))
    # child mode (run by .bench-venv/bin/python)
    ap.add_argument("--datatrove-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input-dir", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--buckets", type=int, default=9, help=argparse.SUPPRESS)
    ap.add_argument("--hashes", type=int, default=13, help=argparse.SUPPRESS)
    ap.add_argument("--ngrams", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--with-ids", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", choices=["spacy", "split"], default="spacy", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datatrove_child:
        datatrove_child(args)
        return

    sys.path.insert(0, str(HERE.parent))
    from common import SOURCES

    from corpusmix.core.executor import open_executor
    from corpusmix.core.spec import Dedup, Execution

    try:
        from corpusmix.stages.minhash import lsh_params
    except ImportError:  # older corpusmix: datasketch's own choice
        def lsh_params(cfg):
            from datasketch import MinHashLSH
            lsh = MinHashLSH(threshold=cfg.near.threshold, num_perm=cfg.near.num_perm)
            return lsh.b, lsh.r

    names = list(SOURCES) if args.sources == "all" else [s for s in args.sources.split(",") if s]
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; known: {list(SOURCES)}")
    detail = [s for s in args.detail.split(",") if s in names]
    cm_bands = lsh_params(Dedup())
    layout = cm_bands if args.layout == "auto" else parse_layout(args.layout)
    extra = [lay for lay in (parse_layout(s) for s in args.extra_layouts.split(",") if s) if lay != layout]
    dt_version = ensure_bench_venv(args.datatrove_req or DATATROVE_REQS)
    near = Dedup().near
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)

    cm: dict[str, list[dict]] = {n: [] for n in names}
    dt: dict[str, list[dict]] = {n: [] for n in names}
    dts: dict[str, list[dict]] = {n: [] for n in names}
    tools = ["cm", "dt"] + (["dts"] if args.split_variant else [])
    with open_executor(Execution(workers=args.workers)) as pool:
        # warm-up, untimed: worker pool start and imports; the datatrove venv's .pyc and page cache
        small = min(names, key=lambda n: sum(p.stat().st_size for p in (CORPUS / n).glob("*.jsonl.gz")))
        run_corpusmix(small, SOURCES[small], pool, args.workers, False)
        run_datatrove(small, args.workers, layout, 5, False)
        for rep in range(args.repeats):
            for name in names:
                want_ids = rep == 0 and name in detail
                k = rep % len(tools)
                for tool in tools[k:] + tools[:k]:  # rotate which tool goes first
                    if tool == "cm":
                        cm[name].append(run_corpusmix(name, SOURCES[name], pool, args.workers, want_ids))
                    elif tool == "dt":
                        dt[name].append(run_datatrove(name, args.workers, layout, 5, want_ids))
                    else:
                        dts[name].append(run_datatrove(name, args.workers, layout, 5, want_ids, "split"))
            print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)
        extra_res = {(n, lay): run_datatrove(n, args.workers, lay, 5, False) for n in detail for lay in extra}

    med = statistics.median
    b, r = layout
    split = bool(args.split_variant)
    print(f"dedup of ../shared/corpus: corpusmix {git.stdout.strip() or '?'} vs datatrove {dt_version}, median of "
          f"{args.repeats} runs, {args.workers} workers")
    print(f"corpusmix: {near.num_perm} perms, {near.shingle_words}-word shingles, threshold {near.threshold}, LSH "
          f"{cm_bands[0]} bands x {cm_bands[1]} rows, exact dedup, candidates verified by true Jaccard; "
          f"dedup_source is one process, ingest uses {args.workers} workers")
    print(f"datatrove (dt): MinhashConfig(n_grams=5, num_buckets={b}, hashes_per_bucket={r}) = {b * r} hashes, "
          f"64-bit xxhash, default TextNormConfig, default English word tokenizer (spaCy blank 'en'); "
          f"{args.workers} workers; no exact pass, no verification"
          + ("; dt-split: the same with str.split as word tokenizer" if split else ""))
    print("docs in = documents that reach dedup (corpusmix, after ingest screening) / read by JsonlReader if "
          "they differ; rm = documents removed; dt/cm = datatrove s / corpusmix dedup s; (i+d): / ingest+dedup s")
    hdr = (f"{'source':9} {'docs in':>11} {'text MB':>7} {'cm rm':>5} {'exact':>5} {'near':>4} {'dt rm':>5} "
           f"{'cm dedup s':>10} {'cm ing+dd s':>11} {'dt s':>7} {'dt wall s':>9} {'dt/cm':>6} {'(i+d)':>6}")
    if split:
        hdr += f" {'dt-split s':>10} {'dts/cm':>6}"
    print(hdr)
    keys = ("mb", "cm", "cmi", "dt", "dtw", "dts", "in", "cmr", "dtr")
    tot = dict.fromkeys(keys, 0.0)
    for name in names:
        c = cm[name][0]["counts"]
        d0 = dt[name][0]
        mb = c["bytes_in"] / 1e6
        t_cm = med(x["dedup_s"] for x in cm[name])
        t_cmi = med(x["ingest_dedup_s"] for x in cm[name])
        t_dt = med(x["total_s"] for x in dt[name])
        t_dtw = med(x["wall_s"] for x in dt[name])
        t_dts = med(x["total_s"] for x in dts[name]) if split else 0.0
        cmr = c["removed_exact"] + c["removed_near"]
        for key, v in zip(keys, (mb, t_cm, t_cmi, t_dt, t_dtw, t_dts, c["documents_in"], cmr, d0["removed"])):
            tot[key] += v
        docs = f"{c['documents_in']}" if c["documents_in"] == d0["documents_in"] else \
            f"{c['documents_in']}/{d0['documents_in']}"
        line = (f"{name:9} {docs:>11} {mb:>7.2f} {cmr:>5} {c['removed_exact']:>5} {c['removed_near']:>4} "
                f"{d0['removed']:>5} {t_cm:>10.3f} {t_cmi:>11.3f} {t_dt:>7.3f} {t_dtw:>9.3f} "
                f"{t_dt / t_cm:>6.2f} {t_dt / t_cmi:>6.2f}")
        if split:
            line += f" {t_dts:>10.3f} {t_dts / t_cm:>6.2f}"
        print(line)
    line = (f"{'total':9} {int(tot['in']):>11} {tot['mb']:>7.2f} {int(tot['cmr']):>5} {'':>5} {'':>4} "
            f"{int(tot['dtr']):>5} {tot['cm']:>10.3f} {tot['cmi']:>11.3f} {tot['dt']:>7.3f} {tot['dtw']:>9.3f} "
            f"{tot['dt'] / tot['cm']:>6.2f} {tot['dt'] / tot['cmi']:>6.2f}")
    if split:
        line += f" {tot['dts']:>10.3f} {tot['dts'] / tot['cm']:>6.2f}"
    print(line)
    print(f"throughput (total text MB / summed medians): corpusmix dedup {tot['mb'] / tot['cm']:.2f} MB/s, "
          f"ingest+dedup {tot['mb'] / tot['cmi']:.2f} MB/s, datatrove {tot['mb'] / tot['dt']:.2f} MB/s"
          + (f", datatrove str.split {tot['mb'] / tot['dts']:.2f} MB/s" if split else ""))
    print("datatrove stage medians (s): " + "; ".join(
        f"{n}: " + ", ".join(f"{s} {med(x['stage_s'][s] for x in dt[n]):.2f}" for s in dt[n][0]["stage_s"])
        for n in names))
    if split:
        print("datatrove str.split removes: " + ", ".join(f"{n} {dts[n][0]['removed']}" for n in names))
    for name in detail:
        c, d = cm[name][0], dt[name][0]
        cr, dr = set(c["removed_ids"]), set(d["removed_ids"])
        cc, dc = set(c["cluster_ids"]), set(d["cluster_ids"])
        k = c["counts"]
        print(f"[{name}] removed: corpusmix {len(cr)} ({k['removed_exact']} exact, {k['removed_near']} near; "
              f"{k['candidate_pairs']} LSH candidate pairs among distinct texts, {k['accepted_pairs']} accepted, "
              f"{k['rejected_pairs']} rejected as true Jaccard < {near.threshold}); datatrove {b}x{r} {len(dr)} "
              f"({d['band_matches']} band matches). Same ids removed by both {len(cr & dr)}, corpusmix only "
              f"{len(cr - dr)}, datatrove only {len(dr - cr)} (mostly which member of a cluster survives: "
              f"corpusmix keeps the longest)")
        print(f"[{name}] documents in any duplicate cluster: corpusmix {len(cc)}, datatrove {len(dc)}, both "
              f"{len(cc & dc)}, corpusmix only {len(cc - dc)}, datatrove only {len(dc - cc)}")
        if split and dts[name][0].get("removed_ids"):
            sr = set(dts[name][0]["removed_ids"])
            print(f"[{name}] datatrove {b}x{r} with str.split removes {len(sr)}; same ids as spaCy run "
                  f"{len(sr & dr)}")
        for lay in extra:
            e = extra_res[(name, lay)]
            print(f"[{name}] datatrove {lay[0]}x{lay[1]} ({lay[0] * lay[1]} hashes): removes {e['removed']} "
                  f"({e['band_matches']} band matches), {e['total_s']:.2f} s (one run)")

if __name__ == "__main__":
    main()
