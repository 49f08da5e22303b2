"""`corpusmix build` of the dev corpus by two checkouts of the code, interleaved: the runs as
`execute_in_process` made them (before) against first-class runs of the code location (after).

Usage:  python benchmarks/cli_build_time.py --before /tmp/before [--after .] [--repeats 3]
                                            [--spec specs/shared-corpus.yaml] [--lean]

Make the "before" checkout with ``git worktree add /tmp/before <commit>`` (a commit without the
change). Per repeat, each checkout builds the spec into fresh storage, manifests and Dagster
instance (`python -m workflows.cli build` run in the checkout, so its own code is imported), timed
as a whole command, interpreter start included; the order alternates between repeats. Prints each
time, the medians and the ratio after / before (the issue's target: <= 1, not slower), and how many
runs each build left in its instance and how many of them carry a code-location origin.

``--spec`` is read in each checkout (its own version of the dev spec, which its code accepts).
``--lean`` builds only the work both checkouts do: no eval sets, held-out splits and MDS shards off
(where the checkout's code has them), to compare a change to the common stages apart from the stages added
since the "before" commit.
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
COUNT_RUNS = ("from dagster import DagsterInstance\n"
              "runs = DagsterInstance.get().get_runs()\n"
              "print(len(runs), sum(r.remote_job_origin is not None for r in runs), "
              "len({r.tags['corpusmix/build'] for r in runs if 'corpusmix/build' in r.tags}))")


def fresh_spec(spec_path: Path, tmp: Path, lean: bool = False) -> Path:
    """The spec with storage and manifests under ``tmp`` and its input paths absolute (``lean``:
    without eval sets and held-out splits, where the checkout's code knows them)."""
    spec = yaml.safe_load(spec_path.read_text())
    if lean:
        spec.pop("eval_sets", None)
        if "heldout" in (spec_path.parents[1] / "corpusmix" / "core" / "spec.py").read_text():
            for src in spec["sources"]:
                src["heldout"] = False
        if spec.get("handoff", {}).get("mds"):
            spec["handoff"]["mds"]["enabled"] = False  # MosaicML's shards: a second copy of the mix, off by default
    base = spec_path.resolve().parent
    spec["storage"] = {"root": str(tmp / "data"), "manifests": str(tmp / "manifests")}
    for src in spec["sources"]:
        src["paths"] = [str((base / p).resolve()) for p in src["paths"]]
    if spec.get("tokenizer", {}).get("path"):
        spec["tokenizer"]["path"] = str((base / spec["tokenizer"]["path"]).resolve())
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def build(checkout: Path, spec_path: Path, lean: bool) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = fresh_spec(checkout / spec_path, Path(tmp), lean)
        env = os.environ | {"DAGSTER_HOME": str(Path(tmp) / "dagster"), "PYTHONPATH": str(checkout)}
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec)], cwd=checkout, env=env, check=False,
                           capture_output=True, text=True)
        took = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"build in {checkout} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        runs, with_origin, build_ids = subprocess.run([sys.executable, "-c", COUNT_RUNS], env=env, cwd=checkout,
                                                      capture_output=True, text=True, check=True).stdout.split()
        return took, f"{runs} runs, {with_origin} with a code-location origin, {build_ids} corpusmix/build value(s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="checkout of the code before the change")
    ap.add_argument("--after", default=str(REPO), help="checkout of the code after it (default: this one)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spec", default="specs/shared-corpus.yaml", help="relative to each checkout")
    ap.add_argument("--lean", action="store_true", help="no eval sets, held-out splits and MDS shards off")
    args = ap.parse_args()
    checkouts = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(args.repeats):
        for name in (("before", "after") if i % 2 == 0 else ("after", "before")):
            took, runs = build(checkouts[name], Path(args.spec), args.lean)
            times[name].append(took)
            print(f"repeat {i + 1} {name:6s} {took:7.2f} s  ({runs})", flush=True)
    b, a = statistics.median(times["before"]), statistics.median(times["after"])
    print(f"median of {args.repeats}: before {b:.2f} s, after {a:.2f} s, after/before {a / b:.3f} "
          f"(spec {args.spec}{' lean' if args.lean else ''}; before {checkouts['before']}, after {checkouts['after']})")


if __name__ == "__main__":
    main()
