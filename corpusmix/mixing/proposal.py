"""The mixing_proposal stage: mixtures proposed by the fitted laws, under the repetition caps,
beside the baselines, each with the evidence for it.

Every proposal of ``mixing.proposals`` (``convex`` with its KL pull to the natural shares,
``simulate``, ``best_observed``; see ``propose``) is made from ``mixing_fit``'s laws over the
spec's sources, the prior being the natural token shares of the train stores and each source
capped at its available tokens x ``mixture.max_epochs`` / ``mixture.total_tokens`` (tokenize's
exact counts). Beside them the baselines (natural, uniform, temperature 0.5, UniMax, and the best
run of the swarm), all scored by the same laws: predicted objective, per-target losses, weights and
the caps that bind, with the fit's cross-validated quality.

``proposals.json`` is what a schedule's ``weights: {proposal: NAME}`` resolves to (the plan reads
it) and ``proposals.md`` is the table for people. Without ``mixing.runs`` there are no laws, and
the stage (like ``mixing_fit``) is not part of the build.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow.parquet as pq

from corpusmix.core.manifest import manifest_refs, output_files, staged_ref
from corpusmix.core.spec import LoadedSpec, Spec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.mixing.design import prior_and_caps
from corpusmix.mixing.laws import from_params
from corpusmix.mixing.propose import baselines, best_observed, propose, scored
from corpusmix.mixing.runs import OURS
from corpusmix.mixture.plan import availability

NAME = "mixing_proposal"
PROPOSALS_FILE = "proposals.json"
README = "proposals.md"


def proposal_config(loaded: LoadedSpec, partition: None) -> dict:
    mix = loaded.spec.mixture
    return {"proposals": [p.model_dump(mode="json") for p in loaded.spec.mixing.proposals],
            "seed": loaded.spec.mixing.seed, "total_tokens": mix.total_tokens, "max_epochs": mix.max_epochs}


def _describe(p) -> str:
    return {"convex": f"convex, KL weight {p.kl:g}", "simulate": f"simulate, top {p.top_k} of {p.samples:,}",
            "best_observed": "best observed run"}[p.method]


def render(result: dict) -> str:
    """The proposals and baselines as a markdown table, best predicted first."""
    fit = result["fit"]
    rows = sorted([(f"proposal `{n}` ({r['description']})", r) for n, r in result["proposals"].items()]
                  + [(f"baseline: {n}", r) for n, r in result["baselines"].items()], key=lambda kv: kv[1]["objective"])
    sources = list(result["prior"])
    lines = [f"# Proposed mixtures\n\n{fit['regressor']} laws fitted on {fit['runs']} runs (mixing_fit "
             f"`{fit['version']}`), cross-validated Spearman rho of the objective {fit['cv_objective_rho']:.3f}, "
             f"mean absolute error {fit['cv_objective_mae']:.4f}. Weights are token shares; a cap is a source's "
             "available tokens x max_epochs / budget.\n",
             "| mixture | predicted objective | vs natural | " + " | ".join(sources) + " | caps binding |",
             "|---|---:|---:|" + "---:|" * len(sources) + "---|"]
    natural = result["baselines"]["natural"]["objective"]
    for label, r in rows:
        lines.append(f"| {label} | {r['objective']:.4f} | {r['objective'] - natural:+.4f} | "
                     + " | ".join(f"{r['weights'][s]:.4f}" for s in sources)
                     + f" | {', '.join(r['binding_caps']) or '-'} |")
    lines.append("| cap | | | " + " | ".join(f"{result['caps'][s]:.4f}" for s in sources) + " | |")
    return "\n".join(lines) + "\n"


def build_proposal(ctx: StageRun) -> Built:
    loaded = ctx.loaded
    mixing = loaded.spec.mixing
    fit_path, fit = ctx.upstream("mixing_fit")
    ups = [(fit_path, fit)] + [ctx.upstream("tokenize", s) for s in loaded.source_names]
    outs = output_files(loaded, fit)
    laws = orjson.loads(outs["laws"].read_bytes())
    if laws["domains"] != loaded.source_names:
        raise ValueError(f"the laws of {outs['laws']} are over {laws['domains']}, not the spec's sources "
                         f"{loaded.source_names}: materialize mixing_fit again")
    models = from_params(laws["regressor"], laws["params"])
    targets, sources = laws["targets"], laws["domains"]
    objective = np.array([laws["objective"][t] for t in targets])
    table = pq.read_table(outs["runs"])
    mixtures = np.stack([table[f"{OURS['mixture_prefix']}{s}"].to_numpy() for s in sources], axis=1)
    losses = np.stack([table[f"{OURS['loss_prefix']}{t}"].to_numpy() for t in targets], axis=1)
    avail = availability(loaded, exact_only=True)
    prior, caps = prior_and_caps(loaded, avail)
    proposals = {}
    for p in mixing.proposals:
        made = propose(p.method, models, objective, prior, caps, mixtures, losses, kl=p.kl, samples=p.samples,
                       top_k=p.top_k, seed=mixing.seed)
        proposals[p.name] = {"method": p.method, "description": _describe(p)} | scored(
            models, objective, made.weights, sources, targets, caps)
        ctx.say(f"proposal {p.name!r} ({_describe(p)}): predicted objective {proposals[p.name]['objective']:.4f}")
    found = baselines(prior, caps)
    if (mixtures <= caps + 1e-9).all(axis=1).any():
        found["best run of the swarm"] = best_observed(mixtures, losses, objective, caps).weights
    base = {name: scored(models, objective, x, sources, targets, caps) for name, x in found.items()}
    cv = laws["cross_validated"]
    result = {"fit": {"version": fit["version"], "regressor": laws["regressor"], "runs": laws["runs"],
                      "targets": targets, "objective": laws["objective"], "cv_objective_rho": cv["objective"],
                      "cv_objective_mae": cv["objective_mae"]},
              "prior": dict(zip(sources, map(float, prior))), "caps": dict(zip(sources, map(float, caps))),
              "proposals": proposals, "baselines": base}
    (ctx.staging / PROPOSALS_FILE).write_bytes(orjson.dumps(result, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    (ctx.staging / README).write_text(render(result))
    natural = base["natural"]["objective"]
    details = {"fit": result["fit"],
               "proposals": {n: {"objective": r["objective"], "gain_vs_natural": natural - r["objective"],
                                 "weights": r["weights"], "binding_caps": r["binding_caps"]}
                             for n, r in proposals.items()},
               "baselines": {n: r["objective"] for n, r in base.items()}}
    return Built(inputs=manifest_refs(loaded, ups),
                 outputs=[staged_ref(ctx.staging, PROPOSALS_FILE, "proposals", rows=1),
                          staged_ref(ctx.staging, README, "readme")],
                 counts={"proposals": len(proposals)}, token_counting={"method": avail.method}, details=details,
                 summary=", ".join(f"{n} {r['objective']:.4f}" for n, r in proposals.items())
                 + f" (natural {natural:.4f})")


STAGE = Stage(name=NAME, scope="global", upstream=("mixing_fit", "tokenize"), config=proposal_config,
              build=build_proposal, module=__name__, active=Spec.fits_laws)
