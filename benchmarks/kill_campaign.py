"""Kill `corpusmix build` (the command, through Dagster) at random points, rerun, and check.

    python benchmarks/kill_campaign.py [--kills 20] [--interrupts 5] [--seed 1]

One small spec (two real sources, a file each). A clean build first gives the reference:
every output file's sha256 (benchmarks/output_digests.py, version directories normalised).
Then, into one storage root and Dagster home, repeatedly: start `corpusmix build`, wait a
random time inside the length of a clean build, send SIGKILL to the whole process group
(--kills times) or SIGINT to the command (--interrupts times), then rerun to completion.
Criteria, decided before the run, checked after every rerun:
  - the rerun exits 0 and `corpusmix verify` passes;
  - every output is byte-identical to the clean build's;
  - no process of the killed command is left (its process group is empty within 5 s);
  - no .staging-* or .replaced-* directory is left;
  - after SIGINT the command exited 130 and said it was interrupted (a SIGINT that lands while
    Python is still importing, before the build has begun, ends it the default way: Python's
    traceback and death by the signal, which a shell also reports as 130; counted apart).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import CORPUS, GPT2  # noqa: E402
from output_digests import digests  # noqa: E402


def write_spec(root: Path) -> Path:
    sources = [("math", "math-0000-of-0002"), ("web", "web-0000-of-0003")]
    spec = {"name": "kills", "storage": {"root": str(root / "data"), "manifests": str(root / "manifests")},
            "execution": {"workers": 2},
            "sources": [{"name": n, "kind": n, "paths": [str(CORPUS / n / f"{f}.jsonl.gz")]} for n, f in sources],
            "tokenizer": {"path": str(GPT2)},
            "mixture": {"total_tokens": 1_000_000, "seq_len": 512,
                        "schedule": {"type": "static", "weights": {n: 1 for n, _ in sources}}},
            "output": {"shard_tokens": 300_000}}
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def build(spec: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "workflows.cli", "build", str(spec)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def group_alive(pgid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--interrupts", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="kills-"))
    failures = []
    try:
        clean_root, root = tmp / "clean", tmp / "killed"
        clean_root.mkdir()
        root.mkdir()
        env = os.environ | {"DAGSTER_HOME": str(clean_root / "home")}
        t0 = time.perf_counter()
        p = build(write_spec(clean_root), env)
        assert p.wait() == 0, p.stdout.read()
        full = time.perf_counter() - t0
        reference = digests(clean_root / "data")
        print(f"clean build: {full:.1f} s, {len(reference)} output files")
        spec, env = write_spec(root), os.environ | {"DAGSTER_HOME": str(root / "home")}
        plan = ["kill"] * args.kills + ["interrupt"] * args.interrupts
        rng.shuffle(plan)
        for i, what in enumerate(plan, 1):
            delay = rng.uniform(0.5, full)
            p = build(spec, env)
            time.sleep(delay)
            finished = p.poll() is not None
            if not finished:
                if what == "kill":
                    os.killpg(p.pid, signal.SIGKILL)
                else:
                    os.kill(p.pid, signal.SIGINT)
            code = p.wait(timeout=300)
            said = p.stdout.read()
            problems = []
            deadline = time.monotonic() + 5  # the resource tracker exits a moment after its parent
            while (left := group_alive(p.pid)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if left:
                problems.append(f"processes left: {left}")
                for pid in left:
                    os.kill(pid, signal.SIGKILL)
            early = code == -signal.SIGINT and "KeyboardInterrupt" in said and "Dagster instance" not in said
            if what == "interrupt" and not finished and not early and (
                    code != 130 or "interrupted by SIGINT" not in said):
                problems.append(f"SIGINT: exit {code}, said {said[-300:]!r}")
            r = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec)], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                problems.append(f"rerun failed: {(r.stdout + r.stderr)[-500:]}")
            v = subprocess.run([sys.executable, "-m", "corpusmix.cli", "verify", str(spec)], capture_output=True,
                               text=True)
            if v.returncode != 0:
                problems.append(f"verify: {v.stderr[-300:]}")
            got = digests(root / "data")
            if got != reference:
                differ = sorted(k for k in got.keys() | reference.keys() if got.get(k) != reference.get(k))
                problems.append(f"outputs differ: {differ[:5]}")
            left_dirs = [d for d in (root / "data").rglob(".*") if d.is_dir() and d.name.startswith((".staging-",
                                                                                                     ".replaced-"))]
            if left_dirs:
                problems.append(f"staging left after the rerun: {left_dirs[:3]}")
            status = ("finished before the signal" if finished else
                      "interrupted while Python started (its own SIGINT exit, 130 in a shell)" if early and
                      what == "interrupt" else f"exit {code}")
            print(f"{i:2}/{len(plan)} {what:9} at {delay:5.1f} s: {status}; "
                  f"{'OK' if not problems else 'FAILED: ' + '; '.join(problems)}")
            failures += problems
            # every attempt is a whole build (the Dagster home, with its runs, stays), so the
            # random delay lands at a random point of one
            shutil.rmtree(root / "data", ignore_errors=True)
            shutil.rmtree(root / "manifests", ignore_errors=True)
        print(f"{len(plan)} interrupted builds, {len(failures)} problem(s)")
        return 1 if failures else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
