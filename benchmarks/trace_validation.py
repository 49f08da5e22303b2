"""The trace_validation stage end to end: a labelled set, majority votes, throughput.

Usage:  python benchmarks/trace_validation.py [--records N] [--vote-problems 200] [--seed 24]

benchmarks/trace_judging.py measures the judging module (corpusmix.stages.answers) on its own;
this measures the stage that runs it (corpusmix.stages.trace_validation): a ``reasoning_traces``
source ingested, its traces grouped by problem in DuckDB, ``judge_problem`` per problem, the
``trace_verdicts`` table and the manifest. Everything is built with ``pipeline.run_stage`` (no
Dagster) in a temporary storage root, removed at the end. Three sources of one spec:

  traces   the labelled set (part 1), default judging
  vote80   the vote set (part 2), ``traces: {vote: {min_agree: 0.8, min_traces: 3}}``
  vote50   the same file, no ``traces`` block: the defaults (min_agree 0.5, min_traces 3)

1. Labelled set. trace_judging's ``load``/``build`` (same corpus file, seed and eight variants,
   same labels: keep, or reject with an expected reason), all solutions of math-0000 by default
   (about 35k traces), written as one JSONL source with problem_id = "<record id>/<variant>",
   reference_answer = the record's final_answer, strategy = the variant and difficulty =
   "short" (<= 2 calculator annotations in the original solution) or "long" (> 2). Every
   labelled trace is its own problem on purpose: the variants of one solution are near-copies
   of each other (5-gram Jaccard >= 0.9) and under one problem id would collapse to one
   representative, the others rejected as duplicate_trace; that is the collapse rule, not the
   judging the labels describe (part 2 and the tests cover the collapse).
   Reported: the confusion of keep (label vs the stage's ``kept``), precision and recall of
   keep, per-variant accuracy of the decision and of decision and reason, up to 10 misjudged
   traces, and whether they are the module benchmark's 3 known mislabels (``no_answer``
   variants of solutions that also state the answer in prose: gsm8k-train-02291, -05415, -07157).

2. Majority vote. The first 200 solutions (``--vote-problems``); per solution and k in 0..5 a
   problem with 5 traces and no reference: 5 - k end on the solution's ``#### N`` and k on a
   wrong number, in two modes: ``distinct`` (problem "<id>/w<k>"; the wrong answers are N+1,
   N+2, ..., so they never agree) and ``shared`` (problem "<id>/s<k>"; every wrong trace says
   N+1, so from k = 3 on the wrong answer is the larger group). Each of a problem's 5 traces
   opens with a different fixed strategy paragraph (>= 40 words, no answer in it) before the
   solution, so that no two are near-copies: checked with answers.near_duplicate_clusters (the
   count of problems where two traces cluster must be 0; the largest pairwise Jaccard is shown).
   ``expected()`` is written from the rule as documented, not from answers.py: every trace
   found an answer and its steps hold, so all 5 vote; need = ceil(min_agree * 5) (exact
   arithmetic: 0.8 of 5 is 4); the largest answer group wins when it has >= need votes, the
   problem has >= min_traces voters and no other group is as large; the winner's traces are
   kept, every other trace is no_majority. A problem is "as expected" when each of its traces
   has the expected kept flag and reason and the answer it was written with.
   Also checked on the verdicts alone: the traces kept under the vote are exactly those whose
   answer equals the problem's winning answer (the ``expected`` column).

3. Throughput. The trace_validation stage alone on the labelled source (ingest built once; the
   stage's manifest and output directory removed before each run), median of 3, against
   ``judge_problem`` called per problem on the same texts and references in this process,
   median of 3: the ratio is the stage's own cost (Parquet reading, DuckDB grouping and
   sorting, writing the kept parts and the verdicts, the funnels and the audit sample). Shown
   for context, not compared: judge_trace alone (what trace_judging.py times; judge_problem adds
   the near-copy clustering even for a one-trace problem) and the vote sources' single build.
   Added after the first run (the stage now spreads runs of problems over the spec's executor):
   the same stage on a 2-worker process pool, interleaved with the in-process runs; expected,
   decided before that run: faster than in-process on 2 cores, by less than 2x (DuckDB's sort
   and the Parquet writing stay in the driver).

Every source's manifest funnel is checked too: documents_in - sum(reasons[*].records) ==
documents_out, the same for tokens, and the per-strategy (and per-difficulty) funnel rows'
generated_documents sum to documents_in.

Criteria, written before the first run:
  * labelled set: precision and recall of keep >= 0.99 each;
  * the funnel adds up exactly, documents and tokens, for each of the three sources;
  * vote set: 0 problems with near-copies; 100 % of problems as expected for every mode,
    setting and k; kept traces exactly those with the winning answer (every trace);
  * throughput: no threshold; reported with the machine's core count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pyarrow.parquet as pq
import yaml
from common import GPT2
from trace_judging import FINAL_LINE, build, load, report_keep

from corpusmix.core.spec import Execution, LoadedSpec, load_spec
from corpusmix.pipeline import run_stage
from corpusmix.stages.answers import judge_problem, judge_trace, near_duplicate_clusters
from corpusmix.stages.trace_validation import UNIT_TRACES

STAGE = "trace_validation"
KNOWN_MISLABELS = {"gsm8k-train-02291", "gsm8k-train-05415", "gsm8k-train-07157"}  # trace_judging.txt
ANNOTATION = re.compile(r"<<[^<>]*>>")
SETTINGS = {"vote80": (0.8, 3), "vote50": (0.5, 3)}  # source -> (min_agree, min_traces)
MODES = ("distinct", "shared")
HEADERS = {  # one opening paragraph per trace of a vote problem: >= 40 words, no answer in them
    "backwards": (
        "Approach: work backwards from what the question asks for. First decide which quantity has "
        "to be reported at the end, then list every intermediate quantity that it depends on, and "
        "only after that compute those intermediate values one at a time, starting from the facts "
        "the problem states directly."),
    "table": (
        "Plan: put every number given in the problem into a small table with one row per object "
        "and one column per property, fill in the missing cells by the relations the text "
        "describes, check that each row is consistent with the story, and read the requested total "
        "off the completed table at the very end."),
    "units": (
        "Method: follow the units. Every quantity below is written together with its unit, such as "
        "dollars, hours, pages or items, so that each multiplication and division can be checked by "
        "making sure the units cancel properly; a step whose units do not match would point to a "
        "misread sentence in the question."),
    "estimate": (
        "Strategy: estimate first, then compute exactly. A rough mental estimate of the size of the "
        "result comes before the careful arithmetic, so that a result that is wildly too large or "
        "too small stands out immediately; after the exact steps, the estimate and the exact value "
        "are compared once more for sanity."),
    "story": (
        "Reading: restate the story in plain words before doing any arithmetic. Who has what at the "
        "start, what changes happen and in which order, and what is finally being counted; writing "
        "this down carefully avoids mixing up the people or the moments in time that the question "
        "actually refers to in its last sentence."),
}


# ------------------------------------------------------------------------------------ sets

def difficulty(record: dict) -> str:
    """"short" or "long" by the original solution's calculator annotations (<= 2 vs > 2)."""
    return "short" if len(ANNOTATION.findall(record["answer"])) <= 2 else "long"


def labelled_rows(records: list[dict], labelled: list[tuple]) -> list[dict]:
    by_id = {r["id"]: r for r in records}
    return [{"id": f"{rid}/{v}", "text": text, "problem_id": f"{rid}/{v}", "strategy": v,
             "reference_answer": by_id[rid]["final_answer"], "difficulty": difficulty(by_id[rid])}
            for rid, v, text, _, _ in labelled]


def wrong_slots(index: int, k: int) -> list[int]:
    """Which of a problem's 5 traces are the wrong ones: k of them, rotated with the record so that
    every strategy header is sometimes on a right trace and sometimes on a wrong one."""
    return [(index + j) % 5 for j in range(k)]


def vote_problems(records: list[dict]) -> list[dict]:
    """Per record, mode and k: {problem_id, mode, k, n, traces: [(strategy, text, answer)]}."""
    out = []
    for index, r in enumerate(records):
        n = int(r["final_answer"])
        for mode in MODES:
            for k in range(6):
                wrong = wrong_slots(index, k)
                traces = []
                for i, (name, header) in enumerate(HEADERS.items()):
                    if i in wrong:
                        answer = n + 1 if mode == "shared" else n + 1 + wrong.index(i)
                    else:
                        answer = n
                    body = FINAL_LINE.sub(lambda _, a=answer: f"#### {a}", r["answer"])
                    traces.append((name, f"{header}\n\n{body}", str(answer)))
                out.append({"problem_id": f"{r['id']}/{'w' if mode == 'distinct' else 's'}{k}", "mode": mode,
                            "k": k, "n": n, "difficulty": difficulty(r), "traces": traces})
    return out


def vote_rows(problems: list[dict]) -> list[dict]:
    """The vote set as records without a reference answer."""
    return [{"id": f"{p['problem_id']}/{i}", "text": text, "problem_id": p["problem_id"], "strategy": name,
             "difficulty": p["difficulty"]}
            for p in problems for i, (name, text, _) in enumerate(p["traces"])]


def shingles(text: str, n: int = 5) -> set[str]:
    t = " ".join(text.split())
    return {t[i:i + n] for i in range(len(t) - n + 1)} or {t}


def expected(mode: str, k: int, n: int, min_agree: float, min_traces: int, voters: int = 5) -> str | None:
    """The answer that wins a vote problem (None: none does), from the documented rule alone
    (``min_agree``: an int is a count, a float a fraction of the voters)."""
    groups = {str(n): voters - k} if voters - k else {}
    if mode == "shared" and k:
        groups[str(n + 1)] = k
    elif mode == "distinct":
        groups |= {str(n + 1 + j): 1 for j in range(k)}
    need = min_agree if isinstance(min_agree, int) else math.ceil(Fraction(str(min_agree)) * voters)
    top = max(groups.values())
    leaders = [a for a, size in groups.items() if size == top]
    return leaders[0] if len(leaders) == 1 and top >= need and voters >= min_traces else None


# ------------------------------------------------------------------------------------ building

def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_spec(root: Path, labelled: Path, votes: Path) -> Path:
    sources = [{"name": "traces", "kind": "reasoning_traces", "paths": [str(labelled)]},
               {"name": "vote80", "kind": "reasoning_traces", "paths": [str(votes)],
                "traces": {"vote": {"min_agree": SETTINGS["vote80"][0], "min_traces": SETTINGS["vote80"][1]}}},
               {"name": "vote50", "kind": "reasoning_traces", "paths": [str(votes)]}]
    spec = {
        "name": "bench-traces",
        "storage": {"root": str(root / "data"), "manifests": str(root / "manifests")},
        "execution": {"workers": 0},
        "sources": sources,
        "tokenizer": {"path": str(GPT2)},
        "mixture": {"total_tokens": 1_000_000, "seq_len": 1024,
                    "schedule": {"type": "static", "weights": {s["name"]: 1 for s in sources}}},
    }
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def verdicts_of(manifest: dict, storage_root: Path):
    [out] = [o for o in manifest["outputs"] if o["kind"] == "trace_verdicts"]
    return pq.read_table(storage_root / out["path"])


def doc_ids(manifest: dict, storage_root: Path) -> list[str]:
    """The doc_ids of a manifest's document parts, in part order."""
    return [d for o in manifest["outputs"] if o["kind"] == "documents"
            for d in pq.read_table(storage_root / o["path"], columns=["doc_id"]).column("doc_id").to_pylist()]


def order_checks(source: str, ingested: list[str], kept: list[str], verdicts) -> bool:
    """The verdicts list ingest's documents in ingest order; the kept parts are the kept verdicts, in order."""
    listed = verdicts.column("doc_id").to_pylist()
    flagged = [d for d, k in zip(listed, verdicts.column("kept").to_pylist()) if k]
    ok = listed == ingested and kept == flagged
    print(f"  {source:7} verdicts in ingest order: {listed == ingested}; kept parts = the kept verdicts in order: "
          f"{kept == flagged} ({len(kept):,} of {len(ingested):,})")
    return ok


def funnel_checks(source: str, m: dict) -> bool:
    """Print and return whether the manifest's funnel adds up."""
    c, reasons, funnel = m["counts"], m["reasons"], m["details"]["funnel"]
    ok = True
    for unit in ("documents", "tokens", "bytes"):
        key = "records" if unit == "documents" else unit
        gap = c[f"{unit}_in"] - sum(r[key] for r in reasons.values()) - c[f"{unit}_out"]
        if unit != "bytes":
            ok &= gap == 0
        print(f"  {source:7} {unit:9} in {c[f'{unit}_in']:>11,}  rejected {sum(r[key] for r in reasons.values()):>11,}"
              f"  out {c[f'{unit}_out']:>11,}  gap {gap}{'' if unit != 'bytes' else '  (bytes: not a criterion)'}")
    whole = [row for row in funnel if row["by"] is None]
    ok &= len(whole) == 1 and whole[0]["generated_documents"] == c["documents_in"] \
        and whole[0]["distinct_documents"] == c["documents_out"]
    for by in ("strategy", "difficulty"):
        rows = [row for row in funnel if row["by"] == by]
        docs, toks = sum(r["generated_documents"] for r in rows), sum(r["generated_tokens"] for r in rows)
        kept = sum(r["distinct_documents"] for r in rows)
        good = docs == c["documents_in"] and toks == c["tokens_in"] and kept == c["documents_out"]
        ok &= good
        print(f"  {source:7} per {by:10}: {len(rows)} rows, generated {docs:,} docs / {toks:,} tokens, "
              f"distinct {kept:,} ({'adds up' if good else 'DOES NOT ADD UP'})")
    return ok


# ------------------------------------------------------------------------------------ parts

def report_labelled(labelled: list[tuple], verdicts) -> None:
    by_doc = {d: (k, r, det) for d, k, r, det in zip(*(verdicts.column(c).to_pylist()
                                                       for c in ("doc_id", "kept", "reason", "detail")))}
    missing = [f"{rid}/{v}" for rid, v, *_ in labelled if f"{rid}/{v}" not in by_doc]
    print(f"{len(labelled)} labelled traces written, {verdicts.num_rows} verdicts, {len(missing)} labelled traces "
          f"without a verdict{': ' + ', '.join(missing[:5]) if missing else ''}")
    rows = [(rid, v, text, keep, reason, *by_doc[f"{rid}/{v}"]) for rid, v, text, keep, reason in labelled
            if f"{rid}/{v}" in by_doc]
    counts = Counter(v for _, v, *_ in rows)
    print("per variant:  " + ", ".join(f"{v} {c}" for v, c in counts.items()))
    print(f"judged by: {dict(Counter(verdicts.column('judged_by').to_pylist()))}; "
          f"reasons: {dict(Counter(verdicts.column('reason').to_pylist()))}")

    report_keep([(keep, kept) for _, _, _, keep, _, kept, _, _ in rows], "the stage's kept")

    print("\nper-variant accuracy (decision; decision and reason)")
    for name in counts:
        sub = [(keep, reason, kept, got) for _, v, _, keep, reason, kept, got, _ in rows if v == name]
        decided = sum(kept == keep for keep, _, kept, _ in sub)
        reasoned = sum(kept == keep and got == reason for keep, reason, kept, got in sub)
        print(f"  {name:18} {decided / len(sub):.4f}  {reasoned / len(sub):.4f}")

    wrong = [r for r in rows if r[5] != r[3] or r[6] != r[4]]
    print(f"\nmisjudged: {len(wrong)}")
    for rid, v, text, keep, reason, kept, got, detail in wrong[:10]:
        tail = text[-70:].replace("\n", " | ")
        print(f"  {rid} {v}: expected {reason or 'keep'}, got {got or 'keep'} ({detail}); ...{tail}")
    ids = {(rid, v) for rid, v, *_ in wrong}
    known = {(rid, "no_answer") for rid in KNOWN_MISLABELS}
    in_set = {(rid, "no_answer") for rid in KNOWN_MISLABELS if any(r[0] == rid for r in rows)}
    print(f"the module benchmark's 3 known mislabels (no_answer, answer also stated in prose): "
          f"{len(ids & known)} of the {len(in_set)} in this set misjudged here too; "
          f"{len(ids - known)} other misjudged trace(s)")


def report_votes(problems: list[dict], verdicts: dict) -> bool:
    clustered = sum(len(near_duplicate_clusters([t for _, t, _ in p["traces"]])) < 5 for p in problems)
    worst = max(len(a & b) / len(a | b) for p in problems
                for a, b in _pairs([shingles(t) for _, t, _ in p["traces"]]))
    print(f"{len(problems)} vote problems ({len(problems) * 5} traces); problems with near-copies "
          f"(answers.near_duplicate_clusters, 0.9): {clustered} (criterion 0); "
          f"largest 5-gram Jaccard between two traces of a problem: {worst:.3f}")
    ok = clustered == 0
    print(f"\n{'mode':9}{'setting':26}{'k':>2}{'problems':>10}  {'expected outcome':24}{'as expected':>12}"
          f"{'kept = winner':>15}")
    for mode in MODES:
        for source, (min_agree, min_traces) in SETTINGS.items():
            table = verdicts[source]
            rows = defaultdict(list)
            for pid, kept, reason, answer, expected_col, judged_by in zip(*(table.column(c).to_pylist() for c in (
                    "problem_id", "kept", "reason", "answer", "expected", "judged_by"))):
                rows[pid].append((kept, reason, answer, expected_col, judged_by))
            need = math.ceil(Fraction(str(min_agree)) * 5)
            for k in range(6):
                sub = [p for p in problems if p["mode"] == mode and p["k"] == k]
                good = consistent = 0
                outcomes = Counter()
                for p in sub:
                    win = expected(mode, k, p["n"], min_agree, min_traces)
                    outcomes[_outcome(win, p["n"], sum(a == win for _, _, a in p["traces"]))] += 1
                    got = rows.get(p["problem_id"], [])
                    want = [(a == win, None if a == win else "no_majority", a, "majority") for _, _, a in p["traces"]]
                    good += [(kept, reason, answer, by) for kept, reason, answer, _, by in got] == want
                    consistent += len(got) == 5 and all(
                        kept == (e is not None and answer == e) for kept, _, answer, e, _ in got)
                ok &= good == len(sub) == consistent
                [(outcome, _)] = outcomes.most_common(1) if len(outcomes) == 1 else [("mixed", 0)]
                setting = f"{source} {min_agree}/{min_traces} (need {need})"
                print(f"{mode:9}{setting:26}{k:>2}{len(sub):>10}  {outcome:24}{good:>7} {good / len(sub):>4.0%}"
                      f"{consistent:>10} {consistent / len(sub):>4.0%}")
    print(f"\nvote criterion (100 % as expected, kept = winner for every trace): {'PASS' if ok else 'FAIL'}")
    return ok


def _pairs(items: list) -> list[tuple]:
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]


def _outcome(win: str | None, n: int, size: int) -> str:
    if win is None:
        return "none kept"
    return f"{'correct' if win == str(n) else 'wrong'} kept ({size})"


def throughput(loaded, root: Path, labelled: list[tuple], references: dict[str, str], runs: int = 3) -> None:
    manifest = root / "manifests" / STAGE / "traces.json"
    output = root / "data" / STAGE / "traces"
    pooled = LoadedSpec(spec=loaded.spec.model_copy(update={"execution": Execution(backend="processes", workers=2)}),
                        path=loaded.path)
    stage_times, inside, pool_times = [], [], []

    def timed(spec) -> float:
        manifest.unlink()
        shutil.rmtree(output)
        t = time.perf_counter()
        m, _ = run_stage(STAGE, spec, "traces")
        inside.append(m["elapsed_s"]) if spec is loaded else None
        return time.perf_counter() - t

    timed(pooled)  # untimed: starts the pool's workers (kept for the build's later stages)
    for _ in range(runs):  # interleaved, so both see the same load
        stage_times.append(timed(loaded))
        pool_times.append(timed(pooled))
    module_times, trace_times = [], []
    for _ in range(runs):
        t = time.perf_counter()
        for rid, _, text, _, _ in labelled:
            judge_problem([text], references[rid])
        module_times.append(time.perf_counter() - t)
    for _ in range(runs):  # what trace_judging.py measures: no near-copy clustering around it
        t = time.perf_counter()
        for rid, _, text, _, _ in labelled:
            judge_trace(text, references[rid])
        trace_times.append(time.perf_counter() - t)
    n = len(labelled)
    stage_rate, module_rate = n / statistics.median(stage_times), n / statistics.median(module_times)
    print(f"cores: os.cpu_count() {os.cpu_count()}, usable by this process {len(os.sched_getaffinity(0))}; "
          f"in-process runs use one process (DuckDB inside the stage uses its own threads); the pool adds two workers")
    print(f"stage  (run_stage trace_validation, {n:,} traces, {n:,} problems): {stage_rate:,.0f} traces/s "
          f"(median of {runs}: {', '.join(f'{t:.2f} s' for t in stage_times)}; manifest elapsed_s "
          f"{', '.join(f'{t:.2f}' for t in inside)})")
    print(f"module (judge_problem per problem, same texts):             {module_rate:,.0f} traces/s "
          f"(median of {runs}: {', '.join(f'{t:.2f} s' for t in module_times)})")
    print(f"(judge_trace alone, as trace_judging.py times it:           {n / statistics.median(trace_times):,.0f} "
          f"traces/s, median of {runs}: {', '.join(f'{t:.2f} s' for t in trace_times)})")
    pool_rate = n / statistics.median(pool_times)
    print(f"stage on a 2-worker process pool (units of {UNIT_TRACES:,} traces): {pool_rate:,.0f} traces/s "
          f"(median of {runs}: {', '.join(f'{t:.2f} s' for t in pool_times)}); "
          f"{pool_rate / stage_rate:.2f}x the in-process stage")
    print(f"stage overhead: module rate / stage rate = {module_rate / stage_rate:.2f}x "
          f"({statistics.median(stage_times) - statistics.median(module_times):.2f} s over the judging)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=None, help="the first N solutions (default: all)")
    parser.add_argument("--vote-problems", type=int, default=200, help="solutions the vote set is made from")
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    started = time.perf_counter()
    records = load(args.records)
    labelled = build(records, args.seed)
    references = {r["id"]: r["final_answer"] for r in records}
    problems = vote_problems(load(args.vote_problems))

    with tempfile.TemporaryDirectory(prefix="corpusmix-trace-validation-") as tmp:
        root = Path(tmp)
        write_jsonl(root / "labelled.jsonl", labelled_rows(records, labelled))
        write_jsonl(root / "votes.jsonl", vote_rows(problems))
        loaded = load_spec(write_spec(root, root / "labelled.jsonl", root / "votes.jsonl"))
        manifests, setup, ingested = {}, {}, {}
        for source in ("traces", *SETTINGS):
            t = time.perf_counter()
            m, _ = run_stage("ingest", loaded, source)
            setup[source] = time.perf_counter() - t
            ingested[source] = doc_ids(m, loaded.storage_root)
            manifests[source], _ = run_stage(STAGE, loaded, source)
        verdicts = {s: verdicts_of(m, loaded.storage_root) for s, m in manifests.items()}
        print(f"setup: ingest {', '.join(f'{s} {t:.1f} s' for s, t in setup.items())}; first trace_validation "
              + ", ".join(f"{s} {m['elapsed_s']:.1f} s" for s, m in manifests.items()))

        print("\n== 1. labelled set through the stage (source traces: each labelled trace its own problem)")
        print(f"{len(records)} GSM8K solutions (seed {args.seed})")
        report_labelled(labelled, verdicts["traces"])

        print("\n== funnel of each source's manifest, and the order of its outputs")
        funnel_ok = [funnel_checks(s, m) for s, m in manifests.items()]  # every source printed
        funnel_ok = all(funnel_ok)
        print(f"funnel criterion (documents and tokens add up, per-strategy/difficulty rows sum to documents_in): "
              f"{'PASS' if funnel_ok else 'FAIL'}")
        print("order (no threshold of its own; a mismatch is a stage bug):")
        for s, m in manifests.items():
            order_checks(s, ingested[s], doc_ids(m, loaded.storage_root), verdicts[s])

        print(f"\n== 2. majority vote through the stage ({args.vote_problems} solutions x 2 modes x k 0..5, "
              "5 traces each, no reference)")
        report_votes(problems, verdicts)

        print("\n== 3. throughput of the stage on the labelled source")
        throughput(loaded, root, labelled, references)
        for s in SETTINGS:
            m = manifests[s]
            print(f"for scale, the vote source {s}'s one build: {m['counts']['documents_in'] / m['elapsed_s']:,.0f} "
                  f"traces/s ({m['counts']['documents_in']:,} traces, 5 per problem, {m['elapsed_s']:.2f} s)")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
