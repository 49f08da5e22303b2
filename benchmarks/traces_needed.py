"""The planner's "traces needed" figure for the dev spec's math source pushed over its epoch cap.

Usage:  python benchmarks/traces_needed.py [--math-weight 6] [--keep DIR]

The dev spec (specs/shared-corpus.yaml, unchanged otherwise) with two changes:

* math's weight in every phase multiplied by ``--math-weight`` (default 6), which puts it over
  ``max_epochs`` 4 (at the spec's weights it is at 2.41 epochs);
* a ``math_traces`` source (kind reasoning_traces, ``augments: math``). There is no teacher model
  here, so its traces are derived from real GSM8K *train* solutions of math-0000 (the test split is
  left out: it is an eval set): per solution, the eight variants of benchmarks/trace_judging.py
  (the original; a wrong final answer; no answer line; a broken calculator step; ``The answer is
  N.0``; ``#### $N``; ``The answer is N dollars.``; ``\\boxed{N}``), all with the solution's id as
  problem id, its final answer as reference and the variant as strategy. Three of eight are wrong
  or unjudgeable, and the five right ones differ only in their last line, so they are mostly
  near-copies (one kept per problem; in a short solution the last line can weigh enough to keep
  two, and dedup then sees them again): a pass rate near 1/8 by construction, which is the point
  (the plan's figure must follow the measured yield, not assume one).

The build runs through tokenize (every source), then the plan. Expected, decided before the run:
the plan refuses the spec (math over the cap) and its message and table give, for math,
problems x traces = shortfall / (pass rate x mean trained trace tokens) with the pass rate and
mean measured on math_traces; the script recomputes that figure from the manifests
independently (trace_validation's counts, tokenize's stored tokens) and checks they agree.
Prints the build time, the plan table and the check.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS, REPO  # noqa: E402
from trace_judging import variants  # noqa: E402

from corpusmix.core.manifest import manifest_path, read_manifest  # noqa: E402
from corpusmix.core.spec import load_spec  # noqa: E402
from corpusmix.mixture.plan import PlanError, availability, make_plan, render_plan  # noqa: E402
from corpusmix.pipeline import build_all  # noqa: E402

DEV_SPEC = REPO / "specs" / "shared-corpus.yaml"


def write_traces(path: Path, seed: int = 24) -> int:
    """The derived trace source (see the docstring); returns the number of traces."""
    rng, n = random.Random(seed), 0
    with gzip.open(CORPUS / "math" / "math-0000-of-0002.jsonl.gz", "rt") as f, path.open("w") as out:
        for line in f:
            r = json.loads(line)
            if r.get("split") != "train" or "final_answer" not in r:
                continue
            for name, text, _, _ in variants(r, rng):
                out.write(json.dumps({"id": f"{r['id']}/{name}", "text": text, "problem_id": r["id"],
                                      "strategy": name, "reference_answer": r["final_answer"]}) + "\n")
                n += 1
    return n


def dev_spec(root: Path, traces: Path, math_weight: float) -> Path:
    spec = yaml.safe_load(DEV_SPEC.read_text())
    base = DEV_SPEC.parent
    spec["storage"] = {"root": str(root / "data"), "manifests": str(root / "manifests")}
    for s in spec["sources"]:
        s["paths"] = [str((base / p).resolve()) for p in s["paths"]]
    spec["sources"].append({"name": "math_traces", "kind": "reasoning_traces", "paths": [str(traces)],
                            "traces": {"augments": "math"}})
    spec["tokenizer"]["path"] = str((base / spec["tokenizer"]["path"]).resolve())
    for phase in spec["mixture"]["schedule"]["phases"]:
        if "math" in phase["weights"]:
            phase["weights"]["math"] *= math_weight
        phase["weights"]["math_traces"] = 0.1
    spec.pop("handoff", None)  # the hand-off outputs come after the plan: not needed here
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--math-weight", type=float, default=6.0)
    parser.add_argument("--keep", type=Path, default=None, help="build here and keep it (default: a temp dir)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="traces-needed-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        n = write_traces(root / "math_traces.jsonl")
        print(f"math_traces: {n:,} derived traces from GSM8K train solutions (8 per solution)")
        loaded = load_spec(dev_spec(root, root / "math_traces.jsonl", args.math_weight))
        t = time.perf_counter()
        build_all(loaded, until="tokenize")
        print(f"build through tokenize: {time.perf_counter() - t:.0f} s\n")
        avail = availability(loaded, exact_only=True)
        try:
            plan = make_plan(loaded, avail)
            print("the plan was accepted (math is not over the cap at this weight)")
        except PlanError as e:
            plan = e.plan
            print("plan refused, as expected:\n" + str(e) + "\n")
        print(render_plan(plan))
        r = plan["per_source"]["math"]
        tv = read_manifest(manifest_path(loaded.manifest_root, "trace_validation", "math_traces"))["counts"]
        tok = read_manifest(manifest_path(loaded.manifest_root, "tokenize", "math_traces"))["counts"]
        per_trace = tok["tokens_stored"] / tv["documents_in"]  # tokens trained per generated trace
        traces = math.ceil(r["synthetic_tokens_needed"] / per_trace)
        problems = math.ceil(traces / (tv["documents_in"] / tv["problems"]))
        got = r.get("synthetic_traces", [{}])[0]
        print(f"\ncheck from the manifests: shortfall {r['synthetic_tokens_needed']:,.0f} tokens / "
              f"{per_trace:.3f} trained tokens per generated trace = {traces:,} traces = {problems:,} problems "
              f"x {tv['documents_in'] / tv['problems']:.2f}; plan says {got.get('traces')} traces, "
              f"{got.get('problems')} problems: {'AGREE' if (got.get('traces'), got.get('problems')) == (traces, problems) else 'DISAGREE'}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
