"""The trace_validation stage on real GSM8K solutions: labelled traces judged through the stage,
majority votes of five, near-copies, bad records, pass-through, determinism, the funnel through
quality, the audit trail, and the plan's "traces needed" figure."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from corpusmix.core.spec import SpecError, load_spec
from corpusmix.pipeline import run_stage, waves
from tests.conftest import CORPUS, REPO, base_spec, write_spec

sys.path.insert(0, str(REPO / "benchmarks"))
from trace_judging import build as labelled_variants  # noqa: E402

GSM8K = CORPUS / "math" / "math-0000-of-0002.jsonl.gz"
# five ways to open a solution, long enough that traces sharing a solution are not near-copies
OPENINGS = [
    "Approach one. I will read the problem slowly, write down every quantity it gives me with its unit, and only "
    "then combine them, checking each intermediate result against the story before moving on to the next line.",
    "Let me work backwards from what the question asks for: first decide which quantity is unknown, then find the "
    "facts that pin it down, and finally compute those facts in the order the problem presents them.",
    "By analogy with a simpler version of this problem, where every number is small enough to count on fingers, the "
    "same operations apply here; I just carry them out with the actual values from the statement.",
    "Setting this up algebraically, each amount in the story becomes a named quantity, the relations between "
    "them become equations, and solving those equations step by step yields the requested value.",
    "Numerically, a table of the values involved makes the structure obvious: listing the rows in order and "
    "summing or multiplying as the story dictates gives the result without any guessing at all.",
]
FINAL = "\n#### "


def gsm8k(n: int) -> list[dict]:
    with gzip.open(GSM8K, "rt") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


def vote_records(records: list[dict], source_tag: str) -> list[dict]:
    """Per solution and k in 0..5: a problem of five traces, no reference, 5 - k ending on the true
    answer and k on distinct wrong ones (so wrong answers never agree with each other)."""
    out = []
    for r in records:
        body = r["answer"].rsplit(FINAL, 1)[0]
        n = int(r["final_answer"])
        for k in range(6):
            for i in range(5):
                answer = n if i < 5 - k else n + 1 + i
                out.append({"id": f"{source_tag}/{r['id']}/w{k}/t{i}", "text": f"{OPENINGS[i]}\n{body}{FINAL}{answer}",
                            "problem_id": f"{r['id']}/w{k}", "strategy": f"opening{i}",
                            "difficulty": f"{k} wrong"})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build (ingest + trace_validation) of five sources: labelled traces with references,
    two vote settings over the same groups, bad records, and a web source passing through."""
    root = tmp_path_factory.mktemp("traces o'brien")  # a quote and a space in every path DuckDB reads
    records = gsm8k(300)
    labelled = labelled_variants(records, 24)
    ref = {r["id"]: r["final_answer"] for r in records}
    lab_rows = [{"id": f"{rid}/{v}", "text": text, "problem_id": f"{rid}/{v}", "strategy": v,
                 "reference_answer": ref[rid], "difficulty": "long" if text.count("<<") > 2 else "short"}
                for rid, v, text, _, _ in labelled]
    votes = vote_records(records[:40], "v")
    messy = [{"id": "no-problem", "text": "2+2 = <<2+2=4>>4\n#### 4"},
             {"id": "empty-problem", "text": "#### 4", "problem_id": "  "},
             {"id": "ref-a", "text": "#### 4", "problem_id": "p1", "reference_answer": "4"},
             {"id": "ref-b", "text": "so it is 4.\n#### 4", "problem_id": "p1", "reference_answer": "5"},
             {"id": "ref-same", "text": "#### 7", "problem_id": "p2", "reference_answer": "7"},
             {"id": "ref-same-2", "text": "therefore seven.\n#### 7.0", "problem_id": "p2", "reference_answer": "7.00"}]
    messy += [{"id": f"many-{i}", "text": f"try {i}\n#### 3", "problem_id": "p3"} for i in range(4)]
    spec = base_spec([
        {"name": "labelled", "kind": "reasoning_traces", "paths": [write_jsonl(root / "labelled.jsonl", lab_rows)]},
        {"name": "vote80", "kind": "reasoning_traces", "paths": [write_jsonl(root / "votes.jsonl", votes)],
         "traces": {"vote": {"min_agree": 0.8, "min_traces": 3}}},
        {"name": "vote50", "kind": "reasoning_traces", "paths": [str(root / "votes.jsonl")]},
        {"name": "messy", "kind": "reasoning_traces", "paths": [write_jsonl(root / "messy.jsonl", messy)],
         "traces": {"max_per_problem": 3}},
        {"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]},
    ], root)
    loaded = load_spec(write_spec(root / "spec.yaml", spec))
    manifests = {}
    for s in loaded.source_names:
        run_stage("ingest", loaded, s)
        manifests[s] = run_stage("trace_validation", loaded, s)[0]
    return loaded, manifests, labelled


def verdicts(loaded, manifest) -> list[dict]:
    out = next(o for o in manifest["outputs"] if o["kind"] == "trace_verdicts")
    return pq.read_table(loaded.storage_root / out["path"]).to_pylist()


def test_labelled_gsm8k_traces_are_judged_as_labelled_through_the_stage(built):
    """2,395 traces from 300 real solutions, each its own problem with its reference: originals and
    equivalent answer formats kept, wrong answers, missing answer lines and broken steps rejected
    with that reason. Exact on this set (the module benchmark's three mislabels are later records)."""
    loaded, manifests, labelled = built
    rows = verdicts(loaded, manifests["labelled"])
    assert len(rows) == len(labelled) >= 2000
    by_id = {r["doc_id"]: r for r in rows}
    tp = fp = fn = 0
    for rid, variant, _, keep, reason in labelled:
        v = by_id[f"{rid}/{variant}"]
        assert (v["kept"], v["reason"]) == (keep, reason), (rid, variant, v)
        tp, fp, fn = tp + (keep and v["kept"]), fp + (not keep and v["kept"]), fn + (keep and not v["kept"])
    assert tp / (tp + fp) == 1.0 and tp / (tp + fn) == 1.0
    assert all(v["judged_by"] == "reference" for v in rows)
    bad = next(v for v in rows if v["reason"] == "bad_step")
    assert bad["detail"].startswith("step ") and "computed" in bad["detail"]
    m = manifests["labelled"]
    c = m["counts"]
    assert c["documents_in"] - sum(r["records"] for r in m["reasons"].values()) == c["documents_out"] == tp
    assert c["tokens_in"] - sum(r["tokens"] for r in m["reasons"].values()) == c["tokens_out"]
    # the kept documents are exactly the kept verdicts, in ingest order
    kept = [o for o in m["outputs"] if o["kind"] == "documents"]
    ids = [i for o in kept
           for i in pq.read_table(loaded.storage_root / o["path"], columns=["doc_id"]).column(0).to_pylist()]
    assert ids == [r["doc_id"] for r in rows if r["kept"]]
    # the step funnel per strategy: generated adds up, and each strategy stops where its label says
    funnel = m["details"]["funnel"]
    strategies = {r["value"]: r for r in funnel if r["by"] == "strategy"}
    assert sum(r["generated_documents"] for r in strategies.values()) == c["documents_in"]
    assert strategies["no_answer"]["answer_found_documents"] == 0
    wrong = strategies["wrong_answer"]
    assert wrong["answer_found_documents"] == 300 and wrong["correct_documents"] == 0
    assert strategies["boxed"]["distinct_documents"] == 300
    assert {r["value"] for r in funnel if r["by"] == "difficulty"} == {"long", "short"}
    assert set(m["details"]["audit"]) == {"no_answer_found", "bad_step", "wrong_answer"}


def expected_kept(wrong: int, min_agree: float) -> bool:
    """The vote's rule, written independently of answers.py: 5 independent traces, the correct
    group has 5 - wrong, each wrong answer a group of one; the largest group wins when it is
    unique and reaches ceil(min_agree x 5)."""
    correct = 5 - wrong
    unique_largest = correct > 1 or (correct == 1 and wrong == 0)
    return unique_largest and correct >= math.ceil(min_agree * 5)


@pytest.mark.parametrize("source,min_agree", [("vote80", 0.8), ("vote50", 0.5)])
def test_groups_of_five_without_reference_are_kept_exactly_when_the_threshold_is_met(built, source, min_agree):
    loaded, manifests, _ = built
    rows = verdicts(loaded, manifests[source])
    assert len(rows) == 40 * 6 * 5
    for k in range(6):
        group = [r for r in rows if r["problem_id"].endswith(f"/w{k}")]
        assert len(group) == 200
        want = expected_kept(k, min_agree)
        for r in group:
            correct = int(r["doc_id"].rsplit("/t", 1)[1]) < 5 - k
            assert r["kept"] == (want and correct), (k, r)
            assert r["judged_by"] == "majority"
            assert r["reason"] in ((None,) if r["kept"] else ("no_majority", "wrong_answer"))
    # 0.8: k in {0, 1} keep their correct traces; 0.5: k in {0, 1, 2}
    kept_problems = {r["problem_id"].rsplit("/", 1)[1] for r in rows if r["kept"]}
    assert kept_problems == ({"w0", "w1"} if min_agree == 0.8 else {"w0", "w1", "w2"})
    assert manifests[source]["counts"]["problems_by_majority"] == 240


def test_bad_trace_records_are_rejected_with_their_reason_and_counted(built):
    loaded, manifests, _ = built
    by_id = {r["doc_id"]: r for r in verdicts(loaded, manifests["messy"])}
    assert by_id["no-problem"]["reason"] == by_id["empty-problem"]["reason"] == "missing_problem_id"
    assert by_id["ref-a"]["reason"] == by_id["ref-b"]["reason"] == "conflicting_reference"
    assert "2 different references" in by_id["ref-a"]["detail"]
    # "7" and "7.00" are one reference, so p2 is judged: both traces answer 7
    assert by_id["ref-same"]["kept"] and by_id["ref-same-2"]["kept"] is True
    # four traces of one problem, over max_per_problem 3: not judged, each rejected saying why
    assert {by_id[f"many-{i}"]["reason"] for i in range(4)} == {"too_many_traces"}
    assert "4 traces name this problem, over traces.max_per_problem 3" in by_id["many-0"]["detail"]
    m = manifests["messy"]
    assert m["reasons"]["missing_problem_id"]["records"] == 2 and m["reasons"]["conflicting_reference"]["records"] == 2
    assert m["reasons"]["too_many_traces"]["records"] == 4
    assert m["counts"]["documents_out"] == 2
    assert m["counts"]["documents_in"] - sum(r["records"] for r in m["reasons"].values()) == 2


def test_other_sources_are_not_judged_and_keep_their_dedup_key(built):
    """A web source in a spec with trace sources: its trace_validation partition writes nothing,
    its dedup reads ingest, and its dedup key is the one it has in a spec without trace sources
    (adding a trace source to a corpus rebuilds nothing of the others)."""
    from corpusmix.core.stage import stage_key
    from corpusmix.pipeline import REGISTRY

    loaded, manifests, _ = built
    m = manifests["web"]
    ingest = json.loads((loaded.manifest_root / "ingest" / "web.json").read_text())
    assert m["outputs"] == [] and m["reasons"] == {} and m["details"].get("traces") is None
    assert m["counts"]["documents_out"] == m["counts"]["documents_in"] == ingest["counts"]["documents_out"]
    dm, _ = run_stage("dedup", loaded, "web")
    assert dm["inputs"][0]["upstream_manifest"] == "ingest/web.json"
    assert {i["path"] for i in dm["inputs"]} == {o["path"] for o in ingest["outputs"] if o["kind"] == "documents"}
    raw = yaml.safe_load(loaded.path.read_text())
    raw["sources"] = [s for s in raw["sources"] if s["name"] == "web"]
    raw["mixture"]["schedule"]["weights"] = {"web": 1}
    alone = load_spec(write_spec(loaded.path.parent / "web-alone.yaml", raw))
    assert not alone.spec.validates_traces()
    assert stage_key(REGISTRY["dedup"], alone, "web", REGISTRY)[1] == dm["version"]
    # and a trace source's dedup reads the traces trace_validation kept
    traced, _ = run_stage("dedup", loaded, "messy")
    assert traced["inputs"][0]["upstream_manifest"] == "trace_validation/messy.json"
    assert traced["counts"]["documents_in"] == manifests["messy"]["counts"]["documents_out"]


def test_same_inputs_give_byte_identical_outputs_on_a_process_pool(built, tmp_path, monkeypatch):
    """A second build elsewhere, its problems judged in units of 100 traces on two worker
    processes, writes the same files as the in-process build (DuckDB's sort, the units, the
    audit sample are all independent of order and placement)."""
    from corpusmix.stages import trace_validation

    loaded, manifests, _ = built
    raw = yaml.safe_load(loaded.path.read_text())
    raw["storage"] = {"root": str(tmp_path / "data"), "manifests": str(tmp_path / "manifests")}
    raw["execution"] = {"backend": "processes", "workers": 2}
    raw["sources"] = [s for s in raw["sources"] if s["name"] == "vote80"]
    raw["mixture"]["schedule"]["weights"] = {"vote80": 1}
    again = load_spec(write_spec(tmp_path / "spec.yaml", raw))
    monkeypatch.setattr(trace_validation, "UNIT_TRACES", 100)
    lines = []
    run_stage("ingest", again, "vote80")
    m2, _ = run_stage("trace_validation", again, "vote80", progress=lines.append)
    assert any("on processes (2 worker(s))" in line for line in lines)
    digest = lambda m: sorted((o["kind"], o["sha256"]) for o in m["outputs"])  # noqa: E731
    assert digest(m2) == digest(manifests["vote80"])
    assert m2["details"] == manifests["vote80"]["details"]


def test_without_a_trace_source_the_stage_is_not_in_the_build(make_spec):
    loaded = load_spec(make_spec([{"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "*.jsonl.gz")]}]))
    assert not any("trace_validation" in w.stages for w in waves(loaded.spec))
    traced_spec = make_spec([{"name": "t", "kind": "reasoning_traces", "paths": ["x.jsonl"]}], name="t.yaml")
    (traced_spec.parent / "x.jsonl").write_text('{"id": "a", "text": "#### 1", "problem_id": "p"}\n')
    traced = load_spec(traced_spec)
    assert waves(traced.spec)[0].stages[:3] == ("ingest", "trace_validation", "dedup")


@pytest.mark.parametrize("source,fragment", [
    ({"kind": "math", "traces": {}}, "'traces' applies only to kind reasoning_traces"),
    ({"traces": {"vote": {"min_agree": 0}}}, "min_agree is a count"),
    ({"traces": {"vote": {"min_agree": 1.5}}}, "min_agree is a count"),
    ({"traces": {"answer_pattern": "Final: .+"}}, "has no group"),
    ({"traces": {"answer_pattern": "(unclosed"}}, "is not a regular expression"),
    ({"metadata_fields": "none"}, "metadata_fields leaves out"),
    ({"metadata_fields": ["strategy"]}, "metadata_fields leaves out"),
    ({"metadata_fields": ["problem_id"]}, "['reference_answer', 'strategy', 'difficulty', 'problem']"),
    ({"traces": {"augments": "nowhere"}}, "sources[0].traces.augments: names 'nowhere', which is not a source"),
    ({"traces": {"augments": "t"}}, "sources[0].traces.augments: names 't', which is a reasoning_traces source itself"),
])
def test_trace_spec_mistakes_name_the_field_and_the_fix(make_spec, source, fragment):
    path = make_spec([{"name": "t", "kind": "reasoning_traces", "paths": ["x.jsonl"], **source},
                      {"name": "web", "kind": "web", "paths": ["y.jsonl"]}])
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert fragment in str(e.value)


@pytest.fixture(scope="module")
def through_plan(tmp_path_factory):
    """Real math (one GSM8K shard) and a trace source augmenting it, built through tokenize, with
    math's share over the epoch cap."""
    from corpusmix.pipeline import build_all

    root = tmp_path_factory.mktemp("traces_plan")
    records = gsm8k(120)
    rows = [{"id": f"{rid}/{v}", "text": text, "problem_id": rid, "strategy": v,
             "reference_answer": next(r["final_answer"] for r in records if r["id"] == rid)}
            for rid, v, text, _, _ in labelled_variants(records, 7)]
    # a teacher stuck in a loop: right answer, true steps, so validated; then quality's repetition rule
    rows.append({"id": "loop-1", "problem_id": "loop", "strategy": "original", "reference_answer": "24",
                 "text": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n" * 8 + "#### 24"})
    spec = base_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0001-of-0002.jsonl.gz")]},
                      {"name": "math_traces", "kind": "reasoning_traces",
                       "paths": [write_jsonl(root / "traces.jsonl", rows)], "traces": {"augments": "math"}}], root)
    spec["mixture"] = {"total_tokens": 4_000_000, "seq_len": 512, "max_epochs": 2,
                       "schedule": {"type": "static", "weights": {"math": 3, "math_traces": 1}}}
    loaded = load_spec(write_spec(root / "spec.yaml", spec))
    build_all(loaded, until="tokenize")
    return loaded


def test_the_trace_funnel_runs_through_quality_into_the_report_and_the_audit(through_plan):
    from corpusmix.ops import audit
    from corpusmix.ops.report import build_report

    loaded = through_plan
    q = json.loads((loaded.manifest_root / "quality" / "math_traces.json").read_text())
    tv = json.loads((loaded.manifest_root / "trace_validation" / "math_traces.json").read_text())
    whole = next(r for r in q["details"]["trace_funnel"] if r["by"] is None)
    # the steps shrink, the first four are trace_validation's, the last is quality's documents out
    steps = ["generated", "answer_found", "correct", "distinct", "passed_quality"]
    counts = [whole[f"{s}_documents"] for s in steps]
    assert counts == sorted(counts, reverse=True) and counts[0] == tv["counts"]["documents_in"]
    assert whole["distinct_documents"] == tv["counts"]["documents_out"]
    assert whole["passed_quality_documents"] == q["counts"]["documents_out"]
    # one solution's right variants are mostly near-copies: duplicates leave between correct and distinct
    assert tv["reasons"]["duplicate_trace"]["records"] == whole["correct_documents"] - whole["distinct_documents"] > 0
    report = build_report(loaded)
    assert "## Reasoning traces: generated to kept" in report and "passed dedup + quality" in report
    assert f"| all traces |  | {whole['generated_documents']:,} (100.0 %)" in report
    con = audit.connect(loaded)
    rid = gsm8k(1)[0]["id"]
    found = audit.why(con, f"{rid}/wrong_answer", "math_traces")
    assert found[0]["stage"] == "trace_validation" and "wrong_answer" in found[0]["why"]
    assert "expected '72'" in found[0]["detail"]
    kept = audit.why(con, f"{rid}/original", "math_traces")
    assert kept[0]["why"].startswith("trace validated")
    # the quality rules that apply come after the trace's verdict
    loop = audit.why(con, "loop-1", "math_traces")
    assert [f["stage"] for f in loop] == ["trace_validation", "quality"]
    assert loop[0]["why"].startswith("trace validated")
    assert "gopher_dup_line_fraction" in loop[1]["why"]


def test_the_plan_says_how_many_problems_x_traces_close_the_shortfall(through_plan):
    from corpusmix.mixture.plan import PlanError, availability, make_plan, render_plan

    loaded = through_plan
    with pytest.raises(PlanError) as e:
        make_plan(loaded, availability(loaded, exact_only=True))
    r = e.value.plan["per_source"]["math"]
    [t] = r["synthetic_traces"]
    tv = json.loads((loaded.manifest_root / "trace_validation" / "math_traces.json").read_text())["counts"]
    tok = json.loads((loaded.manifest_root / "tokenize" / "math_traces.json").read_text())["counts"]
    # recomputed from the manifests: trained tokens per generated trace, then traces and problems
    traces = math.ceil(r["synthetic_tokens_needed"] / (tok["tokens_stored"] / tv["documents_in"]))
    assert (t["traces"], t["problems"]) == (traces, math.ceil(traces / (tv["documents_in"] / tv["problems"])))
    assert t["mean_trace_tokens"] == tok["tokens_stored"] / tok["documents_out"]
    assert t["pass_rate"] == tok["documents_out"] / tv["documents_in"] < 1
    assert f"~{t['problems']:,} problems x" in str(e.value) and "math_traces" in str(e.value)
    assert "synthetic traces needed:" in render_plan(e.value.plan)
    # nothing augments the trace source itself: tokens only, if it is short
    assert "synthetic_traces" not in e.value.plan["per_source"]["math_traces"]


@pytest.mark.slow  # materializes through Dagster
def test_dagster_materializes_trace_validation_with_its_funnel_and_audit(tmp_path):
    """With a trace source the asset graph has trace_validation between ingest and dedup; its
    materialization shows the per-strategy funnel and the audit samples, and checks pass."""
    from dagster import AssetKey, DagsterInstance, materialize

    from workflows.definitions import build_definitions

    records = gsm8k(30)
    ref = {r["id"]: r["final_answer"] for r in records}
    rows = [{"id": f"{rid}/{v}", "text": text, "problem_id": f"{rid}/{v}", "strategy": v, "reference_answer": ref[rid]}
            for rid, v, text, _, _ in labelled_variants(records, 3)]
    spec = base_spec([{"name": "traces", "kind": "reasoning_traces",
                       "paths": [write_jsonl(tmp_path / "t.jsonl", rows)]},
                      {"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]}],
                     tmp_path)
    defs = build_definitions(write_spec(tmp_path / "spec.yaml", spec))
    assert AssetKey("trace_validation") in defs.resolve_assets_def("dedup").asset_deps[AssetKey("dedup")]
    with DagsterInstance.ephemeral() as instance:
        assets = [defs.resolve_assets_def("ingest"), defs.resolve_assets_def("trace_validation")]
        result = materialize(assets, partition_key="traces", instance=instance)
        assert result.success
        md = {k: v.value for k, v in result.asset_materializations_for_node("trace_validation")[0].metadata.items()}
        assert md["problems"] == len(rows) and md["problems_judged_by_reference"] == len(rows)
        funnel_rows = {(r.data["by"], r.data["value"]): r.data for r in md["trace_funnel"].records}
        wrong = funnel_rows["strategy", "wrong_answer"]
        assert wrong["generated"] == "30 (100.0 %) / " + wrong["generated"].split(" / ")[1]
        assert wrong["answer found"].startswith("30 ") and wrong["correct"] == "0 (0.0 %) / 0 tok (0.0 %)"
        assert "wrong_answer" in md["audit_samples"] and "computed" in md["audit_samples"]  # a bad step's detail
        funnel = {r.data["step"]: r.data["documents"] for r in md["funnel"].records}
        assert funnel["in"] == f"{len(rows):,}" and "removed: bad_step" in funnel
        assert all(c.passed for c in result.get_asset_check_evaluations())
        web = materialize(assets, partition_key="web", instance=instance)
        md = {k: v.value for k, v in web.asset_materializations_for_node("trace_validation")[0].metadata.items()}
        assert "not_judged" in md


def test_traces_needed_says_why_when_there_is_no_yield_to_measure(make_spec):
    from corpusmix.mixture.plan import traces_needed

    loaded = load_spec(make_spec([{"name": "math", "kind": "math", "paths": ["m.jsonl"]},
                                  {"name": "t", "kind": "reasoning_traces", "paths": ["t.jsonl"],
                                   "traces": {"augments": "math"}}]), check_files=False)
    [t] = traces_needed(loaded, "math", 1000.0)
    assert not t["measured"] and "not built through tokenize yet" in t["why"]
    assert traces_needed(loaded, "t", 1000.0) == []  # nothing augments the trace source


def test_a_trace_source_with_every_trace_wrong_builds_and_the_plan_says_it_yields_nothing(tmp_path):
    """A generator whose every trace is wrong: nothing passes validation, every later stage builds
    an empty source without failing, and the plan says no number of such traces closes math's
    shortfall (not that the source is unbuilt)."""
    from corpusmix.mixture.plan import PlanError, availability, make_plan
    from corpusmix.pipeline import build_all

    rows = [{"id": f"w{i}", "text": f"We compute {i}+1 = <<{i}+1={i + 1}>>{i + 1}.\n#### {i + 5}", "problem_id": f"p{i}",
             "reference_answer": str(i + 1)} for i in range(30)]
    spec = base_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0001-of-0002.jsonl.gz")]},
                      {"name": "t", "kind": "reasoning_traces", "paths": [write_jsonl(tmp_path / "t.jsonl", rows)],
                       "traces": {"augments": "math"}}], tmp_path)
    spec["mixture"] = {"total_tokens": 4_000_000, "seq_len": 512, "max_epochs": 2,
                       "schedule": {"type": "static", "weights": {"math": 1, "t": 0}}}
    loaded = load_spec(write_spec(tmp_path / "spec.yaml", spec))
    build_all(loaded, until="tokenize")
    tv = json.loads((loaded.manifest_root / "trace_validation" / "t.json").read_text())
    assert tv["counts"]["documents_out"] == 0 and tv["reasons"]["wrong_answer"]["records"] == 30
    assert json.loads((loaded.manifest_root / "tokenize" / "t.json").read_text())["counts"]["documents_out"] == 0
    with pytest.raises(PlanError) as e:
        make_plan(loaded, availability(loaded, exact_only=True))
    [t] = e.value.plan["per_source"]["math"]["synthetic_traces"]
    assert not t["measured"] and "no trace of t's 30 reached training (pass rate 0)" in t["why"]
