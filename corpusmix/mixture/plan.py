"""The mixture_plan stage: the schedule integrated over the token budget, per source and per phase.

Allocated tokens A_i = integral of source i's share over [0, B] (``schedules``).
epochs_i = A_i / n_i. A source above ``max_epochs`` is an error, naming the source,
unless ``on_over_cap: cap_and_renormalize``: then its share is scaled down everywhere
(c_i s_i, renormalised at every point) until it is at the cap, the others absorbing
the difference. The plan also reports the synthetic tokens that would let each source
take its scheduled share under the cap, A_i / max_epochs - n_i (A_i before any capping),
and, where a reasoning_traces source ``augments`` it, how many problems x traces would
give those tokens at that source's measured yield (``traces_needed``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import orjson

from corpusmix.core.manifest import manifest_path, manifest_refs, output_ref, read_manifest, require_manifest
from corpusmix.core.spec import (
    NEXT_PHASE,
    LoadedSpec,
    ProposalRef,
    Spec,
    field_path,
    named_proposals,
    next_phase_proposals,
    schedule_weights,
)
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import sha256_file
from corpusmix.mixture.schedules import CELLS, Availability, PlanError, build_schedule, capped_scale, cumulative

NAME = "mixture_plan"
PLAN_FILE = "plan.json"


PROPOSAL_STAGE = "mixing_proposal"
SUBSET_STREAM = 1 << 40  # the subset's permutation stream: apart from every epoch's (epochs are small numbers)


def source_key(name: str) -> int:
    """A source's seed material: its name hashed, so seeds do not depend on the source's position."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def source_subset(seed: int, source: str, sizes: np.ndarray, fraction: float) -> np.ndarray:
    """The documents (sorted indices) a mixture may draw from a source under ``mixture.subsample``:
    the first of a seeded permutation whose tokens reach ``fraction`` of the source's, at least one;
    every document at 1. The same seed, source and store give the same subset in the plan and the shards."""
    n = len(sizes)
    if fraction >= 1 or n == 0:
        return np.arange(n)
    perm = np.random.default_rng([seed, source_key(source), SUBSET_STREAM]).permutation(n)
    k = int(np.searchsorted(np.cumsum(sizes[perm]), fraction * float(sizes.sum()), side="left")) + 1
    return np.sort(perm[:min(k, n)])


def store_sizes(loaded: LoadedSpec, source: str, manifest: dict) -> np.ndarray:
    """Tokens (EOS included) of each document of a source's train store, from its index."""
    from corpusmix.core.indexed import IndexedReader

    out = {o["kind"]: o for o in manifest["outputs"]}
    return np.asarray(IndexedReader((loaded.storage_root / out["token_bin"]["path"]).with_suffix("")).index.sizes,
                      np.int64)


def published_proposals(loaded: LoadedSpec) -> tuple[dict, str] | None:
    """The mixtures ``mixing_proposal`` published (its proposals.json) and its version, or None when
    the spec names no proposal; a PlanError naming the stage to build when it names one that is not
    published. Read as data, so the plan's code does not depend on how proposals are made."""
    if not named_proposals(loaded.spec):
        return None
    path = manifest_path(loaded.manifest_root, PROPOSAL_STAGE, None)
    if not path.is_file():
        raise PlanError(f"the schedule names proposal(s) {named_proposals(loaded.spec)} and no {PROPOSAL_STAGE} "
                        f"manifest is at {path}: materialize {PROPOSAL_STAGE} first (it needs mixing.runs)")
    m = read_manifest(path)
    out = [o for o in m["outputs"] if o["kind"] == "proposals"]
    if not out:
        raise PlanError(f"{PROPOSAL_STAGE} ({path}) published no proposals; set mixing.runs and build it again")
    return orjson.loads((loaded.storage_root / out[0]["path"]).read_bytes()), m["version"]


def accepted_next_phase(loaded: LoadedSpec) -> dict[str, dict]:
    """The next-phase proposals the schedule names, by name, each checked to be used for the phase it
    was made for (a proposal's weights answer that phase's losses, not another's)."""
    from corpusmix.mixing.next_phase import load_proposal

    out = {}
    for loc, name in next_phase_proposals(loaded.spec):
        try:
            body = load_proposal(loaded, name)
        except (OSError, ValueError) as e:
            raise PlanError(f"{field_path(loc)}: {e}") from e
        if loc[2:3] != ("phases",) or loc[3] != body["phase_index"]:
            raise PlanError(f"{field_path(loc)}: {name} was proposed for mixture.schedule.phases"
                            f"[{body['phase_index']}] (phase {body['phase']!r}); use it there")
        out[name] = body
    return out


def weights_origin(loaded: LoadedSpec, published: tuple[dict, str] | None, accepted: dict[str, dict]) -> list[dict]:
    """Where each weights entry of the schedule came from: typed by hand, a baseline, a proposal
    (with the laws behind it and its predicted objective against the natural mixture), or a
    next-phase proposal (the policy, the log it read, and each source's verdict)."""
    out = []
    for loc, w in schedule_weights(loaded.spec.mixture.schedule):
        field = field_path(loc)
        if isinstance(w, ProposalRef) and w.proposal.startswith(NEXT_PHASE):
            p = accepted[w.proposal]
            out.append({"field": field, "origin": "next-phase proposal", "proposal": w.proposal,
                        "policy": p["policy"], "log": p["log"], "restart_tokens": p["restart_tokens"],
                        "actions": {r["source"]: r["action"] for r in p["recommendations"]},
                        "weights": {s: p["weights"][s] for s in loaded.source_names}})
        elif isinstance(w, ProposalRef):
            result, version = published
            p, fit = result["proposals"][w.proposal], result["fit"]
            out.append({"field": field, "origin": "proposal", "proposal": w.proposal, "method": p["description"],
                        "mixing_proposal_version": version, "mixing_fit_version": fit["version"],
                        "regressor": fit["regressor"], "runs": fit["runs"], "cv_objective_rho": fit["cv_objective_rho"],
                        "predicted_objective": p["objective"],
                        "natural_predicted_objective": result["baselines"]["natural"]["objective"],
                        "binding_caps": p["binding_caps"],
                        "weights": {s: p["weights"][s] for s in loaded.source_names}})
        elif isinstance(w, dict):
            out.append({"field": field, "origin": "hand-tuned weights"})
        else:
            name = w if isinstance(w, str) else w.baseline
            out.append({"field": field, "origin": f"baseline {name}"})
    return out


def describe_origin(o: dict) -> str:
    """One line: which weights, and where they came from."""
    if o["origin"] == "next-phase proposal":
        return (f"{o['field']}: {o['proposal']} ({o['policy']} on {o['log']['records']} logged intervals up to "
                f"{o['log']['tokens']:,} tokens of {o['log']['path']})\n      "
                + ", ".join(f"{s} {o['weights'][s]:.4f} ({o['actions'][s]})" for s in o["weights"]))
    if o["origin"] != "proposal":
        return f"{o['field']}: {o['origin']}"
    return (f"{o['field']}: proposal {o['proposal']!r} ({o['method']}) of mixing_proposal "
            f"{o['mixing_proposal_version']}: {o['regressor']} laws on {o['runs']} proxy runs (mixing_fit "
            f"{o['mixing_fit_version']}, cross-validated rho {o['cv_objective_rho']:.3f}); predicted objective "
            f"{o['predicted_objective']:.4f} vs {o['natural_predicted_objective']:.4f} for the natural mixture"
            + (f"; at its cap: {', '.join(o['binding_caps'])}" if o["binding_caps"] else "")
            + "\n      weights " + ", ".join(f"{s} {w:.4f}" for s, w in o["weights"].items()))


def make_plan(loaded: LoadedSpec, avail: Availability) -> dict:
    """The plan as JSON-ready data; raises PlanError (carrying the plan) for a source over the cap."""
    mix = loaded.spec.mixture
    published = published_proposals(loaded)
    accepted = accepted_next_phase(loaded)
    schedule = build_schedule(loaded, avail, (published[0]["proposals"] if published else {}) | accepted)
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
        scale = capped_scale(schedule, caps)
    grid, cum = cumulative(schedule, scale)
    alloc = cum[-1]
    wanted = cumulative(schedule, None)[1][-1] if scale is not None else alloc  # the schedule's, uncapped
    # no tokens allocated is 0 epochs, even of an empty source; tokens allocated to an empty source are inf
    epochs = np.divide(alloc, n, out=np.where(alloc > 0, np.inf, 0.0), where=n > 0)
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
                           "synthetic_tokens_needed": float(max(0.0, wanted[i] / mix.max_epochs - n[i])),
                           "cap_factor": float(scale[i]) if scale is not None else 1.0}
                       for i, s in enumerate(sources)},
        "phases": [{"name": name, "start": float(schedule.bounds[p]), "end": float(schedule.bounds[p + 1]),
                    "quotas": {s: float(cum[edges[p + 1], i] - cum[edges[p], i]) for i, s in enumerate(sources)}}
                   for p, name in enumerate(schedule.phase_names)],
        "grid": {"x": grid.tolist(), "cumulative": {s: cum[:, i].tolist() for i, s in enumerate(sources)}},
        "weights_origin": weights_origin(loaded, published, accepted),
    }
    for s, r in plan["per_source"].items():
        if r["synthetic_tokens_needed"] > 0 and (t := traces_needed(loaded, s, r["synthetic_tokens_needed"])):
            r["synthetic_traces"] = t
    if avail.notes:  # only a plan made before a build: the published plan's bytes do not change
        plan["estimated_from_raw_files"] = dict(avail.notes)
    if over.any():
        worst = [s for i, s in enumerate(sources) if over[i]]
        lines = [f"source {s!r} would be repeated {plan['per_source'][s]['epochs']:.2f} epochs "
                 f"({plan['per_source'][s]['allocated']:,.0f} tokens allocated, {int(n[sources.index(s)]):,} "
                 f"available), over mixture.max_epochs {mix.max_epochs:g}; it needs "
                 f"{plan['per_source'][s]['synthetic_tokens_needed']:,.0f} more tokens (e.g. synthetic) to get "
                 f"under the cap" + "".join(f"; {line}" for line in traces_lines(plan, s)) for s in worst]
        raise PlanError("\n".join(lines) + "\nfix: lower those sources' weights, raise mixture.max_epochs, add data, "
                        "or set mixture.on_over_cap: cap_and_renormalize", plan)
    return plan


def _trace_yield(loaded: LoadedSpec, helper: str) -> dict:
    """What one generated trace of ``helper`` gave training, from its trace_validation and tokenize
    manifests (the train store: held-out traces are not trained on); ``measured`` False, with why,
    when either is missing."""
    tv_path = manifest_path(loaded.manifest_root, "trace_validation", helper)
    tok_path = manifest_path(loaded.manifest_root, "tokenize", helper)
    if not tv_path.is_file() or not tok_path.is_file():
        return {"source": helper, "measured": False,
                "why": f"{helper} augments it but is not built through tokenize yet: build it to measure its yield"}
    tv_manifest, tok = read_manifest(tv_path), read_manifest(tok_path)["counts"]
    tv = tv_manifest["counts"]
    generated = tv["documents_in"]
    judged = generated - tv_manifest["reasons"].get("missing_problem_id", {}).get("records", 0)
    trained, tokens = tok["documents_out"], tok["tokens_stored"]
    if not trained:
        return {"source": helper, "measured": False, "generated": generated,
                "why": f"no trace of {helper}'s {generated:,} reached training (pass rate 0): no number of such "
                       f"traces closes it; see its trace_validation funnel"}
    return {"source": helper, "measured": True, "generated": generated, "pass_rate": trained / generated,
            "mean_trace_tokens": tokens / trained, "traces_per_problem": judged / max(1, tv["problems"])}


def traces_needed(loaded: LoadedSpec, source: str, shortfall: float) -> list[dict]:
    """Problems x traces that would close ``source``'s shortfall, for each reasoning_traces source
    that augments it (each alone), at that source's measured yield: tokens per generated trace =
    pass rate (trained documents / generated traces) x mean trained trace tokens (EOS included),
    so traces = shortfall / that, problems = traces / (judged traces per problem). Measured on the
    whole source, whatever ``mixture.subsample`` draws from it."""
    out = []
    for helper in (s.name for s in loaded.spec.sources if s.traces is not None and s.traces.augments == source):
        y = _trace_yield(loaded, helper)
        if y["measured"]:
            y["traces"] = math.ceil(shortfall / (y["pass_rate"] * y["mean_trace_tokens"]))
            y["problems"] = math.ceil(y["traces"] / y["traces_per_problem"])
        out.append(y)
    return out


def traces_lines(plan: dict, source: str) -> list[str]:
    """The plan's traces-needed figures for one source, as text."""
    return [f"{source}: {t['why']}" if not t["measured"] else
            f"{source}: ~{t['problems']:,} problems x {t['traces_per_problem']:.2f} traces = {t['traces']:,} traces "
            f"of {t['source']} would close it, at its measured yield ({t['generated']:,} generated traces: pass "
            f"rate {t['pass_rate']:.4f}, {t['mean_trace_tokens']:.1f} tokens per trained trace)"
            for t in plan["per_source"][source].get("synthetic_traces", [])]


RAW_METHOD = "ESTIMATED from the raw input files (nothing built yet)"


def availability(loaded: LoadedSpec, exact_only: bool = False, raw_estimate: bool = False) -> Availability:
    """What each source can supply for training: exact from its tokenize manifest (the train store
    only: held-out text is never available to the mixture), else (unless ``exact_only``)
    the latest earlier stage's count, plus one EOS per document; a source with no manifest at all
    is an error, or with ``raw_estimate`` (``corpusmix plan`` before a build) an estimate from a
    sample of its raw files (``estimate.raw_estimate``), described in ``notes``."""
    from corpusmix.pipeline import active_stages

    # the latest stage of this spec's build first; before tokenize, exact only with a tokenizer file
    order = [st.name for st in active_stages(loaded.spec) if st.per_source]
    latest = order[: order.index("tokenize") + 1][::-1]
    tokens, documents, methods, notes = {}, {}, set(), {}
    sub = loaded.spec.mixture.subsample
    for s in loaded.source_names:
        for stage in latest[:1] if exact_only else latest:
            path = manifest_path(loaded.manifest_root, stage, s)
            if path.is_file():
                m = read_manifest(path)
                c = m["counts"]
                tokens[s] = c["tokens_stored"] if stage == "tokenize" else c["tokens_out"] + c["documents_out"]
                documents[s] = c["documents_out"]
                if sub < 1 and stage == "tokenize":  # exactly the documents the shards will draw from
                    sizes = store_sizes(loaded, s, m)
                    docs = source_subset(loaded.spec.mixture.seed, s, sizes, sub)
                    tokens[s], documents[s] = int(sizes[docs].sum()), len(docs)
                elif sub < 1:
                    tokens[s], documents[s] = round(tokens[s] * sub), round(documents[s] * sub)
                exact = stage == "tokenize" or m["token_counting"].get("method") == "exact"
                methods.add(f"{'exact' if exact else 'estimated'} ({stage})")
                break
        else:
            if raw_estimate and not exact_only:
                from corpusmix.mixture.estimate import raw_estimate as estimate

                e = estimate(loaded, s)
                tokens[s], documents[s], notes[s] = round(e.tokens * sub), round(e.documents * sub), e.describe()
                methods.add(RAW_METHOD)
                continue
            need = "tokenize" if exact_only else "at least ingest"
            raise PlanError(f"no manifest says how many tokens source {s!r} has: materialize {need} for it first")
    return Availability(tokens, documents, ", ".join(sorted(methods)), notes)


def plan_config(loaded: LoadedSpec, partition: None) -> dict:
    """The mixture section and the sources' qualities (a temperature schedule reads them)."""
    return {"mixture": loaded.spec.mixture.model_dump(mode="json"),
            "quality": {s: loaded.source(s).quality for s in loaded.source_names}}


def build_plan(ctx: StageRun) -> Built:
    """The plan on exact counts, as plan.json."""
    loaded = ctx.loaded
    ups = [ctx.upstream("tokenize", s) for s in loaded.source_names]
    ups += [ctx.upstream(PROPOSAL_STAGE)] if PROPOSAL_STAGE in ctx.stage.deps(loaded.spec) else []
    avail = availability(loaded, exact_only=True)
    plan = make_plan(loaded, avail)
    body = orjson.dumps(plan, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    (ctx.staging / PLAN_FILE).write_bytes(body)
    out = {"name": PLAN_FILE, "rows": len(plan["sources"]), "sha256": sha256_file(ctx.staging / PLAN_FILE),
           "bytes": len(body)}
    return Built(
        inputs=manifest_refs(loaded, ups),
        outputs=[output_ref(out, "plan")],
        counts={"budget": plan["budget"], "samples": plan["samples"], "available_tokens": sum(avail.tokens.values())},
        token_counting={"method": avail.method},
        details={k: plan[k] for k in ("per_source", "phases", "renormalized", "availability", "weights_origin")},
        summary="\n  " + render_plan(plan).replace("\n", "\n  "))


@dataclass(frozen=True)
class Slice:
    """A stretch of a phase over which a trainer holds one constant blend."""

    phase: int
    name: str  # the phase's
    part: int  # 0-based, of ``parts`` equal stretches of the phase
    parts: int
    start: float  # stream positions, tokens
    end: float
    quotas: dict[str, float]  # the plan's tokens per source inside the slice (its integral, not a resample)
    drift: dict[str, float]  # most tokens by which the plan's cumulative departs from the constant blend inside


def slices(plan: dict, sub_phases: int, align: float = 1.0) -> list[Slice]:
    """The plan's phases cut into constant blends: ``sub_phases`` equal slices of a phase whose shares
    move (linear transition, linear or temperature schedule), one slice of a phase whose shares hold;
    every edge moved to the nearest multiple of ``align`` tokens (a trainer's iteration), a slice
    left empty by that dropped.

    Read from the plan's grid only (the cumulative targets at CELLS points per phase, interpolated
    between them for a moved edge), so nothing here can drift from the plan: a slice's quotas are
    differences of the plan's own integral, so whatever the slices, they add up to the plan's
    cumulative at every edge. ``drift`` is what a constant blend cannot follow (for linear shares
    changing by d over a slice of L tokens, about d * L / 8)."""
    x = np.asarray(plan["grid"]["x"])
    cum = np.stack([np.asarray(plan["grid"]["cumulative"][s]) for s in plan["sources"]], axis=1)

    def at(pos: float) -> np.ndarray:
        return np.array([np.interp(pos, x, cum[:, i]) for i in range(cum.shape[1])])

    out = []
    for p, ph in enumerate(plan["phases"]):
        a, b = p * CELLS, (p + 1) * CELLS
        rate = np.diff(cum[a:b + 1], axis=0) / np.diff(x[a:b + 1])[:, None]
        k = sub_phases if bool((np.ptp(rate, axis=0) > 1e-9).any()) else 1
        edges = [min(round(x[a + round(j * CELLS / k)] / align) * align, x[-1]) for j in range(k + 1)]
        for j, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            if hi <= lo:
                continue
            c_lo, c_hi = at(lo), at(hi)
            inside = (x > lo) & (x < hi)
            straight = c_lo + ((x[inside] - lo) / (hi - lo))[:, None] * (c_hi - c_lo)
            drift = np.abs(cum[inside] - straight).max(axis=0) if inside.any() else np.zeros(len(c_lo))
            out.append(Slice(p, ph["name"], j, k, float(lo), float(hi),
                             {s: float(c_hi[i] - c_lo[i]) for i, s in enumerate(plan["sources"])},
                             {s: float(drift[i]) for i, s in enumerate(plan["sources"])}))
    return out


def load_plan(loaded: LoadedSpec) -> tuple[dict, dict]:
    """The plan the ``mixture_plan`` asset published, and its manifest."""
    m = require_manifest(loaded.manifest_root, NAME, None)[1]
    return orjson.loads((loaded.storage_root / m["outputs"][0]["path"]).read_bytes()), m


def _estimate_lines(plan: dict) -> list[str]:
    """The warning a plan on estimated counts carries, naming what each estimate rests on."""
    raw = plan.get("estimated_from_raw_files") or {}
    if not raw and plan["availability"].startswith("exact"):
        return []
    lines = ["", "NOTE: the available token counts, and so the epochs, are estimates, not counts of a build "
                 "(availability above); build through tokenize for exact counts."]
    lines += [f"  {s}: {note}" for s, note in raw.items()]
    return lines


def render_plan(plan: dict) -> str:
    """The plan as two text tables: per source, and per phase x source quotas."""
    src = plan["sources"]
    lines = [f"budget {plan['budget']:,} tokens = {plan['samples']:,} samples of {plan['seq_len']}; "
             f"max_epochs {plan['max_epochs']:g}; availability {plan['availability']}"
             + ("; shares renormalised under the cap" if plan["renormalized"] else ""),
             *_estimate_lines(plan),
             "", "weights:", *(f"  {describe_origin(o)}" for o in plan["weights_origin"]),
             "",
             f"{'source':12} {'share':>7} {'allocated':>14} {'available':>14} {'epochs':>7} {'over cap':>8} "
             f"{'synthetic needed':>17}"]
    for s in src:
        r = plan["per_source"][s]
        lines.append(f"{s:12} {r['share']:7.4f} {r['allocated']:14,.0f} {r['available']:14,} {r['epochs']:7.3f} "
                     f"{'YES' if r['over_cap'] else 'no':>8} {r['synthetic_tokens_needed']:17,.0f}")
    traces = [line for s in src for line in traces_lines(plan, s)]
    lines += ["", "synthetic traces needed:", *(f"  {line}" for line in traces)] if traces else []
    lines += ["", f"{'phase':16} {'tokens':>14} " + " ".join(f"{s:>12}" for s in src)]
    for ph in plan["phases"]:
        lines.append(f"{ph['name']:16} {ph['end'] - ph['start']:14,.0f} "
                     + " ".join(f"{ph['quotas'][s]:12,.0f}" for s in src))
    return "\n".join(lines)


def plan_upstream(spec: Spec) -> tuple[str, ...]:
    """tokenize's counts, and the published proposals when the schedule names one."""
    return ("tokenize",) + ((PROPOSAL_STAGE,) if named_proposals(spec) else ())


STAGE = Stage(name=NAME, scope="global", upstream=plan_upstream, config=plan_config, build=build_plan,
              module=__name__)
