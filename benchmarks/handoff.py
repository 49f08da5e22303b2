"""Hand-off to other trainers on the dev corpus (issue 20): emission time and size of the Megatron
blends and the MDS shards against the mixed-shards stage, and the plan as megatron-core and
mosaicml-streaming realise it, phase by phase, on ``specs/shared-corpus.yaml``.

Criteria decided before the run (issue 20): per phase, per source with a plan share >= 5 %, the
token share megatron-core's BlendedMegatronDatasetBuilder draws over the emitted blends, and the
share one StreamingDataset epoch per phase yields, within 1 % (relative) of the plan's.

    python benchmarks/handoff.py [--repeats 3] [--keep DIR]

Builds the spec into a fresh storage (or DIR, reused when current), then times each stage
``--repeats`` times from scratch (its output and manifest removed between runs; the median is
printed with every run), and reads the outputs back with both libraries.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cli_build_time import fresh_spec  # noqa: E402

from corpusmix.core.manifest import manifest_path, read_manifest  # noqa: E402
from corpusmix.core.spec import load_spec  # noqa: E402
from corpusmix.mixture.plan import load_plan  # noqa: E402
from corpusmix.pipeline import build_all, run_stage  # noqa: E402

STAGES = ("mixed_shards", "megatron_blends", "mds_shards")


def timed(loaded, name: str, repeats: int) -> tuple[list[float], int]:
    """Seconds of each from-scratch run of ``name``, and the bytes of its outputs."""
    times = []
    for _ in range(repeats):
        m = read_manifest(manifest_path(loaded.manifest_root, name, None))
        shutil.rmtree(loaded.storage_root / name / m["version"], ignore_errors=True)
        manifest_path(loaded.manifest_root, name, None).unlink()
        t = time.perf_counter()
        m = run_stage(name, loaded, progress=lambda s: None)[0]
        times.append(time.perf_counter() - t)
    return times, sum(o["bytes"] for o in m["outputs"])


def megatron_shares(loaded, cache: Path) -> dict[str, dict[str, float]]:
    from tests.test_handoff import _megatron  # the same reading as the test: megatron-core's own builder

    m = read_manifest(manifest_path(loaded.manifest_root, "megatron_blends", None))
    folder = loaded.storage_root / m["outputs"][0]["path"].rsplit("/", 1)[0]
    table = json.loads((folder / "blends.json").read_bytes())
    drawn: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    cwd = os.getcwd()
    os.chdir(loaded.storage_root)
    try:
        for name, row in zip(table["slice_files"], table["slices"]):
            args, train, _ = _megatron(folder / f"{name}.json", table, row, cache)
            counts = np.bincount(train.dataset_index[: row["samples"]], minlength=len(args["train"]) // 2)
            for prefix, c in zip(args["train"][1::2], counts):
                drawn[row["name"]][prefix.split("/")[1]] += int(c)
    finally:
        os.chdir(cwd)
    return {ph: {s: c / sum(cnt.values()) for s, c in cnt.items()} for ph, cnt in drawn.items()}


def streaming_shares(loaded) -> dict[str, dict[str, float]]:
    from tests.test_handoff import _phase_dataset

    m = read_manifest(manifest_path(loaded.manifest_root, "mds_shards", None))
    folder = loaded.storage_root / m["outputs"][0]["path"].split("/phase-")[0]
    out = {}
    for p, ph in enumerate(load_plan(loaded)[0]["phases"]):
        _, ds = _phase_dataset(folder, f"phase-{p:02d}-{ph['name']}")
        seen = collections.Counter(sample["source"] for sample in ds)
        out[ph["name"]] = {s: n / sum(seen.values()) for s, n in seen.items()}
        del ds
        gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", help="storage folder to build into (and reuse)")
    args = ap.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp())
    tmp.mkdir(parents=True, exist_ok=True)
    spec_path = fresh_spec(REPO / "specs" / "shared-corpus.yaml", tmp)
    spec = yaml.safe_load(spec_path.read_text())
    spec["execution"] = {"workers": 2}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    loaded = load_spec(spec_path)
    t = time.perf_counter()
    build_all(loaded, progress=lambda s: None)
    print(f"build of {spec_path} (storage {tmp}): {time.perf_counter() - t:.1f} s", flush=True)
    base = None
    for name in STAGES:
        times, size = timed(loaded, name, args.repeats)
        base = base or statistics.median(times)
        print(f"{name:16s} median {statistics.median(times):6.2f} s  ({', '.join(f'{x:.2f}' for x in times)})  "
              f"{size / 1e6:8.1f} MB  time / mixed_shards {statistics.median(times) / base:.2f}", flush=True)
    plan = load_plan(loaded)[0]
    worst = {}
    for reader, shares in (("megatron-core", megatron_shares(loaded, tmp / "megatron-cache")),
                           ("mosaicml-streaming", streaming_shares(loaded))):
        for ph in plan["phases"]:
            q = ph["quotas"]
            planned = {s: v / sum(q.values()) for s, v in q.items()}
            errors = {s: (shares[ph["name"]].get(s, 0.0) - p) / p for s, p in planned.items() if p >= 0.05}
            w = max(errors, key=lambda s: abs(errors[s]))
            worst[(reader, ph["name"])] = abs(errors[w])
            print(f"{reader:19s} {ph['name']:15s} " + "  ".join(
                f"{s} {shares[ph['name']].get(s, 0.0):.4f}/{planned[s]:.4f}" for s in planned)
                  + f"   worst {w} {errors[w]:+.3%}")
    ok = all(v <= 0.01 for v in worst.values())
    print(f"criterion (every phase, every source with share >= 5 %, within 1 %): {'MET' if ok else 'NOT MET'}; "
          f"worst {max(worst.values()):.3%}")


if __name__ == "__main__":
    main()
