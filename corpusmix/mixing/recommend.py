"""The next phase's weights, proposed from a training run's per-source losses, and their clipping
to the repetition caps (``corpusmix.mixing.next_phase`` calls ``recommend`` then ``clip_to_caps``).

Input: the monitor log's records in file order, each ``{"step", "tokens" (cumulative), "exact",
"sources": {name: {"loss", "ema", "tokens"}}}``; a source missing from a record had 0 tokens.
The logged ``ema`` is ignored: the trainer's alpha need not be the spec's, so it is recomputed.

EMA of a source: only its *counted* records count, those with tokens > 0 and a non-null loss
(an interval without its tokens measured nothing). The first sets e = loss, each later one sets
e = alpha x loss + (1 - alpha) x e, alpha = ``monitor.ema_alpha``.

``mixmonitor``, per source with weight > 0 (a weight-0 source is "absent" and stays 0):
fewer than 2 x window counted records -> "insufficient_data", weight kept. Otherwise W_now = EMA
after the last counted record, W_prev = EMA after the one ``window`` counted records before it,
change = (W_now - W_prev) / W_prev: change > rise -> "increase", w x (1 + adjust); else
|change| < plateau -> "decrease", w x (1 - adjust); else "maintain", w. Both inequalities are
strict. The raw weights are then renormalised to sum 1.

``doremi`` (one exponentiated-gradient step per restart, Xie et al. 2023): L = the source's EMA at
its last counted record, R = its EMA over the reference log's records with tokens <= the run's
last record's tokens (the same point of training). Without either -> "insufficient_data", excess
0. excess = max(L - R, 0); w' = w x exp(eta x excess) normalised over S, the sources with w > 0;
final = (1 - smoothing) x w' + smoothing / |S|; weight-0 sources are "absent" and stay 0. The
action compares final with current: "increase", "decrease", or "maintain" within 1e-12.

Caps: a source's total allocation, tokens of the other phases + share x phase tokens, must stay
<= max_epochs x its available tokens. ``clip_to_caps`` water-fills: every violating source is
pinned at its limit share, the free ones are rescaled proportionally to fill the rest, repeated
until none violates; a proportional rescale never gives tokens to a source at share 0, which the
phase excludes, so the phase is infeasible when its sources' limits sum below 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from corpusmix.core.spec import Monitor

TIE = 1e-12


@dataclass(frozen=True)
class Recommendation:
    """One source's verdict, with the numbers behind it so that a person can check the reason."""

    source: str
    action: str  # increase | decrease | maintain | insufficient_data | absent
    reason: str
    current: float
    proposed: float  # renormalised over all sources, before the caps
    counted: int  # the run log's counted records of this source
    ema_prev: float | None = None  # mixmonitor: W_prev
    ema_now: float | None = None  # mixmonitor: W_now
    change: float | None = None  # mixmonitor: (W_now - W_prev) / W_prev
    loss: float | None = None  # doremi: L
    reference: float | None = None  # doremi: R
    excess: float | None = None  # doremi: max(L - R, 0)


def counted_losses(records: list[dict], source: str) -> list[float]:
    """A source's losses over the intervals that measured it: 0-token intervals carry no signal."""
    out = []
    for record in records:
        entry = record.get("sources", {}).get(source)
        if entry and entry.get("tokens", 0) > 0 and entry.get("loss") is not None:
            out.append(float(entry["loss"]))
    return out


def ema_trace(losses: list[float], alpha: float) -> list[float]:
    """The EMA after each counted loss: interval losses are noisy, thresholds need a smoothed curve."""
    trace: list[float] = []
    for loss in losses:
        trace.append(loss if not trace else alpha * loss + (1 - alpha) * trace[-1])
    return trace


def _absent(source: str, counted: int) -> Recommendation:
    return Recommendation(source, "absent", "weight 0: not in the current phase", 0.0, 0.0, counted)


def _mixmonitor_one(source: str, w: float, trace: list[float], m: Monitor) -> Recommendation:
    """One source's verdict with its raw (not yet renormalised) weight."""
    if w == 0:
        return _absent(source, len(trace))
    need = 2 * m.window
    if len(trace) < need:
        return Recommendation(source, "insufficient_data", f"{len(trace)} counted intervals, need 2 x window = "
                              f"{need}", w, w, len(trace))
    now, prev = trace[-1], trace[-1 - m.window]
    if prev <= 0:  # a relative change from a zero loss means nothing
        return Recommendation(source, "insufficient_data", f"EMA {prev:g} {m.window} intervals ago: no relative "
                              "change", w, w, len(trace), prev, now)
    change = (now - prev) / prev
    move = f"EMA {prev:.3f} -> {now:.3f} ({change:+.1%}) over the last {m.window} intervals"
    if change > m.rise:
        action, reason, raw = "increase", f"rising: {move}, above {m.rise:+.1%}", w * (1 + m.adjust)
    elif abs(change) < m.plateau:
        action, reason, raw = "decrease", f"plateau: {move}, within +-{m.plateau:.1%}", w * (1 - m.adjust)
    else:
        action, reason, raw = "maintain", f"healthy: {move}", w
    return Recommendation(source, action, reason, w, raw, len(trace), prev, now, change)


def _renormalised(recs: list[Recommendation]) -> list[Recommendation]:
    total = sum(r.proposed for r in recs)
    return [replace(r, proposed=r.proposed / total) for r in recs]


def _mixmonitor(records: list[dict], weights: dict[str, float], m: Monitor) -> list[Recommendation]:
    """EMA thresholds per source: feed a source whose loss rises, starve one that has stopped learning."""
    return _renormalised([_mixmonitor_one(s, w, ema_trace(counted_losses(records, s), m.ema_alpha), m)
                          for s, w in weights.items()])


def _doremi(records: list[dict], reference_records: list[dict], weights: dict[str, float],
           m: Monitor) -> list[Recommendation]:
    """Upweight the sources whose loss lags the reference run's at the same point of training."""
    seen = records[-1]["tokens"] if records else 0
    same_point = [r for r in reference_records if r["tokens"] <= seen]
    found: dict[str, tuple[int, float | None, float | None, float]] = {}
    for s in weights:
        run = ema_trace(counted_losses(records, s), m.ema_alpha)
        ref = ema_trace(counted_losses(same_point, s), m.ema_alpha)
        loss, reference = (run[-1] if run else None), (ref[-1] if ref else None)
        excess = max(loss - reference, 0.0) if loss is not None and reference is not None else 0.0
        found[s] = (len(run), loss, reference, excess)
    active = [s for s, w in weights.items() if w > 0]
    top = max(found[s][3] for s in active)  # shifting the exponent keeps exp() finite, the ratio unchanged
    grown = {s: weights[s] * math.exp(m.eta * (found[s][3] - top)) for s in active}
    total = sum(grown.values())
    out = []
    for s, w in weights.items():
        counted, loss, reference, excess = found[s]
        if w == 0:
            out.append(_absent(s, counted))
            continue
        final = (1 - m.smoothing) * grown[s] / total + m.smoothing / len(active)
        if loss is None or reference is None:
            action = "insufficient_data"
            reason = "no counted loss in the run's log" if loss is None else \
                f"no counted reference loss up to {seen:,} tokens"
        else:
            action = "maintain" if abs(final - w) <= TIE else "increase" if final > w else "decrease"
            reason = f"loss EMA {loss:.3f} vs reference {reference:.3f} at {seen:,} tokens: excess {excess:.3f}"
        out.append(Recommendation(s, action, reason, w, final, counted, loss=loss, reference=reference,
                                  excess=excess))
    return out


def recommend(records: list[dict], weights: dict[str, float], settings: Monitor,
              reference_records: list[dict] | None = None) -> list[Recommendation]:
    """The next phase's verdict per source of ``weights`` (the current phase's shares), by the spec's policy."""
    if not any(w > 0 for w in weights.values()):
        raise ValueError("no source has a positive weight in the current phase: nothing to reweight")
    if settings.policy == "mixmonitor":
        return _mixmonitor(records, weights, settings)
    if reference_records is None:
        raise ValueError("monitor.policy doremi compares with a reference run: set monitor.reference to its "
                         "monitor log")
    return _doremi(records, reference_records, weights, settings)


def proposed_weights(recs: Iterable[Recommendation]) -> dict[str, float]:
    """The weight vector the caps are applied to, keyed like the current phase's."""
    return {r.source: r.proposed for r in recs}


def clip_to_caps(shares: dict[str, float], other_tokens: dict[str, float], phase_tokens: float,
                 available: dict[str, float], max_epochs: float) -> tuple[dict[str, float], list[str]]:
    """Shares that read no source more than ``max_epochs`` times over all phases, and the sources
    pinned at their cap; the free ones keep their proportions, the policy's view of what they need."""
    if phase_tokens <= 0:
        raise ValueError(f"the phase has {phase_tokens:g} tokens: nothing to share out")
    limit = {s: max(0.0, (max_epochs * available.get(s, 0) - other_tokens.get(s, 0)) / phase_tokens)
             for s in shares}
    phase = [s for s, v in shares.items() if v > 0]
    if sum(limit[s] for s in phase) < 1 - TIE:
        detail = ", ".join(f"{s} {limit[s]:.1%}" for s in phase)
        raise ValueError(f"the repetition caps leave room for only {sum(limit[s] for s in phase):.1%} of the "
                         f"phase's tokens ({detail}): raise mixture.max_epochs or lower the phase's tokens, "
                         "or add data to these sources")
    out, pinned = dict(shares), []
    while over := [s for s in phase if s not in pinned and out[s] > limit[s] + TIE]:
        pinned += over
        free = [s for s in phase if s not in pinned]
        rest, mass = 1 - sum(limit[s] for s in pinned), sum(shares[s] for s in free)
        out.update({s: limit[s] for s in pinned})
        out.update({s: shares[s] * rest / mass for s in free})
    return out, [s for s in shares if s in pinned]


def predicted_epochs(shares: dict[str, float], other_tokens: dict[str, float], phase_tokens: float,
                     available: dict[str, float]) -> dict[str, float]:
    """How many times each source is read over all phases: what the caps bound, for the report."""
    out = {}
    for s, share in shares.items():
        allocated = other_tokens.get(s, 0) + share * phase_tokens
        have = available.get(s, 0)
        out[s] = allocated / have if have > 0 else math.inf if allocated > 0 else 0.0
    return out
