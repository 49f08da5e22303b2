"""The same engine build on the three executors: in-process, a local process pool, and Ray.

Usage:  python benchmarks/executors.py [--repeats 3] [--workers 2] [--spec specs/shared-corpus.yaml]
                                      [--part-mib N]

Every repeat builds the spec's corpus from raw files to mixed shards once per backend,
alternating (inline, processes, ray, inline, ...), each into fresh storage, timing each
stage. Ray runs on a local Ray instance of ``--workers`` CPUs started once at the
beginning (its start-up time is printed on its own: on a cluster it is paid once, not per
build). Printed:

* per stage, the median wall time on each backend, the speedup over in-process, and
  Ray's overhead over the process pool;
* the per-task round trip of each backend (a task that does nothing), which is the
  overhead a stage pays per unit of work;
* what is parallel and what is global in each stage, with the sizes that bound memory
  (measured on this corpus: documents, units, signature and shuffle bytes);
* that every backend wrote byte-identical outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

BACKENDS = ("inline", "processes", "ray")


def _noop(x: int) -> int:
    return x


def _stage_names() -> list[str]:
    from corpusmix.pipeline import STAGES as ENGINE_STAGES

    return [s.name for s in ENGINE_STAGES]


def build(spec_path: Path) -> dict[str, float]:
    """One engine build, stage by stage; seconds per stage."""
    from corpusmix.core.spec import load_spec
    from corpusmix.pipeline import build as build_stages

    loaded = load_spec(spec_path)
    times: dict[str, float] = {}
    t = time.perf_counter()
    for stage, _, _ in build_stages(loaded, progress=lambda m: None):  # per stage: every source, then the next
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - t
        t = time.perf_counter()
    return times


def write_spec(base: dict, root: Path, backend: str, workers: int, part_mib: int | None) -> Path:
    spec = dict(base)
    spec["storage"] = {"root": str(root / "data"), "manifests": str(root / "manifests")}
    spec["execution"] = {"backend": backend, "workers": workers}
    if part_mib:  # smaller parts: more, smaller units (parts roll over after a parsed block, so both shrink)
        spec["ingest"] = {**spec.get("ingest", {}), "part_bytes": part_mib << 20, "block_bytes": part_mib << 20}
    root.mkdir(parents=True)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "spec.yaml"


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def task_round_trip(workers: int, n: int = 400) -> dict[str, float]:
    """Microseconds per no-op unit on each backend (median of 3 batches of ``n``)."""
    from corpusmix.core.executor import open_executor
    from corpusmix.core.spec import Execution

    out = {}
    for backend in BACKENDS:
        runs = []
        with open_executor(Execution(backend=backend, workers=workers)) as ex:
            list(ex.map(_noop, range(n)))  # warm the workers
            for _ in range(3):
                t = time.perf_counter()
                list(ex.map(_noop, range(n)))
                runs.append((time.perf_counter() - t) / n * 1e6)
        out[backend] = statistics.median(runs)
    return out


def sizes(loaded) -> list[str]:
    """What bounds memory where, measured on the corpus just built."""
    import orjson

    from corpusmix.stages.minhash import lsh_params

    cfg = loaded.spec.dedup
    bands, rows = lsh_params(cfg)
    docs = parts = 0
    for s in loaded.source_names:
        m = orjson.loads((loaded.manifest_root / "ingest" / f"{s}.json").read_bytes())
        docs += m["counts"]["documents_out"]
        parts += sum(o["kind"] == "documents" for o in m["outputs"])
    sig = docs * cfg.near.num_perm * 4
    shuffle = docs * bands * ((rows + 1) * 4 + 8)
    return [f"documents after ingest: {docs:,} in {parts} part(s) (= units of the per-part stages)",
            f"signatures (dedup pass 1, on disk, {cfg.near.num_perm} x 4 B/doc): {sig / 1e6:.1f} MB",
            f"LSH shuffle payload ({bands} bands x ({rows}+1) x 4 B + 8 B/doc): {shuffle / 1e6:.1f} MB, "
            "split over the reduce buckets",
            f"dedup driver index (16 B key + 8 B size + id per doc): ~{docs * 40 / 1e6:.1f} MB"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--spec", default=str(REPO / "specs" / "shared-corpus.yaml"))
    ap.add_argument("--part-mib", type=int, default=None,
                    help="ingest part size in MiB (default: the spec's, 256 MiB: one part per input file here)")
    args = ap.parse_args()
    import ray
    from common import resolved_spec

    from corpusmix.core.spec import load_spec

    base = resolved_spec(args.spec)

    t = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    ray_start = time.perf_counter() - t
    rtt = task_round_trip(args.workers)

    times: dict[str, list[dict[str, float]]] = {b: [] for b in BACKENDS}
    digests: dict[str, set[str]] = {b: set() for b in BACKENDS}
    last = None
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as tmp:
        for r in range(args.repeats):
            for backend in BACKENDS:
                root = Path(tmp) / f"{backend}-{r}"
                spec = write_spec(base, root, backend, args.workers, args.part_mib)
                times[backend].append(build(spec))
                digests[backend].add(digest(root / "data"))
                print(f"repeat {r + 1}/{args.repeats} {backend:9s} {sum(times[backend][-1].values()):6.1f} s",
                      flush=True)
                if last is not None:
                    shutil.rmtree(last, ignore_errors=True)
                last = root
        facts = sizes(load_spec(last / "spec.yaml"))

    med = {b: {s: statistics.median(t[s] for t in times[b]) for s in _stage_names()} for b in BACKENDS}
    print(f"\nexecutors on {args.spec}, {args.workers} worker(s), parts of "
          f"{f'{args.part_mib} MiB' if args.part_mib else 'the spec size'}, median of {args.repeats}")
    print(f"{'stage':20s} {'inline s':>9s} {'processes s':>12s} {'ray s':>8s} {'proc x':>7s} {'ray x':>7s} "
          f"{'ray - proc s':>13s}")
    for s in (*_stage_names(), "total"):
        v = {b: (sum(med[b].values()) if s == "total" else med[b][s]) for b in BACKENDS}
        print(f"{s:20s} {v['inline']:9.2f} {v['processes']:12.2f} {v['ray']:8.2f} "
              f"{v['inline'] / v['processes']:7.2f} {v['inline'] / v['ray']:7.2f} {v['ray'] - v['processes']:13.2f}")
    print(f"\nRay start (local instance, once per process): {ray_start:.2f} s")
    print("per-unit round trip of a no-op task: " + ", ".join(f"{b} {us:.0f} us" for b, us in rtt.items()))
    print("\n" + "\n".join(facts))
    same = all(len(d) == 1 for d in digests.values()) and len(set.union(*digests.values())) == 1
    print(f"\noutputs byte-identical across backends and repeats: {'yes' if same else 'NO'} "
          f"({next(iter(digests['inline']))[:16]})")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
