"""Mixture schedules and baselines: shares of each source as a function of tokens seen, and
their exact integral over the budget.

Weights are token shares. At every point x of training (tokens seen, 0..B with B
= ``mixture.total_tokens``) the weights are normalised to shares
s_i(x) = w_i(x) / sum_j w_j(x); a source missing from a weights map has share 0.

Schedules:

- ``static``: constant shares over the whole budget (one phase, ``all``).
- ``phases``: phase p covers [end_(p-1) B, end_p B). With ``transition: step`` its
  shares are constant inside it. With ``transition: linear`` the shares of phase p
  hold at its first token and move linearly to the shares of phase p+1 at its last
  (the last phase holds its own), as in Llama 3's staged curriculum. Shares, not raw
  weights, are interpolated, so the mixture at every point is the stated blend.
- ``linear``: shares move linearly from ``start_weights`` at x = 0 to ``end_weights``
  at x = B (one phase, ``all``).
- ``temperature``: w_i(x) = base_i q_i^(1/T(x)), q_i the source's ``quality`` and
  T moving linearly from ``t_start`` to ``t_end``; base from ``weights`` (default
  equal). Low T concentrates on high-quality sources; high T flattens.

A proposal (``weights: {proposal: NAME}``), usable wherever weights are expected, is the weights the
``mixing_proposal`` stage published under that name (laws fitted on proxy runs; see
``corpusmix.mixing``). Baselines, usable wherever weights are expected, are computed once over the budget
from each source's available tokens n_i and documents d_i: ``equal``; ``tokens``
(n_i); ``documents`` (d_i); ``temperature`` (n_i^(1/T), the smoothing of mT5 and
XLM-R); ``unimax`` (Chung et al. 2023: the budget split uniformly across sources,
smallest first, none given more than ``max_epochs`` passes, the remainder shared by
the rest).

Allocated tokens A_i = integral of s_i over [0, B]. Each phase is split into
``CELLS`` cells, each integrated by ``GAUSS``-point Gauss-Legendre quadrature: exact
(to rounding) for step and linear shares, which are polynomials of degree <= 1, and
accurate to ~1e-12 for the smooth temperature and renormalised curves; the shares
are never just evaluated at mid-training.

A new schedule is a spec model (``core.spec.Schedule``), its checks
(``core.spec_checks``) and a branch of ``build_schedule`` / ``Schedule.shares`` here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from corpusmix.core.spec import Baseline, LoadedSpec, ProposalRef

CELLS = 256
GAUSS = 8
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(GAUSS)


class PlanError(ValueError):
    """A mixture that cannot be built as specified; carries the plan for display."""

    def __init__(self, message: str, plan: dict | None = None):
        super().__init__(message)
        self.plan = plan


@dataclass(frozen=True)
class Availability:
    """Tokens (EOS included) and documents each source can supply, and how they were counted."""

    tokens: dict[str, int]
    documents: dict[str, int]
    method: str
    # per source, what an estimate made before its stages were built rests on (empty: nothing estimated so)
    notes: dict[str, str] = field(default_factory=dict)


def unimax(sizes: np.ndarray, budget: float, max_epochs: float) -> np.ndarray:
    """UniMax allocation: uniform over sources, smallest first, each capped at max_epochs passes."""
    alloc = np.zeros(len(sizes))
    remaining = float(budget)
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    for k, i in enumerate(order):
        alloc[i] = min(remaining / (len(order) - k), sizes[i] * max_epochs)
        remaining -= alloc[i]
    return alloc


def resolve_weights(weights, sources: list[str], avail: Availability, budget: float,
                    max_epochs: float, proposals: dict[str, dict] | None = None) -> np.ndarray:
    """Shares (summing to 1) of hand-tuned weights, a baseline, or a proposal (``proposals``: the
    published ``mixing_proposal`` results by name), in ``sources`` order."""
    if isinstance(weights, str):
        weights = Baseline(baseline=weights)
    if isinstance(weights, ProposalRef):
        if proposals is None or weights.proposal not in proposals:
            raise PlanError(f"no proposal {weights.proposal!r} among the published ones "
                            f"({sorted(proposals or {})}): materialize mixing_proposal first")
        w = np.array([float(proposals[weights.proposal]["weights"].get(s, 0.0)) for s in sources])
    elif isinstance(weights, dict):
        w = np.array([float(weights.get(s, 0.0)) for s in sources])
    else:
        n = np.array([avail.tokens[s] for s in sources], dtype=np.float64)
        w = {"equal": lambda: np.ones(len(sources)),
             "tokens": lambda: n,
             "documents": lambda: np.array([avail.documents[s] for s in sources], dtype=np.float64),
             "temperature": lambda: n ** (1.0 / weights.temperature),
             "unimax": lambda: unimax(n, budget, max_epochs)}[weights.baseline]()
    if not w.sum() > 0:
        raise PlanError(f"weights {weights!r} give every source a zero share (no data available?)")
    return w / w.sum()


@dataclass(frozen=True)
class Schedule:
    """Shares as a function of tokens seen, with the phase boundaries where it may jump."""

    sources: list[str]
    phase_names: list[str]
    bounds: np.ndarray  # phase edges in tokens: 0, ..., B
    kind: str
    anchors: np.ndarray  # step/linear: shares per phase (phases x sources); temperature: base shares (1 x n)
    quality: np.ndarray
    t_start: float = 1.0
    t_end: float = 1.0

    def shares(self, x: np.ndarray, phase: int, scale: np.ndarray | None = None) -> np.ndarray:
        """Shares at points ``x`` (all inside ``phase``) as rows; ``scale`` = per-source cap factors."""
        a, b = self.bounds[phase], self.bounds[phase + 1]
        t = ((x - a) / (b - a))[:, None]
        if self.kind == "step":
            s = np.repeat(self.anchors[phase][None, :], len(x), axis=0)
        elif self.kind == "linear":
            nxt = self.anchors[min(phase + 1, len(self.anchors) - 1)]
            s = (1 - t) * self.anchors[phase] + t * nxt
        else:  # temperature
            temp = self.t_start + (self.t_end - self.t_start) * (x / self.bounds[-1])[:, None]
            s = self.anchors[0] * self.quality ** (1.0 / temp)
            s = s / s.sum(axis=1, keepdims=True)
        if scale is not None:
            s = s * scale
            s = s / s.sum(axis=1, keepdims=True)
        return s


def build_schedule(loaded: LoadedSpec, avail: Availability, proposals: dict[str, dict] | None = None) -> Schedule:
    mix = loaded.spec.mixture
    sched = mix.schedule
    sources = loaded.source_names
    B = float(mix.total_tokens)

    def shares(w) -> np.ndarray:
        return resolve_weights(w, sources, avail, B, mix.max_epochs, proposals)

    quality = np.array([loaded.source(s).quality for s in sources])
    if sched.type == "static":
        return Schedule(sources, ["all"], np.array([0.0, B]), "step", shares(sched.weights)[None, :], quality)
    if sched.type == "linear":
        # one phase whose start anchor moves to the end anchor: the linear kind with two anchors
        anchors = np.stack([shares(sched.start_weights), shares(sched.end_weights)])
        return Schedule(sources, ["all"], np.array([0.0, B]), "linear", anchors, quality)
    if sched.type == "temperature":
        base = shares(sched.weights if sched.weights is not None else "equal")
        return Schedule(sources, ["all"], np.array([0.0, B]), "temperature", base[None, :], quality,
                        sched.t_start, sched.t_end)
    bounds = np.array([0.0] + [ph.end * B for ph in sched.phases])
    anchors = np.stack([shares(ph.weights) for ph in sched.phases])
    return Schedule(sources, [ph.name for ph in sched.phases], bounds, sched.transition, anchors, quality)


def cumulative(schedule: Schedule, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grid of token positions (CELLS per phase) and the cumulative target tokens per source there."""
    xs, cum = [np.zeros(1)], [np.zeros((1, len(schedule.sources)))]
    total = np.zeros(len(schedule.sources))
    for p in range(len(schedule.phase_names)):
        edges = np.linspace(schedule.bounds[p], schedule.bounds[p + 1], CELLS + 1)
        half = (edges[1:] - edges[:-1]) / 2
        mid = (edges[1:] + edges[:-1]) / 2
        nodes = (mid[:, None] + half[:, None] * _NODES[None, :]).ravel()
        s = schedule.shares(nodes, p, scale).reshape(CELLS, GAUSS, -1)
        per_cell = (s * _WEIGHTS[None, :, None]).sum(axis=1) * half[:, None]
        c = total + np.cumsum(per_cell, axis=0)
        total = c[-1]
        xs.append(edges[1:])
        cum.append(c)
    return np.concatenate(xs), np.concatenate(cum)


def capped_scale(schedule: Schedule, caps: np.ndarray) -> np.ndarray:
    """Per-source factors that bring every source to at most its cap (fixed-point iteration)."""
    scale = np.ones(len(caps))
    for _ in range(500):
        alloc = cumulative(schedule, scale)[1][-1]
        over = alloc > caps * (1 + 1e-12)
        if not over.any():
            return scale
        scale[over] *= caps[over] / alloc[over]
    return scale
