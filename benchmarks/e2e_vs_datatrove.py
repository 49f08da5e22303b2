"""End to end: corpusmix builds specs/shared-corpus.yaml, datatrove runs the equivalent pipeline,
in the same run, alternating; plus the machine's limits for each kind of work, measured in the same run.

Usage:  python benchmarks/e2e_vs_datatrove.py [--repeats 3] [--workers 2] [--spec specs/shared-corpus.yaml]
            [--dt-words spacy|split]

corpusmix: ``executors.build`` (every engine stage in build order, each timed: ingest,
dedup, cross_source_dedup, quality, tokenizer, tokenize, mixture_plan, mixed_shards)
on the spec written into fresh storage with ``execution: processes`` and --workers
workers (``executors.write_spec``). The worker pool is shut down before and after
every build, so each build pays its pool's start, as a fresh ``corpusmix build`` does.
Quality rules per source are the spec's: corpusmix's defaults per source kind.

datatrove (0.10.1, in ``.bench-venv``, run as ``--datatrove-child`` by that venv's
python, importing only datatrove and the standard library), on the same raw files
(``<source>/*.jsonl.gz``, text "text", id "id"). **Per source**, like corpusmix's
per-source dedup and per-source rules, one ``LocalPipelineExecutor`` per stage, tasks
= files, workers = min(--workers, tasks); every stage writes its output, as each
corpusmix stage does:

  exact_sig        JsonlReader -> ExactDedupSignature (xxhash64 of datatrove's
                   ``simplify_text``: its MinHash normalisation; corpusmix hashes its
                   own normalised text)
  exact_find       ExactFindDedups (1 task)
  minhash_sig      JsonlReader -> ExactDedupFilter -> MinhashDedupSignature
  minhash_buckets  MinhashDedupBuckets (tasks = bands)
  minhash_cluster  MinhashDedupCluster (1 task)
  minhash_filter   JsonlReader -> ExactDedupFilter -> MinhashDedupFilter -> JsonlWriter
  quality          JsonlReader -> GopherQualityFilter -> GopherRepetitionFilter -> JsonlWriter,
                   with the Gopher checks corpusmix applies to that source and its
                   thresholds (the map of quality_vs_datatrove.py); a filter with no
                   check is left out, a source with none skips the stage
  tokenize         JsonlReader -> DocumentTokenizer (the same tokenizer.json, a local file,
                   EOS appended, documents shuffled in each file)
then once, over every source's tokenized files:
  merge            DocumentTokenizerMerger (shuffled, files of the spec's shard_tokens)
MinHash: MinhashConfig(n_grams = corpusmix's shingle_words, num_buckets x
hashes_per_bucket = corpusmix's bands x rows, 64-bit xxhash); word tokenizer: datatrove's
default for "en" (spaCy blank "en"), or str.split with --dt-words split. Each stage is
timed inside the child around its ``executor.run()`` (worker start-up included,
interpreter start-up and imports not); the total is the sum.

Machine limits, per repeat, right after corpusmix's build (on its outputs):
  read       read + gunzip (ISA-L) + parse (Arrow JSON, one thread) every raw file, on a
             pool of --workers processes; MB of text parsed / wall time
  encode     one ``Tokenizer.encode_batch_fast`` over every kept text (after quality),
             in memory, in this process (the Rust encoder uses every core)
  encode_fast  the same with ``fast_bpe.encode`` (tiktoken, every core): the encoder the
             tokenize stage uses for this tokenizer (ids checked equal to the above)
  minhash    corpusmix.stages.dedup's ``batch_shingles`` + ``batch_signatures`` (batches of
             2,048 documents, as dedup reads them) over every document dedup reads,
             normalised beforehand (untimed), one unit per ingest part on the pool;
             MB of text / (worker seconds / workers)
  write      ``ndarray.tofile`` + fsync of as many bytes as the build's token files
             (tokenize .bin + mixed shard .bin), into the same temporary directory

Every repeat runs corpusmix and datatrove once each, the order flipping every repeat.
corpusmix's stage times are its engine functions called one after another (as datatrove's
are its executor runs); each repeat then also times ``corpusmix build`` on the same spec in
a fresh process, storage root and Dagster home (imports, one Dagster run per source and
phase with its SQLite event log, checks, report): the command a user runs, checked to write
the same mixed shards.
Printed: medians per stage and in total for both, the ratio datatrove/corpusmix, each
stage's throughput against its limit, and corpusmix's whole build against the
tokenization-only time (both encode limits on the same text). MB = 10^6 bytes of UTF-8 text.
"""

import argparse
import glob
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # also for datatrove's workers, which import this file as __mp_main__

DT_STAGES = ("exact_sig", "exact_find", "minhash_sig", "minhash_buckets", "minhash_cluster", "minhash_filter",
             "quality", "tokenize", "merge")
DT_DEDUP = DT_STAGES[:6]
# rows of the comparison: (label, corpusmix stages, datatrove stages)
ROWS = [
    ("ingest", ["ingest"], []),
    ("dedup: exact + MinHash, per source", ["dedup"], list(DT_DEDUP)),
    ("cross-source exact dedup", ["cross_source_dedup"], []),
    ("raw files -> deduplicated", ["ingest", "dedup", "cross_source_dedup"], list(DT_DEDUP)),
    ("quality filters", ["quality"], ["quality"]),
    ("tokenizer (publish a copy)", ["tokenizer"], []),
    ("tokenize", ["tokenize"], ["tokenize"]),
    ("mixture plan + mixed shards / merge", ["mixture_plan", "mixed_shards"], ["merge"]),
]


# --------------------------------------------------------------------------- datatrove child

def _exact_content(doc) -> str:
    """What datatrove's exact dedup hashes: the text as its MinHash normalises it."""
    from datatrove.utils.text import simplify_text

    return simplify_text(doc.text)


def _count_docs(folder: Path) -> tuple[int, int]:
    """(documents, UTF-8 text bytes) of the JSONL files in ``folder``."""
    n = size = 0
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, "rb") as fh:
            for line in fh:
                n += 1
                size += len(json.loads(line)["text"].encode())
    return n, size


def _noop(data, rank: int = 0, world_size: int = 1):
    yield from ()


def datatrove_probe(out: str, workers: int) -> None:
    """Untimed warm-up (imports, .pyc, spaCy) and the start-up cost of one executor run."""
    import importlib.metadata

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.utils.text import split_into_words

    split_into_words("warm up the word tokenizer .", "en")
    res = {"version": importlib.metadata.version("datatrove")}
    with tempfile.TemporaryDirectory(prefix="dt-probe-") as tmp:
        for w in (1, workers):
            runs = []
            for i in range(3):
                ex = LocalPipelineExecutor([_noop], tasks=w, workers=w, logging_dir=f"{tmp}/{w}-{i}",
                                           skip_completed=False)
                t = time.perf_counter()
                ex.run()
                runs.append(time.perf_counter() - t)
            res[f"noop_{w}"] = statistics.median(runs)
    Path(out).write_text(json.dumps(res))


def datatrove_child(cfg_path: str, out: str) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer, DocumentTokenizerMerger
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove_words import datatrove_language
    from quality_vs_datatrove import _dt_filters

    cfg = json.loads(Path(cfg_path).read_text())
    work, w = Path(cfg["work"]), cfg["workers"]
    language = datatrove_language(cfg["words"])
    hashing = HashConfig(precision=64, hash_fc="xxhash")
    mh = MinhashConfig(n_grams=cfg["ngrams"], num_buckets=cfg["bands"], hashes_per_bucket=cfg["rows"], seed=1,
                       hash_config=hashing)
    exact = ExactDedupConfig(content_getter=_exact_content, hash_config=hashing)
    times: dict[str, dict[str, float]] = {s: {} for s in DT_STAGES}
    runs = 0

    def run(stage: str, src: str, pipeline: list, tasks: int) -> None:
        nonlocal runs
        ex = LocalPipelineExecutor(pipeline, tasks=tasks, workers=max(1, min(w, tasks)),
                                   logging_dir=str(work / "logs" / src / stage), skip_completed=False)
        t = time.perf_counter()
        ex.run()
        times[stage][src] = time.perf_counter() - t
        runs += 1

    def jsonl_in(folder: Path) -> tuple[JsonlReader, int]:
        return JsonlReader(str(folder), glob_pattern="*.jsonl", text_key="text", id_key="id"), \
            len(list(folder.glob("*.jsonl")))

    def jsonl_out(folder: Path) -> JsonlWriter:
        return JsonlWriter(str(folder), output_filename="${rank}.jsonl", compression=None)

    t_all = time.perf_counter()
    for src, raw in cfg["raw"].items():
        d = work / src
        n = len(glob.glob(os.path.join(raw, "*.jsonl.gz")))

        def raw_reader(raw: str = raw) -> JsonlReader:
            return JsonlReader(raw, glob_pattern="*.jsonl.gz", text_key="text", id_key="id")

        run("exact_sig", src, [raw_reader(), ExactDedupSignature(str(d / "exact_sigs"), exact)], n)
        run("exact_find", src, [ExactFindDedups(str(d / "exact_sigs"), str(d / "exact_dups"), exact)], 1)
        run("minhash_sig", src, [raw_reader(), ExactDedupFilter(str(d / "exact_dups"), exact),
                                 MinhashDedupSignature(str(d / "mh_sigs"), config=mh, language=language)], n)
        run("minhash_buckets", src, [MinhashDedupBuckets(str(d / "mh_sigs"), str(d / "mh_buckets"), config=mh)],
            mh.num_buckets)
        run("minhash_cluster", src, [MinhashDedupCluster(str(d / "mh_buckets"), str(d / "remove_ids"), config=mh)], 1)
        run("minhash_filter", src, [raw_reader(), ExactDedupFilter(str(d / "exact_dups"), exact),
                                    MinhashDedupFilter(str(d / "remove_ids")), jsonl_out(d / "deduped")], n)
        qcfg = cfg["quality"][src]
        q, r = _dt_filters(qcfg, language)
        filters = ([q] if qcfg["args"]["quality"] else []) + \
            ([r] if any(v not in (None, []) for v in qcfg["args"]["repetition"].values()) else [])
        tok_in = d / "deduped"
        if filters:
            reader, m = jsonl_in(d / "deduped")
            run("quality", src, [reader, *filters, jsonl_out(d / "filtered")], max(1, m))
            tok_in = d / "filtered"
        else:
            times["quality"][src] = 0.0
        reader, m = jsonl_in(tok_in)
        run("tokenize", src, [reader, DocumentTokenizer(str(work / "tokenized"), tokenizer_name_or_path=cfg["tokenizer"],
                                                        eos_token=cfg["eos"], save_filename=src, seed=cfg["seed"])],
            max(1, m))
    run("merge", "all", [DocumentTokenizerMerger(str(work / "tokenized"), str(work / "merged"), save_filename="merged",
                                                 max_tokens_per_file=cfg["shard_tokens"], seed=cfg["seed"],
                                                 progress=False)], 1)
    total = time.perf_counter() - t_all

    # untimed: what each stage kept
    counts = {}
    for src in cfg["raw"]:
        d = work / src
        dedup_docs, dedup_bytes = _count_docs(d / "deduped")
        qual_docs, qual_bytes = _count_docs(d / "filtered") if (d / "filtered").is_dir() else (dedup_docs, dedup_bytes)
        counts[src] = {
            "exact_removed": sum(p.stat().st_size for p in (d / "exact_dups").rglob("*.c4_dup")) // 4,
            "near_removed": sum(p.stat().st_size for p in (d / "remove_ids").glob("*.remove")) // 4,
            "docs_dedup": dedup_docs, "mb_dedup": dedup_bytes / 1e6, "docs_quality": qual_docs,
            "mb_quality": qual_bytes / 1e6,
            "token_bytes": sum(p.stat().st_size for p in (work / "tokenized").glob(f"{src}_*.ds")),
        }
    merged = list((work / "merged").glob("*.ds"))
    res = {"total_s": total, "stage_s": times, "executor_runs": runs, "counts": counts,
           "merged_files": len(merged), "merged_bytes": sum(p.stat().st_size for p in merged)}
    Path(out).write_text(json.dumps(res))


def run_child(mode: list[str], tmp: Path, name: str) -> dict:
    """Run this file in .bench-venv with ``mode``; its JSON result (the wall time added)."""
    from common import child_env
    from dedup_vs_datatrove import BENCH_PY, BENCH_VENV

    out, log = tmp / f"{name}.json", tmp / f"{name}.log"
    t = time.perf_counter()
    with open(log, "wb") as fh:
        rc = subprocess.run([str(BENCH_PY), str(HERE), *mode, "--out", str(out)], stdout=fh,
                            stderr=subprocess.STDOUT, env=child_env(BENCH_VENV), cwd=str(tmp)).returncode
    wall = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"datatrove child {mode[0]} failed (rc {rc}); log tail:\n"
                           f"{log.read_text(errors='replace')[-4000:]}")
    res = json.loads(out.read_text())
    out.unlink()
    log.unlink()
    res["wall_s"] = wall
    return res


def run_datatrove(cfg: dict, tmp: Path, r: int) -> dict:
    work = tmp / f"dt-{r}"
    work.mkdir()
    (tmp / "dt.json").write_text(json.dumps({**cfg, "work": str(work)}))
    try:
        return run_child(["--datatrove-child", "--config", str(tmp / "dt.json")], tmp, f"dt-{r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- machine limits

def _read_unit(path: str) -> tuple[int, int]:
    """Read, gunzip and parse one JSONL.gz file: (documents, UTF-8 bytes of text)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pajson
    from isal import igzip

    with open(path, "rb") as fh:
        data = igzip.decompress(fh.read())
    table = pajson.read_json(pa.py_buffer(data), read_options=pajson.ReadOptions(use_threads=False,
                                                                                block_size=64 << 20))
    return table.num_rows, int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)


def _minhash_unit(k: int, num_perm: int, seed: int, normalize_cfg: dict, part: str) -> tuple[int, float]:
    """corpusmix's vectorised MinHash over one ingest part: (text bytes, seconds of hashing)."""
    import pyarrow.parquet as pq

    from corpusmix.core.spec import Normalize
    from corpusmix.stages.minhash import batch_shingles, batch_signatures, normalize, permutations

    t = pq.read_table(part, columns=["text", "n_bytes"])
    cfg = Normalize(**normalize_cfg)
    norms = [normalize(x, cfg) for x in t.column("text").to_pylist()]
    perms = permutations(num_perm, seed)
    t0 = time.perf_counter()
    for i in range(0, len(norms), 2048):
        batch_signatures(*batch_shingles(norms[i:i + 2048], k), perms)
    return int(t.column("n_bytes").to_numpy().sum()), time.perf_counter() - t0


def measure_limits(loaded, pool, workers: int, raw_files: list[str], tmp: Path) -> dict:
    """The limits, on the outputs of the corpusmix build just done (see the module docstring)."""
    import functools

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from corpusmix.core.manifest import manifest_path, read_manifest
    from corpusmix.stages import fast_bpe
    from corpusmix.stages.tokenizer import load_tokenizer

    def parts(stage: str) -> list[Path]:
        return [loaded.storage_root / o["path"] for s in loaded.source_names
                for o in read_manifest(manifest_path(loaded.manifest_root, stage, s))["outputs"]
                if o["kind"] == "documents"]

    res = {}
    t = time.perf_counter()
    got = list(pool.map(_read_unit, raw_files))
    res["read"] = {"s": time.perf_counter() - t, "mb": sum(b for _, b in got) / 1e6, "docs": sum(n for n, _ in got)}

    near = loaded.spec.dedup.near
    fn = functools.partial(_minhash_unit, near.shingle_words, near.num_perm, near.seed,
                           loaded.spec.dedup.normalize.model_dump())
    got = list(pool.map(fn, [str(p) for p in parts("ingest")]))
    mb = sum(b for b, _ in got) / 1e6
    res["minhash"] = {"s": sum(s for _, s in got) / workers, "mb": mb}

    texts = pa.concat_tables([pq.read_table(p, columns=["text"]) for p in parts("quality")]).column("text").to_pylist()
    tok = load_tokenizer(str(loaded.resolve(loaded.spec.tokenizer.path)))
    t = time.perf_counter()
    enc = tok.encode_batch_fast(texts, add_special_tokens=False)
    res["encode"] = {"s": time.perf_counter() - t, "mb": sum(len(x.encode()) for x in texts) / 1e6,
                     "tokens": sum(len(e.ids) for e in enc)}
    del enc
    t = time.perf_counter()
    fast = fast_bpe.encode(str(loaded.resolve(loaded.spec.tokenizer.path)), texts)
    res["encode_fast"] = {"s": time.perf_counter() - t, "mb": res["encode"]["mb"], "tokens": sum(map(len, fast))}
    assert res["encode_fast"]["tokens"] == res["encode"]["tokens"]
    del fast, texts

    n_bytes = sum(p.stat().st_size for stage in ("tokenize", "mixed_shards")
                  for p in (loaded.storage_root / stage).rglob("*.bin"))
    arr = np.random.default_rng(0).integers(0, 1 << 16, n_bytes // 2, dtype=np.uint16)
    target = tmp / "raw-write.bin"
    t = time.perf_counter()
    with open(target, "wb") as fh:
        arr.tofile(fh)
        fh.flush()
        os.fsync(fh.fileno())
    res["write"] = {"s": time.perf_counter() - t, "mb": arr.nbytes / 1e6}
    target.unlink()
    return res


# --------------------------------------------------------------------------- corpusmix side



def corpusmix_counts(loaded) -> dict:
    from corpusmix.core.manifest import manifest_path, read_manifest

    def m(stage: str, part: str | None) -> dict:
        return read_manifest(manifest_path(loaded.manifest_root, stage, part))

    out: dict = {"sources": {}}
    for s in loaded.source_names:
        ing, dd, q, tk = (m(stage, s) for stage in ("ingest", "dedup", "quality", "tokenize"))
        out["sources"][s] = {
            "docs_in": ing["counts"]["documents_out"], "mb_in": ing["counts"]["bytes_out"] / 1e6,
            "exact_removed": dd["counts"]["removed_exact"], "near_removed": dd["counts"]["removed_near"],
            "docs_dedup": dd["counts"]["documents_out"], "mb_dedup": dd["counts"]["bytes_out"] / 1e6,
            "docs_quality": q["counts"]["documents_out"], "mb_quality": q["counts"]["bytes_out"] / 1e6,
            "tokens": tk["counts"]["tokens_stored"]}
    cross, mix = m("cross_source_dedup", None), m("mixed_shards", None)
    out["cross_removed"] = cross["counts"]["documents_in"] - cross["counts"]["documents_out"]
    out["mix_tokens"], out["shards"] = mix["counts"]["tokens_out"], mix["counts"]["shards"]
    out["token_bytes"] = {stage: sum(p.stat().st_size for p in (loaded.storage_root / stage).rglob("*.bin"))
                          for stage in ("tokenize", "mixed_shards")}
    return out


def cli_build(base: dict, root: Path, workers: int, engine_build) -> float:
    """Wall seconds of ``corpusmix build`` in a fresh process, storage root and Dagster home: what a
    user waits for (interpreter start, imports, Dagster runs and their SQLite event log, checks,
    report), on the same spec. Its mixed shards must be the engine build's bytes."""
    from executors import write_spec

    from corpusmix.core.manifest import manifest_path, read_manifest
    from corpusmix.core.spec import load_spec

    spec = write_spec(base, root, "processes", workers, None)
    env = os.environ | {"DAGSTER_HOME": str(root / "dagster_home")}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec)], env=env, cwd=REPO,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"corpusmix build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")

    def shards(loaded) -> list[str]:
        m = read_manifest(manifest_path(loaded.manifest_root, "mixed_shards", None))
        return sorted(o["sha256"] for o in m["outputs"])

    if shards(load_spec(spec)) != shards(engine_build):
        raise SystemExit("corpusmix build wrote other mixed shards than the engine build of the same spec")
    shutil.rmtree(root, ignore_errors=True)
    return wall


# --------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--spec", default=str(REPO / "specs" / "shared-corpus.yaml"))
    ap.add_argument("--dt-words", choices=["spacy", "split"], default="spacy",
                    help="datatrove's word tokenizer: its default for 'en' (spaCy) or str.split (corpusmix's split)")
    ap.add_argument("--datatrove-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--datatrove-probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datatrove_child:
        datatrove_child(args.config, args.out)
        return
    if args.datatrove_probe:
        datatrove_probe(args.out, args.workers)
        return

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from common import resolved_spec
    from dedup_vs_datatrove import DATATROVE_REQS, ensure_bench_venv
    from executors import build, write_spec
    from quality_vs_datatrove import build_config

    from corpusmix.core.executor import shutdown_pools
    from corpusmix.core.spec import load_spec
    from corpusmix.stages.minhash import lsh_params
    from corpusmix.stages.quality_rules import GOPHER, GOPHER_STOP_WORDS, resolve_rules

    command = shlex.join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO))
                          else sys.executable, os.path.relpath(HERE, REPO), *sys.argv[1:]])
    print(f"reproduce: cd {shlex.quote(str(REPO))} && {command}", flush=True)
    ensure_bench_venv(DATATROVE_REQS)
    loaded = load_spec(args.spec)
    base = resolved_spec(args.spec)
    names = loaded.source_names
    bands, rows = lsh_params(loaded.spec.dedup)
    near = loaded.spec.dedup.near
    raw_dirs = {s.name: str(Path(loaded.resolve(s.paths[0])).parent) for s in loaded.spec.sources}
    bad = [s.name for s in loaded.spec.sources if len(s.paths) != 1 or not s.paths[0].endswith("*.jsonl.gz")]
    if bad:
        raise SystemExit(f"sources {bad}: this harness needs one '<dir>/*.jsonl.gz' path per source")
    raw_files = sorted((f for d in raw_dirs.values() for f in glob.glob(os.path.join(d, "*.jsonl.gz"))),
                       key=os.path.getsize, reverse=True)
    rules = {s.name: resolve_rules(s.kind, s.filters.rules, s.filters.overrides) for s in loaded.spec.sources}
    quality = {}
    for s in names:
        quality[s], _, _ = build_config(rules[s], GOPHER_STOP_WORDS)
    dt_cfg = {"raw": raw_dirs, "workers": args.workers, "words": args.dt_words, "ngrams": near.shingle_words,
              "bands": bands, "rows": rows, "quality": quality, "tokenizer": str(loaded.resolve(loaded.spec.tokenizer.path)),
              "eos": loaded.spec.tokenizer.eos_token, "shard_tokens": loaded.spec.output.shard_tokens,
              "seed": loaded.spec.mixture.seed}

    cm_runs: list[dict] = []
    dt_runs: list[dict] = []
    limits: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("forkserver"))
    try:
        # warm-up, untimed: the limits pool's imports and the page cache; datatrove's imports
        list(pool.map(_read_unit, raw_files))
        probe = run_child(["--datatrove-probe", "--workers", str(args.workers)], tmp, "probe")
        for r in range(args.repeats):
            for tool in (("cm", "dt") if r % 2 == 0 else ("dt", "cm")):
                if tool == "dt":
                    dt_runs.append(run_datatrove(dt_cfg, tmp, r))
                    print(f"repeat {r + 1}/{args.repeats} datatrove {dt_runs[-1]['total_s']:7.1f} s", file=sys.stderr,
                          flush=True)
                    continue
                root = tmp / f"cm-{r}"
                spec = write_spec(base, root, "processes", args.workers, None)
                shutdown_pools()
                times = build(spec)
                shutdown_pools()
                built = load_spec(spec)
                cm_runs.append({"stage_s": times, "total_s": sum(times.values()), **corpusmix_counts(built)})
                print(f"repeat {r + 1}/{args.repeats} corpusmix {cm_runs[-1]['total_s']:7.1f} s", file=sys.stderr,
                      flush=True)
                limits.append(measure_limits(built, pool, args.workers, raw_files, tmp))
                cm_runs[-1]["cli_s"] = cli_build(base, tmp / f"cli-{r}", args.workers, built)
                print(f"repeat {r + 1}/{args.repeats} corpusmix build (CLI, Dagster) {cm_runs[-1]['cli_s']:7.1f} s",
                      file=sys.stderr, flush=True)
                shutil.rmtree(root, ignore_errors=True)
    finally:
        pool.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    report(args, probe, loaded, rules, quality, bands, rows, cm_runs, dt_runs, limits, GOPHER)


def report(args, probe, loaded, rules, quality, bands, rows, cm_runs, dt_runs, limits, gopher) -> None:
    med = statistics.median
    names = loaded.source_names
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True)
    n = args.repeats
    print(f"\nend to end on {os.path.relpath(args.spec, REPO)} ({', '.join(names)}): corpusmix "
          f"{git.stdout.strip() or '?'} vs datatrove {probe['version']}, {args.workers} workers, {os.cpu_count()} "
          f"CPUs, median of {n} alternating repeats (order flipped every repeat)")

    # ---- settings
    near = loaded.spec.dedup.near
    print(f"dedup, both per source: exact + MinHash {bands} bands x {rows} rows = {bands * rows} hashes, "
          f"{near.shingle_words}-word shingles; corpusmix: threshold {near.threshold}, candidates verified by true "
          f"Jaccard, longest kept, then cross-source exact dedup; datatrove: every band match is a duplicate, 64-bit "
          f"xxhash, word tokenizer {'spaCy blank en' if args.dt_words == 'spacy' else 'str.split'}")
    print(f"quality rules: corpusmix's defaults per source kind; datatrove runs the Gopher checks that map to "
          f"corpusmix's Gopher rules, same thresholds (quality_vs_datatrove.py's map). corpusmix's {len(gopher)} "
          f"Gopher rules: {', '.join(r.removeprefix('gopher_') for r in gopher)}")
    for s in names:
        g = [r.removeprefix("gopher_") for r in rules[s] if r in gopher]
        other = [r for r in rules[s] if r not in gopher]
        dt = quality[s]["checks"]
        over = loaded.source(s).filters.overrides
        print(f"  {s:9} {loaded.source(s).kind:8} corpusmix Gopher: "
              f"{f'all {len(g)}' if len(g) == len(gopher) else ', '.join(g) or 'none'}"
              f"{f' (overrides {over})' if over else ''}{'; also ' + ', '.join(other) if other else ''}; "
              f"datatrove: {' + '.join(sorted({f for f, _ in dt.values()})) or 'no filter (stage skipped)'} "
              f"({len(dt)} checks)")
    print(f"datatrove executor start-up (a no-op run): {probe['noop_1']:.2f} s with 1 worker, "
          f"{probe[f'noop_{args.workers}']:.2f} s with {args.workers}; {dt_runs[0]['executor_runs']} runs per build")

    # ---- what each kept
    c0, d0 = cm_runs[0], dt_runs[0]
    print(f"\n{'source':9} {'docs in':>8} {'text MB':>7} | {'cm exact':>8} {'near':>5} {'kept':>7} {'tokens':>11} | "
          f"{'dt exact':>8} {'near':>5} {'kept':>7} {'tokens':>11}")
    tot = dict.fromkeys(("in", "mb", "ce", "cn", "ck", "ct", "de", "dn", "dk", "dt"), 0)
    for s in names:
        c, d = c0["sources"][s], d0["counts"][s]
        row = (c["docs_in"], c["mb_in"], c["exact_removed"], c["near_removed"], c["docs_quality"], c["tokens"],
               d["exact_removed"], d["near_removed"], d["docs_quality"], d["token_bytes"] // 2)
        for k, v in zip(tot, row):
            tot[k] += v
        print(f"{s:9} {row[0]:>8} {row[1]:>7.2f} | {row[2]:>8} {row[3]:>5} {row[4]:>7} {row[5]:>11,} | "
              f"{row[6]:>8} {row[7]:>5} {row[8]:>7} {row[9]:>11,}")
    print(f"{'total':9} {tot['in']:>8} {tot['mb']:>7.2f} | {tot['ce']:>8} {tot['cn']:>5} {tot['ck']:>7} "
          f"{tot['ct']:>11,} | {tot['de']:>8} {tot['dn']:>5} {tot['dk']:>7} {tot['dt']:>11,}")
    print(f"corpusmix: {c0['cross_removed']} more removed across sources; kept = after quality; tokens = tokenize "
          f"stage (EOS included); mixed shards: {c0['mix_tokens']:,} tokens in {c0['shards']} shard(s) (the spec's "
          f"{loaded.spec.mixture.total_tokens:,}-token mixture, sources up- or down-sampled). datatrove merge: every "
          f"kept token once, {d0['merged_bytes'] // 2:,} tokens in {d0['merged_files']} file(s)")

    # ---- time per stage
    def cm_t(stages: list[str]) -> float:
        return med(sum(x["stage_s"][s] for s in stages) for x in cm_runs) if stages else float("nan")

    def dt_t(stages: list[str]) -> float:
        return med(sum(sum(x["stage_s"][s].values()) for s in stages) for x in dt_runs) if stages else float("nan")

    def f(x: float, w: int = 9) -> str:
        return f"{'-':>{w}}" if x != x else f"{x:>{w}.2f}"

    print(f"\n{'stage (median s)':38} {'corpusmix':>9} {'datatrove':>9} {'dt/cm':>6}")
    for label, cs, ds in ROWS:
        a, b = cm_t(cs), dt_t(ds)
        print(f"{label:38} {f(a)} {f(b)} {f(b / a if cs and ds else float('nan'), 6)}")
    cm_total, dt_total = med(x["total_s"] for x in cm_runs), med(x["total_s"] for x in dt_runs)
    print(f"{'total':38} {f(cm_total)} {f(dt_total)} {f(dt_total / cm_total, 6)}")
    cli = med(x["cli_s"] for x in cm_runs)
    print(f"{'corpusmix build (CLI: Dagster, SQLite)':38} {f(cli)} {f(dt_total)} {f(dt_total / cli, 6)}")
    print(f"{'  (datatrove child wall, with imports)':38} {'':>9} {f(med(x['wall_s'] for x in dt_runs))}")
    print("datatrove stages, median s summed over sources: " + ", ".join(
        f"{s} {dt_t([s]):.2f}" for s in DT_STAGES))
    from corpusmix.pipeline import STAGES as ENGINE_STAGES  # the engine stages, in build order

    CM_STAGES = [s.name for s in ENGINE_STAGES]

    print("corpusmix stages, median s: " + ", ".join(f"{s} {cm_t([s]):.2f}" for s in CM_STAGES))
    shares = sorted(CM_STAGES, key=lambda s: -cm_t([s]))
    print("corpusmix's largest stages: " + ", ".join(f"{s} {100 * cm_t([s]) / cm_total:.0f} %" for s in shares[:3]))

    # ---- against the machine's limits
    lim = {k: (med(x[k]["mb"] / x[k]["s"] for x in limits), med(x[k]["s"] for x in limits),
               limits[0][k]["mb"]) for k in limits[0]}
    print("\nthroughput against this machine's limits (MB/s, median; limits measured in each repeat):")
    print(f"{'stage':26} {'MB':>7} {'corpusmix':>9} {'datatrove':>9} {'limit':>8}  {'cm/limit':>8} {'dt/limit':>8}  limit")
    mb_raw = lim["read"][2]
    mb_dedup_in = sum(c0["sources"][s]["mb_in"] for s in names)
    mb_deduped = sum(c0["sources"][s]["mb_dedup"] for s in names)
    mb_kept = sum(c0["sources"][s]["mb_quality"] for s in names)
    mb_dt_q = sum(d0["counts"][s]["mb_dedup"] for s in names if quality[s]["checks"])  # sources it filtered
    mb_dt_kept = sum(d0["counts"][s]["mb_quality"] for s in names)
    shard_mb = c0["token_bytes"]["mixed_shards"] / 1e6
    lines = [
        ("ingest (raw text)", mb_raw, mb_raw / cm_t(["ingest"]), float("nan"), "read", "read + gunzip + parse"),
        ("dedup (text read)", mb_dedup_in, mb_dedup_in / cm_t(["dedup"]), mb_raw / dt_t(list(DT_DEDUP)), "minhash",
         "numpy MinHash"),
        ("quality (text read)", mb_deduped, mb_deduped / cm_t(["quality"]), mb_dt_q / dt_t(["quality"]), None,
         ""),
        ("tokenize (kept text)", mb_kept, mb_kept / cm_t(["tokenize"]), mb_dt_kept / dt_t(["tokenize"]), "encode",
         "encode_batch_fast"),
        ("  against tiktoken", mb_kept, mb_kept / cm_t(["tokenize"]), mb_dt_kept / dt_t(["tokenize"]), "encode_fast",
         "fast_bpe.encode (tiktoken)"),
        ("mixed shards (token MB)", shard_mb, shard_mb / cm_t(["mixture_plan", "mixed_shards"]),
         d0["merged_bytes"] / 1e6 / dt_t(["merge"]), "write", "tofile + fsync"),
        ("whole build (raw text)", mb_raw, mb_raw / cm_total, mb_raw / dt_total, None, ""),
    ]
    for label, mb, a, b, k, what in lines:
        lv = lim[k][0] if k else float("nan")
        print(f"{label:26} {mb:>7.2f} {f(a)} {f(b)} {f(lv, 8)}  {f(a / lv, 8)} {f(b / lv, 8)}  {what}"
              + (f" ({lim[k][2]:.1f} MB in {lim[k][1]:.2f} s)" if k else ""))
    tok_only = lim["encode"][1]
    print(f"\ncorpusmix whole build / tokenization-only: {cm_total:.2f} s / {tok_only:.2f} s = "
          f"{cm_total / tok_only:.2f} (tokenization-only = one encode_batch_fast over the {mb_kept:.1f} MB kept)")
    fast_only = lim["encode_fast"][1]
    print(f"corpusmix whole build / tokenization-only with the encoder it uses: {cm_total:.2f} s / {fast_only:.2f} s"
          f" = {cm_total / fast_only:.2f} (one fast_bpe.encode, tiktoken, over the same text)")
    print(f"datatrove whole build / tokenization-only: {dt_total / tok_only:.2f}; datatrove / corpusmix: "
          f"{dt_total / cm_total:.2f}")


if __name__ == "__main__":
    main()
