"""Mixing laws on RegMix's published proxy runs (issue 21, the fitting half): fit on the 512 runs of
a 1M-parameter model, predict the 256 test mixtures at 1M and at 60M parameters.

Criteria decided before the run (issue 21): log-linear Spearman rho >= 0.95 on Pile-CC at 60M;
per-domain fits aggregated beat one fit to the averaged loss (rho on the mean loss at 60M).
Reported for log-linear, ridge and LightGBM: rho on Pile-CC at 1M and 60M; rho on the mean of
the evaluated domains (13 in these files) per-domain-then-average vs one fit on the mean; the
regret of the top-1 pick among the 256 test mixtures at 60M (its measured Pile-CC loss minus the
best measured); a swarm-size curve (rho on Pile-CC at 60M fitting on 17 ... 512 runs, --subsets
random subsets each, mean +- sd, seeded); paired bootstrap standard errors of the differences
(per-domain minus one fit; LightGBM minus log-linear); fit times; the time of what the mixing_fit and mixing_proposal stages compute; and the proposals (convex with a KL weight from 0 to
100, RegMix's simulate-and-average top-100 of 100,000, the best observed run, the baselines) for
Pile-CC, with their predicted loss and the caps that bind.

    python benchmarks/mixing_laws.py [--subsets 5] [--data ../shared/mixing-laws/regmix]

Seeds: the log-linear fits' 8 starts from seed 0; the swarm-size subsets from numpy seed 0 (subset
s also seeds its fit); the bootstrap from seed 0. Results of the committed run:
benchmarks/results/mixing_laws.txt.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from corpusmix.mixing.laws import REGRESSORS, fit_per_target, predict_targets  # noqa: E402
from corpusmix.mixing.runs import read_runs  # noqa: E402

TARGET = "pile_cc"
SIZES = (17, 34, 64, 128, 256, 512)


def rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b)[0])


def paired(measured: np.ndarray, first: np.ndarray, second: np.ndarray, resamples: int = 1000,
           seed: int = 0) -> tuple[float, float]:
    """rho(first) - rho(second) against the same measured losses, and its standard error from a
    paired bootstrap over the test mixtures (both predictions resampled together)."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(measured), len(measured))
        diffs.append(rho(first[i], measured[i]) - rho(second[i], measured[i]))
    return rho(first, measured) - rho(second, measured), float(np.std(diffs, ddof=1))


def propose_section(train, k: int) -> None:
    """Proposals for Pile-CC from the log-linear law fitted on all 512 runs. These files carry no token
    counts, so the prior is the mean of the 512 training mixtures (RegMix drew them around The Pile's
    natural shares) and the caps a stand-in repetition limit: 3 x the prior."""
    from corpusmix.mixing.laws import cross_validated
    from corpusmix.mixing.propose import baselines, best_observed, convex, simulate

    t = time.perf_counter()
    laws = fit_per_target("log_linear", train.mixtures, train.losses[:, [k]])
    fit_s = time.perf_counter() - t
    prior, obj = train.mixtures.mean(axis=0), np.ones(1)
    caps = np.minimum(3 * prior, 1.0)

    def predicted(x: np.ndarray) -> float:
        return float(predict_targets(laws, x[None])[0, 0])

    cv = cross_validated("log_linear", train.mixtures, train.losses[:, [k]], folds=5, seed=0)
    print(f"proposals for Pile-CC (log-linear law fitted in {fit_s:.2f} s, 5-fold cross-validated rho on the "
          f"512 runs {cv['objective']:.3f}; prior = mean training mixture, caps = 3 x prior): predicted loss, "
          "L1 distance to the prior, caps binding")
    rows = []
    for kl in (0.0, 0.01, 0.1, 1.0, 100.0):
        t = time.perf_counter()
        p = convex(laws, obj, prior, caps, kl=kl)
        rows.append((p.method, p.weights, p.binding_caps, time.perf_counter() - t))
    t = time.perf_counter()
    p = simulate(laws, obj, prior, caps, samples=100_000, top_k=100, seed=0)
    rows.append((p.method, p.weights, p.binding_caps, time.perf_counter() - t))
    p = best_observed(train.mixtures, train.losses[:, [k]], obj)
    rows.append((p.method + ", no caps", p.weights, [], 0.0))
    rows += [(f"baseline {name}", x, [], 0.0) for name, x in baselines(prior, caps).items()]
    for name, x, binding, secs in rows:
        over = float((x - caps).max())
        print(f"  {name:34s} {predicted(x):.4f}  L1 {np.abs(x - prior).sum():.3f}  binding "
              f"{[train.domains[j] for j in binding]}  max over cap {over:+.1e}  {secs:.3f} s")


def stage_time_section(train, repeats: int = 3) -> None:
    """What mixing_fit and mixing_proposal compute, timed on all of RegMix's runs and targets: the
    log-linear laws, their out-of-fold predictions and cross-validated rho, then the three proposal
    methods and the baselines (the prior is the mean training mixture, caps 3 x the prior)."""
    from corpusmix.mixing.laws import cross_validated, out_of_fold
    from corpusmix.mixing.propose import baselines, propose, scored

    objective = np.full(len(train.targets), 1.0 / len(train.targets))
    prior = train.mixtures.mean(axis=0)
    caps = np.minimum(3 * prior, 1.0)
    times = {"fit": [], "cross-validation": [], "proposals": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        models = fit_per_target("log_linear", train.mixtures, train.losses)
        t1 = time.perf_counter()
        oof = out_of_fold("log_linear", train.mixtures, train.losses, 5, 0)
        cross_validated("log_linear", train.mixtures, train.losses, objective, 5, 0, predicted=oof)
        t2 = time.perf_counter()
        for method in ("convex", "simulate", "best_observed"):  # no run is within these caps: best of all runs
            limit = np.ones_like(caps) if method == "best_observed" else caps
            made = propose(method, models, objective, prior, limit, train.mixtures, train.losses)
            scored(models, objective, made.weights, train.domains, train.targets, caps)
        for x in baselines(prior, caps).values():
            scored(models, objective, x, train.domains, train.targets, caps)
        t3 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[key].append(value)
    total = [sum(v) for v in zip(*times.values())]
    print(f"mixing_fit + mixing_proposal work on {len(train.index)} runs x {len(train.targets)} targets (log-linear, "
          f"5-fold cross-validation, convex + simulate + best observed, 5 baselines): median {statistics.median(total):.2f} s "
          f"of {repeats} (" + ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in times.items()) + ")",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subsets", type=int, default=5)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "mixing-laws" / "regmix"))
    args = ap.parse_args()
    d = Path(args.data)
    train = read_runs(d / "train_mixture_1m.csv", d / "train_pile_loss_1m.csv")
    test1 = read_runs(d / "test_mixture_1m.csv", d / "test_pile_loss_1m.csv")
    test60 = read_runs(d / "test_mixture_60m.csv", d / "test_pile_loss_60m.csv")
    k = train.targets.index(TARGET)
    print(f"runs: {len(train.index)} train (1M), {len(test1.index)} test at 1M and 60M; {len(train.domains)} training "
          f"domains, {len(train.targets)} evaluated domains")
    verdict, pile_cc = {}, {}
    for kind in REGRESSORS:
        t = time.perf_counter()
        models = fit_per_target(kind, train.mixtures, train.losses)
        fit_s = time.perf_counter() - t
        p1, p60 = predict_targets(models, test1.mixtures), predict_targets(models, test60.mixtures)
        single = fit_per_target(kind, train.mixtures, train.losses.mean(axis=1, keepdims=True))
        mean60 = test60.losses.mean(axis=1)
        per_domain = rho(p60.mean(axis=1), mean60)
        one_fit = rho(predict_targets(single, test60.mixtures)[:, 0], mean60)
        pick = int(np.argmin(p60[:, k]))
        regret = float(test60.losses[pick, k] - test60.losses[:, k].min())
        r60 = rho(p60[:, k], test60.losses[:, k])
        verdict[kind] = (r60, per_domain, one_fit)
        gain, se = paired(mean60, p60.mean(axis=1), predict_targets(single, test60.mixtures)[:, 0])
        pile_cc[kind] = p60[:, k]
        print(f"{kind:11s} fit {fit_s:6.2f} s ({len(train.targets)} targets)  Pile-CC rho 1M "
              f"{rho(p1[:, k], test1.losses[:, k]):.3f}  60M {r60:.3f}  | mean of {len(train.targets)} at 60M: "
              f"per-domain {per_domain:.3f} vs one fit {one_fit:.3f}  | top-1 regret at 60M {regret:.4f} "
              f"(pick loss {test60.losses[pick, k]:.4f}, best {test60.losses[:, k].min():.4f})  | per-domain minus "
              f"one fit {gain:+.3f} +- {se:.3f} (paired bootstrap SE, 1000 resamples, seed 0)", flush=True)
    d, se = paired(test60.losses[:, k], pile_cc["lightgbm"], pile_cc["log_linear"])
    print(f"Pile-CC rho at 60M, LightGBM minus log-linear: {d:+.3f} +- {se:.3f} (paired bootstrap SE)", flush=True)
    print(f"swarm-size curve: Pile-CC rho at 60M, {args.subsets} random subsets per size (mean +- sd)")
    rng = np.random.default_rng(0)
    for kind in REGRESSORS:
        cells = []
        for n in SIZES:
            values = []
            for s in range(args.subsets if n < len(train.index) else 1):
                rows = np.sort(rng.choice(len(train.index), n, replace=False))
                part = train.subset(rows)
                model = fit_per_target(kind, part.mixtures, part.losses[:, [k]], seed=s)
                values.append(rho(predict_targets(model, test60.mixtures)[:, 0], test60.losses[:, k]))
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{n}: {statistics.mean(values):.3f} +- {sd:.3f}")
        print(f"  {kind:11s} " + "  ".join(cells), flush=True)
    propose_section(train, k)
    stage_time_section(train)
    r60, per_domain, one_fit = verdict["log_linear"]
    print(f"criteria: log-linear Pile-CC rho at 60M {r60:.3f} >= 0.95: {'MET' if r60 >= 0.95 else 'NOT MET'}; "
          "per-domain aggregation beats one fit on the mean at 60M: "
          + ", ".join(f"{kind} {'yes' if v[1] > v[2] else 'NO'} ({v[1]:.3f} vs {v[2]:.3f})"
                      for kind, v in verdict.items()))


if __name__ == "__main__":
    main()
