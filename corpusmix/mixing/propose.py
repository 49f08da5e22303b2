"""Proposing a mixture from fitted laws: convex with a KL pull to a prior, RegMix's simulate-and-average,
and the best run observed; every proposal scored against the baselines. And the swarm of candidate
mixtures the proxy runs train on (``swarm``).

* ``convex``: minimise sum_k w_k exp(t_k . x) + lambda KL(x || prior) over the simplex with
  per-domain caps (the repetition limit: available tokens x max_epochs / budget). With log-linear
  laws (``laws.LogLinear``; exp(c_k) is a constant here) the objective is convex, so the solver's
  answer is the optimum: cvxpy with Clarabel (exponential cone). lambda = 0 is the law's own
  optimum, a large lambda the prior: how far to trust the law.
* ``simulate``: RegMix's way: ``samples`` mixtures drawn from a Dirichlet around the prior, the
  caps applied, each scored by the laws; the mean of the ``top_k`` best. Any regressor.
* ``best_observed``: the swarm's run with the lowest measured objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corpusmix.mixing.laws import predict_targets


class ProposalError(ValueError):
    """Constraints no mixture can meet (the message says which and the fix)."""


@dataclass(frozen=True)
class Proposal:
    method: str
    weights: np.ndarray  # over the training domains, summing to 1
    binding_caps: list[int]  # domains at their cap


def _check(prior: np.ndarray, caps: np.ndarray | None) -> np.ndarray:
    caps = np.ones(len(prior)) if caps is None else np.asarray(caps, np.float64)
    if caps.sum() < 1 - 1e-12:
        raise ProposalError(f"the caps add up to {caps.sum():.4f} < 1: no mixture fits under them; raise "
                            "mixture.max_epochs, lower the budget, or add data")
    return caps


def _binding(x: np.ndarray, caps: np.ndarray) -> list[int]:
    return [int(j) for j in np.flatnonzero((caps < 1) & (x >= caps - 1e-7))]


def convex(laws: list, objective: np.ndarray, prior: np.ndarray, caps: np.ndarray | None = None,
           kl: float = 0.0) -> Proposal:
    """The mixture minimising the weighted log-linear laws plus ``kl`` x KL(x || prior), under ``caps``."""
    import cvxpy as cp

    caps = _check(prior, caps)
    t = np.stack([law.t for law in laws])  # targets x domains
    w = np.asarray(objective, np.float64) / np.sum(objective)
    x = cp.Variable(len(prior))
    cost = w @ cp.exp(t @ x)
    if kl > 0:
        cost = cost + kl * cp.sum(cp.rel_entr(x, np.asarray(prior, np.float64)))
    problem = cp.Problem(cp.Minimize(cost), [x >= 0, cp.sum(x) == 1, x <= caps])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if problem.status not in ("optimal", "optimal_inaccurate") or x.value is None:
        raise ProposalError(f"the convex proposer found no mixture ({problem.status})")
    out = np.clip(np.asarray(x.value, np.float64), 0.0, caps)
    out = out / out.sum()
    return Proposal(f"convex (KL weight {kl:g})", out, _binding(out, caps))


def simulate(models: list, objective: np.ndarray, prior: np.ndarray, caps: np.ndarray | None = None,
             samples: int = 100_000, top_k: int = 100, strength: float = 1.0, seed: int = 0) -> Proposal:
    """RegMix's proposal: Dirichlet(strength x prior x n_domains) samples scored by the laws, the
    ``top_k`` best averaged; samples over a cap are rescaled into the caps (mass moved to the rest)."""
    caps = _check(prior, caps)
    rng = np.random.default_rng(seed)
    alpha = np.maximum(np.asarray(prior, np.float64) * len(prior) * strength, 1e-3)
    x = into_caps(rng.dirichlet(alpha, samples), caps)
    scores = predict_targets(models, x) @ (np.asarray(objective, np.float64) / np.sum(objective))
    best = np.argsort(scores, kind="stable")[:top_k]
    out = x[best].mean(axis=0)
    return Proposal(f"simulate (top {top_k} of {samples:,})", out / out.sum(), _binding(out, caps))


def best_observed(mixtures: np.ndarray, losses: np.ndarray, objective: np.ndarray,
                  caps: np.ndarray | None = None) -> Proposal:
    """The run whose measured objective is lowest (among those within the caps)."""
    caps = _check(mixtures[0], caps)
    measured = losses @ (np.asarray(objective, np.float64) / np.sum(objective))
    ok = (mixtures <= caps + 1e-9).all(axis=1)
    if not ok.any():
        raise ProposalError("no observed run is within the caps (a source's weight at most its available tokens x "
                            "max_epochs / budget): add runs within them, or propose another way than best_observed")
    i = int(np.flatnonzero(ok)[np.argmin(measured[ok])])
    return Proposal(f"best observed (run {i})", mixtures[i].copy(), _binding(mixtures[i], caps))


def baselines(prior: np.ndarray, caps: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """natural (the prior), uniform, temperature 0.5 (prior^2, renormalised), UniMax (uniform, each
    domain capped, the rest shared), each held under the caps."""
    from corpusmix.mixture.schedules import unimax

    caps = _check(prior, caps)
    n = len(prior)
    sizes = np.asarray(prior, np.float64)
    out = {"natural": sizes / sizes.sum(), "uniform": np.full(n, 1.0 / n),
           "temperature 0.5": sizes ** 2 / np.sum(sizes ** 2),
           "unimax": unimax(np.minimum(caps, 1.0), 1.0, 1.0)}
    return {k: into_caps(v[None, :], caps)[0] for k, v in out.items()}


def into_caps(x: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Mixtures (rows) held under per-domain caps: what is over a cap moves to the other domains below
    their caps, in proportion to their weights (a domain left out stays out), or to their room where
    all of those are empty; repeated until none is over (the caps must add up to at least 1)."""
    x = np.array(x, np.float64)
    for _ in range(2 * len(caps) + 2):  # each pass fills at least one more domain to its cap
        over = x > caps + 1e-15
        if not over.any():
            break
        excess = np.where(over, x - caps, 0.0).sum(axis=1, keepdims=True)
        x = np.minimum(x, caps)
        below = x < caps
        share = np.where(below, x, 0.0)
        empty = share.sum(axis=1) <= 0
        share[empty] = np.where(below[empty], caps - x[empty], 0.0)
        x = x + excess * share / np.maximum(share.sum(axis=1, keepdims=True), 1e-300)
    return x


def swarm(prior: np.ndarray, runs: int, seed: int, caps: np.ndarray | None = None, temperature: float = 0.5,
          strengths: tuple[float, float] = (0.1, 5.0), min_weight: float = 1e-3) -> np.ndarray:
    """Candidate mixtures for proxy runs (runs x domains): Dirichlet draws around the tempered prior
    (prior^temperature, renormalised: small domains get tried), each with its own concentration,
    log-uniform over ``strengths`` x the number of domains (low: sparse, far from the prior; high:
    close to it), weights under ``min_weight`` dropped, held under ``caps``; the same seed, the same
    swarm."""
    caps = _check(prior, caps)
    base = np.asarray(prior, np.float64) ** temperature
    base = base / base.sum()
    rng = np.random.default_rng(seed)
    strength = np.exp(rng.uniform(np.log(strengths[0]), np.log(strengths[1]), runs)) * len(base)
    x = np.stack([rng.dirichlet(np.maximum(base * s, 1e-6)) for s in strength])
    x = np.where(x < min_weight, 0.0, x)
    empty = x.sum(axis=1) == 0
    x[empty] = base
    return into_caps(x / x.sum(axis=1, keepdims=True), caps)


def propose(method: str, models: list, objective: np.ndarray, prior: np.ndarray, caps: np.ndarray,
            mixtures: np.ndarray, losses: np.ndarray, kl: float = 0.1, samples: int = 100_000, top_k: int = 100,
            seed: int = 0) -> Proposal:
    """One proposal by its method's name: ``convex`` (log-linear laws only), ``simulate`` or
    ``best_observed`` (the best run within the caps)."""
    if method == "convex":
        return convex(models, objective, prior, caps, kl=kl)
    if method == "simulate":
        return simulate(models, objective, prior, caps, samples=samples, top_k=top_k, seed=seed)
    if method == "best_observed":
        return best_observed(mixtures, losses, objective, caps)
    raise ValueError(f"no proposal method {method!r}")


def scored(models: list, objective: np.ndarray, x: np.ndarray, domains: list[str], targets: list[str],
           caps: np.ndarray) -> dict:
    """A mixture as the evidence shows it: predicted objective and per-target losses, weights, the caps
    it sits at."""
    per_target = predict_targets(models, x[None])[0]
    w = np.asarray(objective, np.float64) / np.sum(objective)
    return {"objective": float(per_target @ w), "losses": dict(zip(targets, map(float, per_target))),
            "weights": dict(zip(domains, map(float, x))), "binding_caps": [domains[j] for j in _binding(x, caps)]}


def report(runs, targets: list[str] | None = None, regressor: str = "log_linear", prior: np.ndarray | None = None,
           caps: np.ndarray | None = None, kl: float = 0.1, samples: int = 100_000, top_k: int = 100,
           seed: int = 0) -> dict:
    """Every proposal and baseline for ``runs`` (``runs.Runs``) with its predicted objective (the mean
    of the ``targets``' losses, all targets by default) and per-target losses, the caps that bind,
    and the laws' cross-validated quality: the evidence ``corpusmix propose`` prints."""
    from corpusmix.mixing.laws import cross_validated, fit_per_target

    names = targets or runs.targets
    missing = [t for t in names if t not in runs.targets]
    if missing:
        raise ProposalError(f"no loss column for target(s) {missing}; the runs evaluate {runs.targets}")
    cols = [runs.targets.index(t) for t in names]
    losses, objective = runs.losses[:, cols], np.ones(len(cols))
    prior = runs.mixtures.mean(axis=0) if prior is None else np.asarray(prior, np.float64)
    caps = _check(prior, caps)
    models = fit_per_target(regressor, runs.mixtures, losses, seed=seed)
    within = bool((runs.mixtures <= caps + 1e-9).all(axis=1).any())  # else the best run is shown over the caps
    observed = best_observed(runs.mixtures, losses, objective, caps if within else None)
    if not within:
        observed = Proposal(observed.method + ", over the caps", observed.weights, [])
    found = [simulate(models, objective, prior, caps, samples=samples, top_k=top_k, seed=seed), observed]
    if regressor == "log_linear":  # the convex proposer needs the law's form
        found = [convex(models, objective, prior, caps, kl=0.0), convex(models, objective, prior, caps, kl=kl)] + found
    rows = [(p.method, p.weights) for p in found]
    rows += [(f"baseline: {name}", x) for name, x in baselines(prior, caps).items()]
    out = [{"method": method} | scored(models, objective, x, runs.domains, names, caps) for method, x in rows]
    return {"regressor": regressor, "targets": names, "runs": len(runs.index), "domains": runs.domains,
            "prior": dict(zip(runs.domains, map(float, prior))), "caps": dict(zip(runs.domains, map(float, caps))),
            "cross_validated": cross_validated(regressor, runs.mixtures, losses, folds=5, seed=seed),
            "proposals": sorted(out, key=lambda r: r["objective"])}


def render(rep: dict) -> str:
    """The report as text: the fit's quality, then one line per proposal, best predicted first."""
    cv = rep["cross_validated"]
    lines = [f"{rep['regressor']} laws for {len(rep['targets'])} target(s) fitted on {rep['runs']} runs; "
             f"5-fold cross-validated Spearman rho of the objective {cv['objective']:.3f}",
             "", f"{'proposal':42} {'predicted':>9}  weights (largest first)  caps binding"]
    for r in rep["proposals"]:
        top = sorted(r["weights"].items(), key=lambda kv: -kv[1])[:5]
        lines.append(f"{r['method']:42} {r['objective']:9.4f}  " + ", ".join(f"{d} {w:.3f}" for d, w in top)
                     + (f"  [{', '.join(r['binding_caps'])}]" if r["binding_caps"] else ""))
    return "\n".join(lines)
