"""Mixture planner: the schedule integrated over the token budget, per source and per phase.

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

Baselines, usable wherever weights are expected, are computed once over the budget
from each source's available tokens n_i and documents d_i: ``equal``; ``tokens``
(n_i); ``documents`` (d_i); ``temperature`` (n_i^(1/T), the smoothing of mT5 and
XLM-R); ``unimax`` (Chung et al. 2023: the budget split uniformly across sources,
smallest first, none given more than ``max_epochs`` passes, the remainder shared by
the rest).

Allocated tokens A_i = integral of s_i over [0, B]. Each phase is split into
``CELLS`` cells, each integrated by ``GAUSS``-point Gauss-Legendre quadrature: exact
(to rounding) for step and linear shares, which are polynomials of degree <= 1, and
accurate to ~1e-12 for the smooth temperature and renormalised curves; the shares
are never just evaluated at mid-training. epochs_i = A_i / n_i. A source above
``max_epochs`` is an error, naming the source, unless ``on_over_cap:
cap_and_renormalize``: then its share is scaled down everywhere (c_i s_i, renormalised
at every point) until it is at the cap, the others absorbing the difference. The
plan also reports the synthetic tokens that would bring each source under the cap,
A_i / max_epochs - n_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from corpusmix.core.manifest import manifest_path, output_ref, read_manifest, require_manifest
from corpusmix.core.spec import Baseline, LoadedSpec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import sha256_file

NAME = "mixture_plan"
PLAN_FILE = "plan.json"

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
                    max_epochs: float) -> np.ndarray:
    """Shares (summing to 1) of hand-tuned weights or a baseline, in ``sources`` order."""
    if isinstance(weights, str):
        weights = Baseline(baseline=weights)
    if isinstance(weights, dict):
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


def build_schedule(loaded: LoadedSpec, avail: Availability) -> Schedule:
    mix = loaded.spec.mixture
    sched = mix.schedule
    sources = loaded.source_names
    B = float(mix.total_tokens)

    def shares(w) -> np.ndarray:
        return resolve_weights(w, sources, avail, B, mix.max_epochs)

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


def _capped_scale(schedule: Schedule, caps: np.ndarray) -> np.ndarray:
    """Per-source factors that bring every source to at most its cap (fixed-point iteration)."""
    scale = np.ones(len(caps))
    for _ in range(500):
        alloc = cumulative(schedule, scale)[1][-1]
        over = alloc > caps * (1 + 1e-12)
        if not over.any():
            return scale
        scale[over] *= caps[over] / alloc[over]
    return scale


def make_plan(loaded: LoadedSpec, avail: Availability) -> dict:
    """The plan as JSON-ready data; raises PlanError (carrying the plan) for a source over the cap."""
    mix = loaded.spec.mixture
    schedule = build_schedule(loaded, avail)
    sources = schedule.sources
    n = np.array([avail.tokens[s] for s in sources], dtype=np.float64)
    caps = n * mix.max_epochs
    B = float(mix.total_tokens)
    scale = None
    if mix.on_over_cap == "cap_and_renormalize":
        if caps.sum() < B:
            raise PlanError(f"the budget of {B:,.0f} tokens exceeds what every source together can give at "
                            f"max_epochs {mix.max_epochs:g} ({caps.sum():,.0f}): lower mixture.total_tokens, "
                            f"raise mixture.max_epochs, or add data")
        scale = _capped_scale(schedule, caps)
    grid, cum = cumulative(schedule, scale)
    alloc = cum[-1]
    epochs = np.divide(alloc, n, out=np.full_like(alloc, np.inf), where=n > 0)
    over = epochs > mix.max_epochs * (1 + 1e-9)
    edges = [int(np.searchsorted(grid, b)) for b in schedule.bounds]
    plan = {
        "budget": int(mix.total_tokens), "seq_len": mix.seq_len, "samples": mix.total_tokens // mix.seq_len,
        "max_epochs": mix.max_epochs, "on_over_cap": mix.on_over_cap, "seed": mix.seed,
        "availability": avail.method, "schedule": mix.schedule.model_dump(mode="json"), "sources": sources,
        "renormalized": scale is not None and bool((scale < 1).any()),
        "per_source": {s: {"allocated": float(alloc[i]), "share": float(alloc[i] / B), "available": int(n[i]),
                           "documents": int(avail.documents[s]), "epochs": float(epochs[i]),
                           "over_cap": bool(over[i]),
                           "synthetic_tokens_needed": float(max(0.0, alloc[i] / mix.max_epochs - n[i])),
                           "cap_factor": float(scale[i]) if scale is not None else 1.0}
                       for i, s in enumerate(sources)},
        "phases": [{"name": name, "start": float(schedule.bounds[p]), "end": float(schedule.bounds[p + 1]),
                    "quotas": {s: float(cum[edges[p + 1], i] - cum[edges[p], i]) for i, s in enumerate(sources)}}
                   for p, name in enumerate(schedule.phase_names)],
        "grid": {"x": grid.tolist(), "cumulative": {s: cum[:, i].tolist() for i, s in enumerate(sources)}},
    }
    if over.any():
        worst = [s for i, s in enumerate(sources) if over[i]]
        lines = [f"source {s!r} would be repeated {plan['per_source'][s]['epochs']:.2f} epochs "
                 f"({plan['per_source'][s]['allocated']:,.0f} tokens allocated, {int(n[sources.index(s)]):,} "
                 f"available), over mixture.max_epochs {mix.max_epochs:g}; it needs "
                 f"{plan['per_source'][s]['synthetic_tokens_needed']:,.0f} more tokens (e.g. synthetic) to get "
                 f"under the cap" for s in worst]
        raise PlanError("\n".join(lines) + "\nfix: lower those sources' weights, raise mixture.max_epochs, add data, "
                        "or set mixture.on_over_cap: cap_and_renormalize", plan)
    return plan


def availability(loaded: LoadedSpec, exact_only: bool = False) -> Availability:
    """What each source can supply: exact from its tokenize manifest, else (unless ``exact_only``)
    the latest earlier stage's calibrated estimate, plus one EOS per document."""
    from corpusmix.pipeline import per_source_stages

    order = per_source_stages()  # the latest stage first: tokenize counts exactly, the ones before estimate
    latest = order[: order.index("tokenize") + 1][::-1]
    tokens, documents, methods = {}, {}, set()
    for s in loaded.source_names:
        for stage in latest[:1] if exact_only else latest:
            path = manifest_path(loaded.manifest_root, stage, s)
            if path.is_file():
                c = read_manifest(path)["counts"]
                tokens[s] = c["tokens_stored"] if stage == "tokenize" else c["tokens_out"] + c["documents_out"]
                documents[s] = c["documents_out"]
                methods.add("exact (tokenize)" if stage == "tokenize" else f"estimated ({stage})")
                break
        else:
            need = "tokenize" if exact_only else "at least ingest"
            raise PlanError(f"no manifest says how many tokens source {s!r} has: materialize {need} for it first")
    return Availability(tokens, documents, ", ".join(sorted(methods)))


def plan_config(loaded: LoadedSpec, partition: None) -> dict:
    """The mixture section and the sources' qualities (a temperature schedule reads them)."""
    return {"mixture": loaded.spec.mixture.model_dump(mode="json"),
            "quality": {s: loaded.source(s).quality for s in loaded.source_names}}


def build_plan(ctx: StageRun) -> Built:
    """The plan on exact counts, as plan.json."""
    loaded = ctx.loaded
    ups = [ctx.upstream("tokenize", s) for s in loaded.source_names]
    avail = availability(loaded, exact_only=True)
    plan = make_plan(loaded, avail)
    body = orjson.dumps(plan, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    (ctx.staging / PLAN_FILE).write_bytes(body)
    out = {"name": PLAN_FILE, "rows": len(plan["sources"]), "sha256": sha256_file(ctx.staging / PLAN_FILE),
           "bytes": len(body)}
    return Built(
        inputs=[{"path": str(p.relative_to(loaded.manifest_root)), "sha256": m["content_hash"], "bytes": 0,
                 "upstream_manifest": str(p.relative_to(loaded.manifest_root))} for p, m in ups],
        outputs=[output_ref(out, "plan")],
        counts={"budget": plan["budget"], "samples": plan["samples"], "available_tokens": sum(avail.tokens.values())},
        token_counting={"method": avail.method},
        details={k: plan[k] for k in ("per_source", "phases", "renormalized", "availability")},
        summary="\n  " + render_plan(plan).replace("\n", "\n  "))


def load_plan(loaded: LoadedSpec) -> tuple[dict, dict]:
    """The plan the ``mixture_plan`` asset published, and its manifest."""
    m = require_manifest(loaded.manifest_root, NAME, None)[1]
    return orjson.loads((loaded.storage_root / m["outputs"][0]["path"]).read_bytes()), m


def render_plan(plan: dict) -> str:
    """The plan as two text tables: per source, and per phase x source quotas."""
    src = plan["sources"]
    lines = [f"budget {plan['budget']:,} tokens = {plan['samples']:,} samples of {plan['seq_len']}; "
             f"max_epochs {plan['max_epochs']:g}; availability {plan['availability']}"
             + ("; shares renormalised under the cap" if plan["renormalized"] else ""),
             "",
             f"{'source':12} {'share':>7} {'allocated':>14} {'available':>14} {'epochs':>7} {'over cap':>8} "
             f"{'synthetic needed':>17}"]
    for s in src:
        r = plan["per_source"][s]
        lines.append(f"{s:12} {r['share']:7.4f} {r['allocated']:14,.0f} {r['available']:14,} {r['epochs']:7.3f} "
                     f"{'YES' if r['over_cap'] else 'no':>8} {r['synthetic_tokens_needed']:17,.0f}")
    lines += ["", f"{'phase':16} {'tokens':>14} " + " ".join(f"{s:>12}" for s in src)]
    for ph in plan["phases"]:
        lines.append(f"{ph['name']:16} {ph['end'] - ph['start']:14,.0f} "
                     + " ".join(f"{ph['quotas'][s]:12,.0f}" for s in src))
    return "\n".join(lines)


STAGE = Stage(name=NAME, scope="global", upstream=("tokenize",), config=plan_config, build=build_plan,
              module=__name__)
