"""The mixture planner as pure functions: exact integration, baselines, the epoch cap."""

from __future__ import annotations

import numpy as np
import pytest

from corpusmix.core.spec import load_spec
from corpusmix.mixture.plan import make_plan, render_plan
from corpusmix.mixture.schedules import Availability, PlanError, unimax

from .conftest import CORPUS

MATH = str(CORPUS / "math" / "*.jsonl.gz")


def _loaded(make_spec, schedule: dict, total: int = 1000, **mixture):
    sources = [{"name": n, "kind": "math", "paths": [MATH], "quality": q} for n, q in (("a", 1.0), ("b", 0.5),
                                                                                      ("c", 0.25))]
    return load_spec(make_spec(sources, mixture={"total_tokens": total, "seq_len": 10, "schedule": schedule,
                                                 **mixture}))


AMPLE = Availability({"a": 10**9, "b": 10**9, "c": 10**9}, {"a": 10, "b": 100, "c": 1000}, "test")


def _alloc(plan):
    return {s: r["allocated"] for s, r in plan["per_source"].items()}


THREE_PHASES = [{"name": "p1", "end": 0.5, "weights": {"a": 1, "b": 1}},
                {"name": "p2", "end": 0.8, "weights": {"a": 1, "c": 3}},
                {"name": "p3", "end": 1.0, "weights": {"b": 1}}]


def test_three_phase_linear_schedule_is_integrated_exactly(make_spec):
    plan = make_plan(_loaded(make_spec, {"type": "phases", "transition": "linear", "phases": THREE_PHASES}), AMPLE)
    # shares at phase starts: p1 (a .5, b .5), p2 (a .25, c .75), p3 (b 1); linear between, p3 flat.
    # phase quota = phase length x mean of its two end shares (trapezoid: exact for linear shares)
    want = {"p1": {"a": 500 * (0.5 + 0.25) / 2, "b": 500 * 0.5 / 2, "c": 500 * 0.75 / 2},
            "p2": {"a": 300 * 0.25 / 2, "b": 300 * 1.0 / 2, "c": 300 * 0.75 / 2},
            "p3": {"a": 0.0, "b": 200.0, "c": 0.0}}
    for ph in plan["phases"]:
        for s, q in want[ph["name"]].items():
            assert ph["quotas"][s] == pytest.approx(q, abs=1e-9)
    assert _alloc(plan) == pytest.approx({"a": 225.0, "b": 475.0, "c": 300.0}, abs=1e-9)
    # evaluating the shares once, at mid-training (x = 500: a .25, b 0, c .75), would be wrong
    assert _alloc(plan)["b"] != pytest.approx(0.0 * 1000)
    assert sum(_alloc(plan).values()) == pytest.approx(1000)


def test_step_and_linear_start_to_end(make_spec):
    step = make_plan(_loaded(make_spec, {"type": "phases", "transition": "step", "phases": THREE_PHASES}), AMPLE)
    assert _alloc(step) == pytest.approx({"a": 250 + 75, "b": 250 + 200, "c": 225}, abs=1e-9)
    lin = make_plan(_loaded(make_spec, {"type": "linear", "start_weights": {"a": 1}, "end_weights": {"b": 1, "c": 1}}),
                    AMPLE)
    assert _alloc(lin) == pytest.approx({"a": 500, "b": 250, "c": 250}, abs=1e-9)
    assert [ph["name"] for ph in lin["phases"]] == ["all"]


def test_unimax_allocation_and_baseline():
    assert unimax(np.array([100.0, 1000.0, 10000.0]), 3000, 2).tolist() == [200, 1400, 1400]
    # nobody capped: uniform
    assert unimax(np.array([5000.0, 5000.0]), 3000, 1).tolist() == [1500, 1500]


def test_unimax_temperature_and_size_baselines_in_a_plan(make_spec):
    avail = Availability({"a": 100, "b": 1000, "c": 10000}, {"a": 1, "b": 4, "c": 5}, "test")
    uni = make_plan(_loaded(make_spec, {"type": "static", "weights": "unimax"}, total=3000, max_epochs=2), avail)
    assert _alloc(uni) == pytest.approx({"a": 200, "b": 1400, "c": 1400})
    assert uni["per_source"]["a"]["epochs"] == pytest.approx(2.0)
    temp = make_plan(_loaded(make_spec, {"type": "static", "weights": {"baseline": "temperature", "temperature": 2}},
                             total=3000, max_epochs=100), avail)
    w = np.sqrt([100, 1000, 10000])
    assert list(_alloc(temp).values()) == pytest.approx((3000 * w / w.sum()).tolist())
    for name, weights in (("tokens", [100, 1000, 10000]), ("documents", [1, 4, 5]), ("equal", [1, 1, 1])):
        p = make_plan(_loaded(make_spec, {"type": "static", "weights": name}, total=300, max_epochs=100), avail)
        assert list(_alloc(p).values()) == pytest.approx((300 * np.array(weights) / sum(weights)).tolist())


def test_temperature_on_quality_schedule(make_spec):
    # constant T: shares proportional to q^(1/T) exactly
    const = make_plan(_loaded(make_spec, {"type": "temperature", "t_start": 0.5, "t_end": 0.5}), AMPLE)
    q = np.array([1.0, 0.5, 0.25]) ** 2
    assert list(_alloc(const).values()) == pytest.approx((1000 * q / q.sum()).tolist(), rel=1e-12)
    # T moving 0.5 -> 4: against a dense numerical integral of the same curve
    moving = make_plan(_loaded(make_spec, {"type": "temperature", "t_start": 0.5, "t_end": 4.0}), AMPLE)
    x = np.linspace(0, 1000, 2_000_001)
    t = 0.5 + 3.5 * x / 1000
    s = np.array([1.0, 0.5, 0.25])[None, :] ** (1 / t[:, None])
    s /= s.sum(axis=1, keepdims=True)
    dense = ((s[1:] + s[:-1]) / 2 * np.diff(x)[:, None]).sum(axis=0)
    assert list(_alloc(moving).values()) == pytest.approx(dense.tolist(), rel=1e-9)
    # low T early favours the high-quality source more than high T late
    assert _alloc(moving)["a"] > 1000 / 3


def test_over_the_epoch_cap_is_an_error_naming_the_source(make_spec):
    small = Availability({"a": 100, "b": 10**6, "c": 10**6}, {"a": 1, "b": 1, "c": 1}, "test")
    loaded = _loaded(make_spec, {"type": "static", "weights": {"a": 1, "b": 1, "c": 2}}, total=1000, max_epochs=2)
    with pytest.raises(PlanError) as e:
        make_plan(loaded, small)
    msg = str(e.value)
    assert "source 'a'" in msg and "2.50 epochs" in msg and "max_epochs 2" in msg and "cap_and_renormalize" in msg
    r = e.value.plan["per_source"]["a"]
    assert r["over_cap"] and r["synthetic_tokens_needed"] == pytest.approx(250 / 2 - 100)
    assert "YES" in render_plan(e.value.plan)


def test_cap_and_renormalize_holds_the_cap_and_the_budget(make_spec):
    small = Availability({"a": 100, "b": 10**6, "c": 10**6}, {"a": 1, "b": 1, "c": 1}, "test")
    loaded = _loaded(make_spec, {"type": "phases", "transition": "linear", "phases": THREE_PHASES}, total=1000,
                     max_epochs=1, on_over_cap="cap_and_renormalize")
    plan = make_plan(loaded, small)
    a = plan["per_source"]["a"]
    assert a["allocated"] == pytest.approx(100, rel=1e-9) and a["epochs"] == pytest.approx(1.0, rel=1e-9)
    assert not a["over_cap"] and plan["renormalized"]
    assert sum(_alloc(plan).values()) == pytest.approx(1000, rel=1e-12)
    assert sum(sum(ph["quotas"].values()) for ph in plan["phases"]) == pytest.approx(1000, rel=1e-12)
    # b and c keep their relative shares where a had none (p3 is b alone)
    assert plan["phases"][2]["quotas"]["b"] == pytest.approx(200, rel=1e-9)
    tiny = Availability({"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}, "test")
    with pytest.raises(PlanError, match="exceeds what every source together can give"):
        make_plan(loaded, tiny)


@pytest.mark.parametrize("example", ["three-phase-curriculum", "code-heavy", "math-science"])
def test_example_specs_validate_and_plan(example):
    from .conftest import REPO

    loaded = load_spec(REPO / "specs" / "examples" / f"{example}.yaml")
    # the dev corpus after quality filtering, as tokenize counts it with GPT-2
    tokens = {"wiki": 2912168, "web": 626375, "books": 3478729, "code": 9925745, "math": 1346271,
              "dialogue": 1364779}
    docs = {"wiki": 770, "web": 860, "books": 787, "code": 1233, "math": 8792, "dialogue": 11479}
    plan = make_plan(loaded, Availability(tokens, docs, "test"))
    assert sum(r["allocated"] for r in plan["per_source"].values()) == pytest.approx(loaded.spec.mixture.total_tokens)


def test_plan_cli_before_any_build_plans_from_estimates_and_says_so(make_spec):
    """Before any build: a plan from the raw files, every count labelled an estimate, exit 0. After
    ingest: that stage's count (still labelled), no raw-file estimate. The raw estimate is the exact
    count when every document is encoded, and within 2 % of it with the default subsample."""
    import subprocess
    import sys

    from corpusmix.core.manifest import manifest_path, read_manifest
    from corpusmix.mixture import estimate
    from corpusmix.pipeline import run_stage

    one = str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")
    spec = make_spec([{"name": "a", "kind": "math", "paths": [one]}, {"name": "b", "kind": "web", "paths": [
        str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]}], mixture={"total_tokens": 100_000, "seq_len": 512,
                                                                      "schedule": {"type": "static", "weights": "equal"}})
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", str(spec)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "availability ESTIMATED from the raw input files (nothing built yet)" in r.stdout
    assert "NOTE: the available token counts, and so the epochs, are estimates" in r.stdout
    assert "  a: 1 of 1 file(s) read" in r.stdout and "before dedup and quality filters" in r.stdout
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", str(spec), "--json"], capture_output=True,
                       text=True)
    shown = __import__("json").loads(r.stdout)
    assert set(shown["estimated_from_raw_files"]) == {"a", "b"} and shown["availability"].startswith("ESTIMATED")

    loaded = load_spec(spec)
    m, _ = run_stage("ingest", loaded, "a", progress=lambda x: None)
    assert m["token_counting"]["method"] == "exact"
    whole = estimate._count_file(loaded, "a", CORPUS / "math" / "math-0000-of-0002.jsonl.gz", encode_bytes=1 << 40)
    assert whole == (m["counts"]["tokens_out"], m["counts"]["documents_out"])
    e = estimate.raw_estimate(loaded, "a")
    assert e.documents == m["counts"]["documents_out"]
    exact = m["counts"]["tokens_out"] + m["counts"]["documents_out"]
    assert abs(e.tokens - exact) / exact < 0.02, (e.tokens, exact)

    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", str(spec), "--json"], capture_output=True,
                       text=True)
    shown = __import__("json").loads(r.stdout)
    assert shown["availability"] == "ESTIMATED from the raw input files (nothing built yet), exact (ingest)"
    assert set(shown["estimated_from_raw_files"]) == {"b"} and shown["per_source"]["a"]["available"] == exact
    assert read_manifest(manifest_path(loaded.manifest_root, "ingest", "a"))["counts"]["tokens_out"] > 0


def test_sample_indices_spread_over_the_source():
    from corpusmix.mixture.estimate import sample_indices

    assert sample_indices([]) == []
    assert sample_indices([5, 5, 5], budget=100) == [0, 1, 2]  # small: every file
    assert sample_indices([1] * 100, budget=10) == list(range(0, 100, 10))  # every 10th, not the first ten
    assert sample_indices([1000, 1, 1], budget=10) == [0]  # at least one file, even a big one


def test_plan_after_a_build_uses_the_exact_counts(built_corpus):
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", str(built_corpus.path), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["availability"] == "exact (tokenize)" and "estimated_from_raw_files" not in shown
    from corpusmix.core.manifest import manifest_path, read_manifest

    for s in built_corpus.source_names:
        m = read_manifest(manifest_path(built_corpus.manifest_root, "tokenize", s))
        assert shown["per_source"][s]["available"] == m["counts"]["tokens_stored"]
    r = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", str(built_corpus.path)], capture_output=True,
                       text=True)
    assert "availability exact (tokenize)" in r.stdout and "estimates" not in r.stdout


def test_schedule_picture_draws_each_source_share(make_spec):
    import re

    from corpusmix.ops.report import schedule_svg

    plan = make_plan(_loaded(make_spec, {"type": "phases", "transition": "linear", "phases": THREE_PHASES}), AMPLE)
    svg = schedule_svg(plan, width=720, height=300)
    lines = re.findall(r'<polyline [^>]*points="([^"]+)"', svg)
    assert len(lines) == 3 and svg.count("stroke-dasharray") == 3  # one line per source, one dash per phase end
    # source a: share 0.5 at the start, 0.25 at the p1/p2 boundary, 0 in p3 (plot area: y = 20 + 240 (1 - share))
    ys = [float(p.split(",")[1]) for p in lines[0].split()]
    assert ys[0] == pytest.approx(20 + 240 * 0.5, abs=1.0) and ys[-1] == pytest.approx(260, abs=0.5)
    assert all(name in svg for name in ("p1", "p2", "p3", ">a<", ">b<", ">c<"))


def test_an_empty_source_with_no_weight_has_zero_epochs_and_one_with_weight_is_over_the_cap(make_spec, tmp_path):
    empty = Availability({"a": 10**6, "b": 0, "c": 10**6}, {"a": 10, "b": 0, "c": 10}, "test")
    for on_over_cap in ("error", "cap_and_renormalize"):
        loaded = _loaded(make_spec, {"type": "static", "weights": {"a": 1, "c": 1}}, on_over_cap=on_over_cap)
        plan = make_plan(loaded, empty)
        assert plan["per_source"]["b"]["epochs"] == 0.0 and plan["per_source"]["b"]["allocated"] == 0.0
        assert not plan["per_source"]["b"]["over_cap"]
    with pytest.raises(PlanError, match="'b' would be repeated inf epochs") as e:
        make_plan(_loaded(make_spec, {"type": "static", "weights": {"a": 1, "b": 1}}), empty)
    assert e.value.plan["per_source"]["b"]["epochs"] == float("inf")


def test_plan_json_names_an_infinite_value(make_spec):
    """`corpusmix plan --json` of a plan that cannot be built: infinite epochs read as "inf", not null."""
    import orjson

    from corpusmix.cli import _finite_or_named

    empty = Availability({"a": 10**6, "b": 0, "c": 10**6}, {"a": 10, "b": 0, "c": 10}, "test")
    with pytest.raises(PlanError) as e:
        make_plan(_loaded(make_spec, {"type": "static", "weights": {"a": 1, "b": 1}}), empty)
    shown = orjson.loads(orjson.dumps(_finite_or_named(e.value.plan)))
    assert shown["per_source"]["b"]["epochs"] == "inf" and float(shown["per_source"]["b"]["epochs"]) == float("inf")
    assert shown["per_source"]["a"]["epochs"] == e.value.plan["per_source"]["a"]["epochs"]
