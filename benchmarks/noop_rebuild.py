"""A rebuild with nothing changed against a full build, both through `corpusmix build` (Dagster).

Usage:  python benchmarks/noop_rebuild.py [--repeats 3] [--spec specs/shared-corpus.yaml]

Per repeat: a full build into fresh storage, manifests and Dagster instance, then the
same command again with nothing changed (every stage's content key matches, so no run
starts), each timed as a whole command, interpreter start included. Prints medians and
the ratio no-op / full (target <= 0.05).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spec", default=str(REPO / "specs" / "shared-corpus.yaml"))
    args = ap.parse_args()
    full, noop = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            spec = yaml.safe_load(Path(args.spec).read_text())
            spec["storage"] = {"root": str(Path(tmp) / "data"), "manifests": str(Path(tmp) / "manifests")}
            base = Path(args.spec).resolve().parent
            for src in spec["sources"]:
                src["paths"] = [str((base / p).resolve()) for p in src["paths"]]
            if spec["tokenizer"].get("path"):
                spec["tokenizer"]["path"] = str((base / spec["tokenizer"]["path"]).resolve())
            path = Path(tmp) / "spec.yaml"
            path.write_text(yaml.safe_dump(spec))
            env = os.environ | {"DAGSTER_HOME": str(Path(tmp) / "dagster")}
            cmd = [sys.executable, "-m", "workflows.cli", "build", str(path)]
            full.append(timed(cmd, env))
            noop.append(timed(cmd, env))
            print(f"full {full[-1]:.2f} s, no-op {noop[-1]:.2f} s", flush=True)
    f, n = statistics.median(full), statistics.median(noop)
    print(f"median of {args.repeats}: full build {f:.2f} s, no-op rebuild {n:.2f} s, ratio {n / f:.3f} (target <= 0.05)")


if __name__ == "__main__":
    main()
