"""Trace judging (corpusmix.stages.answers) on a labelled set built from real GSM8K solutions.

Usage:  python benchmarks/trace_judging.py [--records N] [--seed 24]

The set: the solutions of ../shared/corpus/math/math-0000-of-0002.jsonl.gz (all, or the first N),
each judged against its record's ``final_answer`` in eight forms (seeded RNG, deterministic):

  original            the solution as written                                 keep
  wrong_answer        the ``#### N`` number changed by a nonzero -10..10      reject (wrong_answer)
  no_answer           the ``#### N`` line dropped                             reject (no_answer_found)
  bad_step            one calculator annotation's claimed result changed,     reject (bad_step)
                      the final answer kept (solutions without a plain-number
                      annotation give no such variant)
  answer_is_decimal   ``#### N`` -> ``The answer is N.0``                     keep
  dollar              ``#### N`` -> ``#### $N``                               keep
  answer_is_dollars   ``#### N`` -> ``The answer is N dollars.``              keep
  boxed               ``#### N`` -> ``\\boxed{N}``                            keep

Criteria, written before the first run: precision and recall of the keep decision >= 0.99 each.
Per-variant accuracy is reported (the decision, and for the rejected variants the reason too);
it has no threshold of its own, but every misjudged trace is listed (up to 10) to be explained.

Prints: counts per variant, the confusion matrix of keep, precision, recall, per-variant
accuracy, the misjudged examples, and throughput (traces/s, median of 3 timed runs over the
whole set, one process).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPUS  # noqa: E402

from corpusmix.stages.answers import judge_trace  # noqa: E402

GSM8K = CORPUS / "math" / "math-0000-of-0002.jsonl.gz"
FINAL_LINE = re.compile(r"^####.*$", re.M)
PLAIN_CLAIM = re.compile(r"<<([^<>=]*)=(-?\d+(?:\.\d+)?)>>")
KEEP_FORMS = {
    "answer_is_decimal": "The answer is {n}.0",
    "dollar": "#### ${raw}",
    "answer_is_dollars": "The answer is {n} dollars.",
    "boxed": "\\boxed{{{n}}}",
}


def load(records: int | None) -> list[dict]:
    with gzip.open(GSM8K, "rt") as f:
        return [json.loads(line) for line in itertools.islice(f, records)]


def nonzero(rng: random.Random) -> int:
    return rng.choice([d for d in range(-10, 11) if d])


def broken_step(solution: str, rng: random.Random) -> str | None:
    """The solution with one plain-number claim moved by a nonzero amount, at its own precision."""
    claims = list(PLAIN_CLAIM.finditer(solution))
    if not claims:
        return None
    m = rng.choice(claims)
    claim = m.group(2)
    decimals = len(claim.split(".")[1]) if "." in claim else 0
    wrong = f"{float(claim) + nonzero(rng):.{decimals}f}"
    return f"{solution[:m.start()]}<<{m.group(1)}={wrong}>>{solution[m.end():]}"


def variants(record: dict, rng: random.Random) -> list[tuple[str, str, bool, str | None]]:
    """(variant, trace, keep?, expected reason) for one solution."""
    solution, n = record["answer"], record["final_answer"]
    raw = FINAL_LINE.search(solution).group(0)[4:].strip()

    def final(line: str) -> str:
        return FINAL_LINE.sub(lambda _: line, solution)

    out = [("original", solution, True, None),
           ("wrong_answer", final(f"#### {int(n) + nonzero(rng)}"), False, "wrong_answer"),
           ("no_answer", FINAL_LINE.sub("", solution).rstrip(), False, "no_answer_found")]
    step = broken_step(solution, rng)
    if step is not None:
        out.append(("bad_step", step, False, "bad_step"))
    out += [(name, final(form.format(n=n, raw=raw)), True, None) for name, form in KEEP_FORMS.items()]
    return out


def report_keep(decisions: list[tuple[bool, bool]], judge: str) -> tuple[float, float]:
    """Print the confusion of the keep decision ((label, kept) pairs), precision and recall
    against the criterion (>= 0.99 each); returns (precision, recall)."""
    matrix = Counter(decisions)
    tp, fp, fn, tn = matrix[True, True], matrix[False, True], matrix[True, False], matrix[False, False]
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(f"\nconfusion of keep (rows: label, columns: {judge})")
    print(f"{'':14}{'kept':>8}{'rejected':>10}")
    print(f"{'label keep':14}{tp:>8}{fn:>10}")
    print(f"{'label reject':14}{fp:>8}{tn:>10}")
    verdict = "PASS" if precision >= 0.99 and recall >= 0.99 else "FAIL"
    print(f"\nprecision {precision:.4f}  recall {recall:.4f}  (criterion >= 0.99 each: {verdict})")
    return precision, recall


def build(records: list[dict], seed: int) -> list[tuple[str, str, str, bool, str | None]]:
    """(record id, variant, trace, keep?, expected reason) for the whole set."""
    rng = random.Random(seed)
    return [(r["id"], *v) for r in records for v in variants(r, rng)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=None, help="the first N solutions (default: all)")
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    records = load(args.records)
    labelled = build(records, args.seed)
    references = {r["id"]: r["final_answer"] for r in records}

    judged = [judge_trace(text, references[rid]) for rid, _, text, _, _ in labelled]
    print(f"{len(labelled)} traces from {len(records)} GSM8K solutions (seed {args.seed})")
    counts = Counter(v for _, v, _, _, _ in labelled)
    print("\nper variant:  " + ", ".join(f"{v} {c}" for v, c in counts.items()))

    report_keep([(keep, j.kept) for (_, _, _, keep, _), j in zip(labelled, judged)], "judged")

    print("\nper-variant accuracy (decision; decision and reason)")
    for name in counts:
        rows = [(keep, reason, j) for (_, v, _, keep, reason), j in zip(labelled, judged) if v == name]
        decided = sum(j.kept == keep for keep, _, j in rows)
        reasoned = sum(j.kept == keep and j.reason == reason for keep, reason, j in rows)
        print(f"  {name:18} {decided / len(rows):.4f}  {reasoned / len(rows):.4f}")

    wrong = [(rid, v, text, keep, reason, j) for (rid, v, text, keep, reason), j in zip(labelled, judged)
             if j.kept != keep or j.reason != reason]
    print(f"\nmisjudged: {len(wrong)}")
    for rid, v, text, keep, reason, j in wrong[:10]:
        tail = text[-70:].replace("\n", " | ")
        print(f"  {rid} {v}: expected {reason or 'keep'}, got {j.reason or 'keep'} ({j.detail}); ...{tail}")

    times = []
    for _ in range(3):
        t = time.perf_counter()
        for rid, _, text, _, _ in labelled:
            judge_trace(text, references[rid])
        times.append(time.perf_counter() - t)
    print(f"\nthroughput: {len(labelled) / statistics.median(times):,.0f} traces/s "
          f"(median of 3 runs: {', '.join(f'{t:.2f} s' for t in times)}; one process)")


if __name__ == "__main__":
    main()
