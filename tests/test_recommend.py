"""Next-phase recommendations from hand-built loss logs: each mixmonitor threshold crossed and met
exactly, the EMA recomputed with the spec's alpha, DoReMi's update worked by hand, and the
repetition caps water-filled or refused."""

from __future__ import annotations

import math

import pytest

from corpusmix.core.spec import Monitor
from corpusmix.mixing.recommend import (
    clip_to_caps,
    counted_losses,
    ema_trace,
    predicted_epochs,
    proposed_weights,
    recommend,
)

GAP = None  # an interval in which the source had no tokens


def log(histories: dict[str, list[float | None]], per_interval: int = 100) -> list[dict]:
    """Monitor records, one per interval; the logged ema is garbage so that using it would show."""
    n = max(len(h) for h in histories.values())
    return [{"step": i + 1, "tokens": (i + 1) * per_interval, "exact": True,
             "sources": {s: {"loss": h[i], "ema": -1.0, "tokens": 10}
                         for s, h in histories.items() if i < len(h) and h[i] is not GAP}}
            for i in range(n)]


def by_source(recs) -> dict:
    return {r.source: r for r in recs}


def mm(**kw) -> Monitor:
    return Monitor(**{"ema_alpha": 1.0, "window": 2, "rise": 0.02, "plateau": 0.005, "adjust": 0.2, **kw})


def test_ema_is_recomputed_with_the_spec_alpha():
    # e = 4; 0.25*3 + 0.75*4 = 3.75; 0.25*2 + 0.75*3.75 = 3.3125
    assert ema_trace([4.0, 3.0, 2.0], 0.25) == pytest.approx([4.0, 3.75, 3.3125])
    r = by_source(recommend(log({"web": [4.0, 3.0, 2.0]}), {"web": 1.0}, mm(ema_alpha=0.25, window=1)))["web"]
    assert (r.ema_prev, r.ema_now, r.counted) == (pytest.approx(3.75), pytest.approx(3.3125), 3)
    assert r.change == pytest.approx(3.3125 / 3.75 - 1)
    assert r.action == "maintain"


def test_the_spec_alpha_decides_the_verdict():
    # the last interval's jump is +10%, but its alpha = 0.1 EMA rises only 3.0 -> 3.03 (+1%)
    records = log({"web": [3.0, 3.0, 3.0, 3.3]})
    assert by_source(recommend(records, {"web": 1.0}, mm(window=1)))["web"].action == "increase"
    slow = by_source(recommend(records, {"web": 1.0}, mm(window=1, ema_alpha=0.1)))["web"]
    assert slow.ema_now == pytest.approx(3.03) and slow.action == "maintain"


def test_rising_plateau_and_healthy_sources_are_reweighted_and_renormalised():
    records = log({"code": [3.0, 3.0, 3.1, 3.2, 3.3],      # EMA 3.1 -> 3.3: +6.5%
                   "web": [3.0, 3.0, 3.0, 3.0, 3.01],       # 3.0 -> 3.01: +0.33%
                   "books": [3.0, 2.9, 2.8, 2.7, 2.6]})     # 2.8 -> 2.6: -7.1%
    recs = by_source(recommend(records, {"code": 0.5, "web": 0.3, "books": 0.2}, mm()))
    assert {s: r.action for s, r in recs.items()} == {"code": "increase", "web": "decrease", "books": "maintain"}
    assert recs["code"].reason == ("rising: EMA 3.100 -> 3.300 (+6.5%) over the last 2 intervals, above +2.0%")
    assert recs["web"].reason.startswith("plateau: EMA 3.000 -> 3.010 (+0.3%)")
    assert recs["books"].reason.startswith("healthy:")
    raw = {"code": 0.5 * 1.2, "web": 0.3 * 0.8, "books": 0.2}  # sums to 1.04
    expected = {s: v / 1.04 for s, v in raw.items()}
    assert proposed_weights(recs.values()) == pytest.approx(expected)
    assert sum(proposed_weights(recs.values()).values()) == pytest.approx(1.0)
    assert recs["code"].current == 0.5


def test_thresholds_are_strict():
    # binary-exact losses: (3.1875 - 3.125) / 3.125 is exactly the float 0.02, +-1/64 / 3.125 exactly 0.005
    records = log({"rise": [3.125, 3.125, 3.125, 3.1875],
                   "up": [3.125, 3.125, 3.125, 3.140625],
                   "down": [3.125, 3.125, 3.125, 3.109375],
                   "just_up": [3.125, 3.125, 3.125, 3.1876]})
    recs = by_source(recommend(records, {s: 0.25 for s in ("rise", "up", "down", "just_up")}, mm(window=1)))
    assert recs["rise"].change == 0.02 and recs["rise"].action == "maintain"
    assert recs["up"].change == 0.005 and recs["up"].action == "maintain"
    assert recs["down"].change == -0.005 and recs["down"].action == "maintain"
    assert recs["just_up"].action == "increase"


def test_intervals_without_tokens_do_not_count():
    records = log({"full": [3.0, 3.0, 3.0, 3.0, 3.0, 3.5],
                   "gappy": [3.0, GAP, 3.0, 3.0, GAP, 3.3]})
    records[2]["sources"]["gappy"] = {"loss": None, "ema": None, "tokens": 10}   # no loss: not counted
    records[3]["sources"]["gappy"] = {"loss": 9.0, "ema": 9.0, "tokens": 0}      # no tokens: not counted
    assert counted_losses(records, "gappy") == [3.0, 3.3]
    recs = by_source(recommend(records, {"full": 0.6, "gappy": 0.4}, mm(window=3)))
    assert recs["full"].action == "increase" and recs["full"].counted == 6
    assert recs["gappy"].action == "insufficient_data" and recs["gappy"].counted == 2
    assert "need 2 x window = 6" in recs["gappy"].reason
    assert recs["gappy"].proposed == pytest.approx(0.4 / (0.6 * 1.2 + 0.4))
    # with window 1, the two counted records are compared directly, whatever lies between them
    assert by_source(recommend(records, {"gappy": 1.0}, mm(window=1)))["gappy"].ema_prev == 3.0


def test_too_few_intervals_keep_the_weight():
    recs = by_source(recommend(log({"web": [3.0] * 9, "code": [3.0, 3.5, 4.0]}), {"web": 0.5, "code": 0.5},
                               mm(window=5)))
    assert {s: r.action for s, r in recs.items()} == {"web": "insufficient_data", "code": "insufficient_data"}
    assert proposed_weights(recs.values()) == {"web": 0.5, "code": 0.5}


def test_a_source_outside_the_phase_stays_out():
    records = log({"web": [3.0, 3.0, 3.0, 3.0], "code": [3.0, 3.0, 3.5, 4.0]})
    recs = by_source(recommend(records, {"web": 1.0, "code": 0.0}, mm()))
    assert recs["code"].action == "absent" and recs["code"].proposed == 0.0
    assert recs["web"].action == "decrease" and recs["web"].proposed == pytest.approx(1.0)


def test_no_positive_weight_is_refused():
    with pytest.raises(ValueError, match="positive weight"):
        recommend(log({"web": [3.0]}), {"web": 0.0}, mm())


def doremi(**kw) -> Monitor:
    return Monitor(**{"policy": "doremi", "ema_alpha": 0.5, "eta": 1.0, "smoothing": 0.1, **kw})


def test_doremi_upweights_excess_loss_over_the_reference_at_the_same_point():
    run = log({"a": [4.0, 3.0], "b": [2.2] * 3, "c": [1.5] * 3, "e": [2.0] * 3, "d": [5.0] * 3})
    # past the run's 300 tokens the reference is ignored: its 9.0s would erase a's excess
    reference = log({"a": [3.0, 3.0, 3.0, 9.0, 9.0], "b": [2.0] * 3, "c": [1.7] * 3, "d": [1.0] * 3})
    weights = {"a": 0.4, "b": 0.3, "c": 0.2, "e": 0.1, "d": 0.0}
    recs = by_source(recommend(run, weights, doremi(), reference))
    assert (recs["a"].loss, recs["a"].reference, recs["a"].excess) == (3.5, 3.0, 0.5)   # 0.5*3 + 0.5*4
    assert recs["b"].excess == pytest.approx(0.2)
    assert recs["c"].excess == 0.0 and recs["e"].excess == 0.0   # below its reference; no reference
    grown = {"a": 0.4 * math.exp(0.5), "b": 0.3 * math.exp(0.2), "c": 0.2, "e": 0.1}
    total = sum(grown.values())
    expected = {s: 0.9 * g / total + 0.1 / 4 for s, g in grown.items()} | {"d": 0.0}
    assert proposed_weights(recs.values()) == pytest.approx(expected)
    assert proposed_weights(recs.values())["a"] == pytest.approx(0.47265, abs=1e-5)
    assert {s: r.action for s, r in recs.items()} == {"a": "increase", "b": "decrease", "c": "decrease",
                                                      "e": "insufficient_data", "d": "absent"}
    assert recs["a"].reason == "loss EMA 3.500 vs reference 3.000 at 300 tokens: excess 0.500"


def test_doremi_without_excess_keeps_a_uniform_mixture():
    run, reference = log({"a": [2.0], "b": [2.0]}), log({"a": [2.5], "b": [2.0]})
    recs = recommend(run, {"a": 0.5, "b": 0.5}, doremi(), reference)
    assert [r.action for r in recs] == ["maintain", "maintain"]
    assert proposed_weights(recs) == pytest.approx({"a": 0.5, "b": 0.5})


def test_doremi_large_steps_stay_finite():
    run, reference = log({"a": [8.0], "b": [2.0]}), log({"a": [3.0], "b": [2.0]})
    recs = proposed_weights(recommend(run, {"a": 0.5, "b": 0.5}, doremi(eta=1000.0, smoothing=0.0), reference))
    assert recs == pytest.approx({"a": 1.0, "b": 0.0})


def test_doremi_needs_the_reference_log():
    with pytest.raises(ValueError, match="monitor.reference"):
        recommend(log({"a": [2.0]}), {"a": 1.0}, doremi())


SHARES = {"web": 0.5, "code": 0.3, "books": 0.2}


def test_caps_pin_the_binding_source_and_refill_the_others_proportionally():
    # web: (2 x 200 - 100 already read) / 1000 = 0.3; the other 0.7 goes 3:2 to code and books
    shares, binding = clip_to_caps(SHARES, {"web": 100}, 1000, {"web": 200, "code": 1000, "books": 1000}, 2.0)
    assert binding == ["web"]
    assert shares == pytest.approx({"web": 0.3, "code": 0.42, "books": 0.28})


def test_caps_repeat_until_none_binds():
    # code's limit 0.4 binds only after web's excess flowed to it
    shares, binding = clip_to_caps(SHARES, {"web": 100}, 1000, {"web": 200, "code": 200, "books": 1000}, 2.0)
    assert binding == ["web", "code"]
    assert shares == pytest.approx({"web": 0.3, "code": 0.4, "books": 0.3})


def test_caps_leave_a_feasible_mixture_alone():
    assert clip_to_caps(SHARES, {}, 1000, {s: 1000 for s in SHARES}, 1.0) == (SHARES, [])


def test_infeasible_caps_name_the_sources_and_the_fix():
    with pytest.raises(ValueError, match=r"books 20\.0%.*raise mixture\.max_epochs"):
        clip_to_caps(SHARES, {"web": 100}, 1000, {"web": 200, "code": 200, "books": 100}, 2.0)
    # a source the phase excludes is not filled, however much room it has
    with pytest.raises(ValueError, match="web"):
        clip_to_caps({"web": 1.0, "code": 0.0}, {}, 1000, {"web": 250, "code": 10**6}, 2.0)


def test_predicted_epochs():
    epochs = predicted_epochs({"web": 0.3, "code": 0.7, "books": 0.0}, {"web": 100}, 1000,
                              {"web": 200, "code": 0, "books": 0})
    assert epochs == {"web": 2.0, "code": math.inf, "books": 0.0}
