"""Issue 22's study: do laws fitted on our own proxy runs predict held-out mixtures, and does the
proposed mixture beat the baselines when trained on? Run in resumable parts of an hour or less.

    python benchmarks/proxy_study.py --part proxies [--limit-minutes 50]   # swarm, held-out mixtures, seeds
    python benchmarks/proxy_study.py --part fit                            # fit quality (no training)
    python benchmarks/proxy_study.py --part transfer [--limit-minutes 50]  # larger target models

Setup (decided before any run): ``specs/shared-corpus.yaml`` (six sources, held-out splits on,
target budget 20M tokens, max_epochs 4) built into ``benchmarks/results/proxy_study/`` (ignored by
git; the run directories and checkpoints live there, so a part killed or timed out resumes). Proxy:
preset tiny (0.44M parameters without embeddings), sequences of 128 tokens, batches of 8, 128
steps = 131,072 tokens per run, lr 3e-3 with 20 warm-up steps and cosine decay, each source
subsampled by 131,072 / 20M so it repeats as in the target run (``mixture.subsample``); held-out
loss on the first 8,192 tokens of each source's held-out store (nats per token; math holds
12.6k, dialogue 14.6k: every source has 8,192).

Runs: the 24 mixtures of the spec's swarm design (4 x 6 sources, mixing.seed 0), seed 0; 4
held-out mixtures, drawn by the same swarm procedure with seed 1 (never fitted on); the natural
mixture (token shares) with seeds 0, 1, 2 for the seed noise.

Criteria, set before the runs:
1. Fit quality (``--part fit``): log-linear laws per source fitted on the 24 swarm runs predict the
   4 held-out mixtures; reported per source and for the objective (the mean of the six losses):
   mean absolute error and Spearman rho over the 4 (rho of 4 points is coarse: +-1 steps of 0.2 /
   0.4); also leave-one-out over the 24. Met if the objective's held-out MAE is at most 2x the
   seed standard deviation of the objective (the 3 natural-mixture seeds).
2. Transfer (``--part transfer``): preset small (1.8M, 4.1x the proxy's non-embedding parameters)
   on 2x the proxy's tokens (262,144), 6 mixtures x 3 seeds (0, 1, 2): the convex proposal (KL
   weight 0.1) of log-linear laws fitted on the 28 seed-0 proxy runs (24 swarm + 4 held-out
   mixtures; equal weights over the six sources), natural, uniform, temperature 0.5, UniMax, and
   the swarm run with the lowest measured objective. Each of the six is also trained once at the
   proxy scale (seed 0), for a measured proxy ranking. Reported: objective per mixture (mean and
   sd over seeds), the proposal against each other mixture with the paired standard error over
   seeds (same seed = same initialisation and batch order), Spearman rho of the law-predicted and
   of the proxy-measured objective against the target-measured one over the six. Met if the
   proposal beats natural and uniform by more than 2 paired SEs each and is within 1 paired SE of
   the best swarm mixture. Changed before any transfer run: the first plan said 4x the tokens;
   measured on this machine (``step_seconds``) a small run of 4x costs ~533 s and 18 of them 2.7 h,
   over the study's 3 h with the first part's ~1 h, so 2x (~275 s a run, ~1.5 h with the six
   proxy-scale runs). Target runs go seed by seed; the report uses whole seeds only. A mixture
   equal to an earlier one is trained once (UniMax is uniform here: no cap binds at 1/6), so 5
   distinct mixtures x 3 seeds = 15 target runs, ~70 min.
Everything that comes out is written to ``benchmarks/results/proxy_study.txt``, negative or not.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STUDY = REPO / "benchmarks" / "results" / "proxy_study"
REPORT = REPO / "benchmarks" / "results" / "proxy_study.txt"
PICTURE = REPO / "benchmarks" / "results" / "proxy_study_fit.svg"  # predicted vs measured, the held-out mixtures
PROXY = {"budget": 131_072, "preset": "tiny", "seq_len": 128, "batch": 8, "lr": 3e-3, "seed": 0,
         "eval_tokens": 8192, "threads": 2, "device": "cpu"}


def study_spec():
    """The shared-corpus spec with its storage in the study folder and the proxy settings above."""
    from corpusmix.core.spec import load_spec

    src = REPO / "specs" / "shared-corpus.yaml"
    spec = yaml.safe_load(src.read_text())
    for s in spec["sources"]:
        s["paths"] = [str((src.parent / p).resolve()) for p in s["paths"]]
    spec["tokenizer"]["path"] = str((src.parent / spec["tokenizer"]["path"]).resolve())
    spec["storage"] = {"root": str(STUDY / "data"), "manifests": str(STUDY / "manifests")}
    spec["mixing"] = {"proxy": PROXY}
    STUDY.mkdir(parents=True, exist_ok=True)
    path = STUDY / "spec.yaml"
    if not path.is_file() or path.read_text() != yaml.safe_dump(spec, sort_keys=False):
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_spec(path)


def planned_runs(loaded) -> list[tuple[str, dict[str, float], int]]:
    """(run name, weights, seed) of every proxy run of the study, in the order they are trained."""
    from corpusmix.mixing.design import prior_and_caps
    from corpusmix.mixing.propose import swarm
    from corpusmix.mixture.plan import availability
    from corpusmix.proxies.runs import swarm_runs

    sources = loaded.source_names
    prior, caps = prior_and_caps(loaded, availability(loaded, exact_only=True))
    cfg = loaded.spec.mixing.swarm
    heldout = swarm(prior, 4, 1, caps, temperature=cfg.temperature, strengths=tuple(cfg.strengths),
                    min_weight=cfg.min_weight)
    runs = [(name, w, 0) for name, w in swarm_runs(loaded)]
    runs += [(f"heldout-{i:04d}", dict(zip(sources, map(float, x))), 0) for i, x in enumerate(heldout)]
    runs += [(f"natural-seed{s}", dict(zip(sources, map(float, prior))), s) for s in (0, 1, 2)]
    return runs


def part_proxies(loaded, limit_minutes: float) -> None:
    from corpusmix.pipeline import build_all
    from corpusmix.proxies.runs import run_dir, run_proxy, train_config
    from corpusmix.proxies.train import RESULT, TrainConfig

    build_all(loaded, until="swarm_design", progress=lambda m: None)
    base, budget = train_config(loaded)
    deadline = time.monotonic() + 60 * limit_minutes
    for name, weights, seed in planned_runs(loaded):
        if (run_dir(loaded, name) / "train" / RESULT).is_file():
            continue
        if time.monotonic() > deadline:
            print(f"time limit reached before {name}: run this part again to go on", flush=True)
            return
        t = time.perf_counter()
        cfg = TrainConfig(**{**base.__dict__, "seed": seed})
        result = run_proxy(loaded, name, weights, budget, cfg, progress=lambda m: None)
        print(f"{name}: {time.perf_counter() - t:6.1f} s, final train loss {result['final_train_loss']:.3f}, held-out "
              + ", ".join(f"{s} {r['loss_nats']:.3f}" for s, r in result["eval"].items()), flush=True)


def results(loaded) -> dict[str, tuple[dict[str, float], np.ndarray]]:
    """Every finished run: its weights and its held-out losses (nats per token, spec source order)."""
    from corpusmix.proxies.runs import run_dir
    from corpusmix.proxies.train import RESULT

    out = {}
    for name, weights, _ in planned_runs(loaded):
        f = run_dir(loaded, name) / "train" / RESULT
        if f.is_file():
            ev = orjson.loads(f.read_bytes())["eval"]
            out[name] = (weights, np.array([ev[s]["loss_nats"] for s in loaded.source_names]))
    return out


def part_fit(loaded) -> list[str]:
    from scipy.stats import spearmanr

    from corpusmix.mixing.laws import fit_per_target, out_of_fold, predict_targets
    from corpusmix.ops.report import scatter_svg

    done = results(loaded)
    sources = loaded.source_names
    swarm = [n for n in done if n.startswith("swarm-")]
    held = [n for n in done if n.startswith("heldout-")]
    seeds = [n for n in done if n.startswith("natural-seed")]
    lines = [f"runs finished: {len(swarm)} swarm, {len(held)} held-out mixtures, {len(seeds)} natural-mixture seeds",
             "seeds: swarm design mixing.seed 0 (24 mixtures), held-out mixtures swarm seed 1, training seed 0 for "
             "swarm and held-out runs, 0/1/2 for the natural mixture; mixture.seed 1234 (the spec's); fit starts seed 0"]
    if len(seeds) >= 2:
        y = np.stack([done[n][1] for n in seeds])
        sd = y.std(axis=0, ddof=1)
        obj_sd = float(y.mean(axis=1).std(ddof=1))
        lines.append("seed noise (sd over the natural mixture's seeds, nats): " + ", ".join(
            f"{s} {v:.4f}" for s, v in zip(sources, sd)) + f"; objective {obj_sd:.4f}")
    else:
        obj_sd = None
    lines.append("per run: weights (" + ", ".join(sources) + ") -> held-out loss, nats per token (same order)")
    lines += [f"  {n:14} " + " ".join(f"{done[n][0][s]:.3f}" for s in sources) + " -> "
              + " ".join(f"{v:.3f}" for v in done[n][1]) for n in done]
    if len(swarm) < 12 or not held:
        lines.append("fit: not enough runs yet")
        return lines
    x = np.stack([[done[n][0][s] for s in sources] for n in swarm])
    y = np.stack([done[n][1] for n in swarm])
    models = fit_per_target("log_linear", x, y, seed=0)
    xh = np.stack([[done[n][0][s] for s in sources] for n in held])
    yh = np.stack([done[n][1] for n in held])
    ph = predict_targets(models, xh)
    mae = np.abs(ph - yh).mean(axis=0)
    PICTURE.write_text(scatter_svg(yh.ravel(), ph.ravel(), f"{len(held)} held-out mixtures x {len(sources)} sources: "
                                   "held-out loss, nats", size=420))
    obj_mae = float(np.abs(ph.mean(axis=1) - yh.mean(axis=1)).mean())
    rho = lambda a, b: float(spearmanr(a, b)[0]) if len(a) > 2 else float("nan")  # noqa: E731
    lines.append(f"log-linear laws fitted on {len(swarm)} swarm runs, predicting the {len(held)} held-out mixtures:")
    lines.append("  MAE per source (nats): " + ", ".join(f"{s} {v:.4f}" for s, v in zip(sources, mae))
                 + f"; objective {obj_mae:.4f}")
    lines.append("  Spearman rho per source: " + ", ".join(f"{s} {rho(ph[:, k], yh[:, k]):+.2f}"
                                                          for k, s in enumerate(sources))
                 + f"; objective {rho(ph.mean(axis=1), yh.mean(axis=1)):+.2f}")
    # paired against the trivial prediction (every held-out mixture gets the swarm's mean objective)
    law_err = np.abs(ph.mean(axis=1) - yh.mean(axis=1))
    flat_err = np.abs(y.mean(axis=1).mean() - yh.mean(axis=1))
    diff = flat_err - law_err
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    lines.append(f"  held-out objective error, the swarm's mean minus the law's: {diff.mean():+.4f} +- {se:.4f} nats "
                 f"(paired SE over the {len(diff)} mixtures; positive: the law is closer)")
    oof = out_of_fold("log_linear", x, y, folds=len(swarm), seed=0)
    lines.append(f"  leave-one-out over the {len(swarm)} swarm runs: objective rho "
                 f"{rho(oof.mean(axis=1), y.mean(axis=1)):+.3f}, MAE {np.abs(oof.mean(axis=1) - y.mean(axis=1)).mean():.4f}"
                 f" (median {np.median(np.abs(oof.mean(axis=1) - y.mean(axis=1))):.4f}); "
                 "per source rho " + ", ".join(f"{s} {rho(oof[:, k], y[:, k]):+.2f}" for k, s in enumerate(sources)))
    spread = float(y.mean(axis=1).std(ddof=1))
    lines.append(f"  spread of the objective over the swarm (sd): {spread:.4f} nats")
    if obj_sd is not None:
        lines.append(f"criterion 1: held-out objective MAE {obj_mae:.4f} <= 2 x seed sd {2 * obj_sd:.4f}: "
                     + ("MET" if obj_mae <= 2 * obj_sd else "NOT MET"))
    return lines


TARGET = {"preset": "small", "budget": 2 * PROXY["budget"]}  # 4.1x the proxy's parameters, 2x its tokens
TARGET_SEEDS = (0, 1, 2)


def transfer_mixtures(loaded) -> tuple[dict[str, dict[str, float]], dict[str, str], list]:
    """The mixtures trained at the target scale: the convex proposal (KL weight 0.1) of log-linear
    laws fitted on every seed-0 proxy run of the study's first part (24 swarm + 4 held-out mixtures),
    the four baselines (temperature T as everywhere in corpusmix: shares n_i^(1/T)), and the swarm
    run with the lowest measured objective; a mixture equal to one before it is trained once (the
    second dict names it and the one it equals: UniMax is uniform where no cap binds at 1/6), and the
    laws the proposal came from."""
    from corpusmix.mixing.design import prior_and_caps
    from corpusmix.mixing.laws import fit_per_target
    from corpusmix.mixing.propose import baselines, best_observed, convex
    from corpusmix.mixture.plan import availability

    sources = loaded.source_names
    done = results(loaded)
    fitted = [n for n in done if n.startswith(("swarm-", "heldout-"))]
    swarm_runs = [n for n in fitted if n.startswith("swarm-")]
    if len(swarm_runs) < 24 or len(fitted) < 28:
        raise SystemExit("the transfer part needs the first part's 24 swarm and 4 held-out runs: run --part proxies")
    prior, caps = prior_and_caps(loaded, availability(loaded, exact_only=True))
    x = np.stack([[done[n][0][s] for s in sources] for n in fitted])
    y = np.stack([done[n][1] for n in fitted])
    objective = np.ones(len(sources))
    laws = fit_per_target("log_linear", x, y, seed=0)
    mixtures = {"proposal": convex(laws, objective, prior, caps, kl=0.1).weights}
    mixtures |= {name.replace(" ", "-"): w for name, w in baselines(prior, caps).items()}
    xs = np.stack([[done[n][0][s] for s in sources] for n in swarm_runs])
    ys = np.stack([done[n][1] for n in swarm_runs])
    mixtures["best-of-swarm"] = best_observed(xs, ys, objective, caps).weights
    kept, same_as = {}, {}
    for k, w in mixtures.items():
        twin = next((j for j, v in kept.items() if np.allclose(v, w, atol=1e-9)), None)
        if twin is None:
            kept[k] = w
        else:
            same_as[k] = twin
    return {k: dict(zip(sources, map(float, w))) for k, w in kept.items()}, same_as, laws


def transfer_runs(mixtures: dict[str, dict[str, float]]) -> list[tuple[str, str, dict[str, float], int, bool]]:
    """(run, mixture, weights, seed, target?) in training order: each mixture once at the proxy scale
    (seed 0; the natural mixture's and the best swarm run's exist already), then seed by seed at the
    target scale, so that a part cut short leaves whole seeds to compare."""
    existing = {"natural": "natural-seed0"}
    runs = [(existing.get(k, f"proxy-{k}"), k, w, 0, False) for k, w in mixtures.items() if k != "best-of-swarm"]
    runs += [(f"target-{k}-seed{seed}", k, w, seed, True) for seed in TARGET_SEEDS for k, w in mixtures.items()]
    return runs


def part_transfer(loaded, limit_minutes: float) -> None:
    from corpusmix.proxies.runs import run_dir, run_proxy, train_config
    from corpusmix.proxies.train import RESULT, TrainConfig

    deadline = time.monotonic() + 60 * limit_minutes
    for name, _, weights, seed, target in transfer_runs(transfer_mixtures(loaded)[0]):
        if (run_dir(loaded, name) / "train" / RESULT).is_file():
            continue
        if time.monotonic() > deadline:
            print(f"time limit reached before {name}: run this part again to go on", flush=True)
            return
        base, budget = train_config(loaded, **(TARGET if target else {}))
        t = time.perf_counter()
        result = run_proxy(loaded, name, weights, budget, TrainConfig(**{**base.__dict__, "seed": seed}),
                           progress=lambda m: None)
        print(f"{name}: {time.perf_counter() - t:6.1f} s, held-out "
              + ", ".join(f"{s} {r['loss_nats']:.3f}" for s, r in result["eval"].items()), flush=True)


def _measured(loaded, name: str) -> np.ndarray | None:
    from corpusmix.proxies.runs import run_dir
    from corpusmix.proxies.train import RESULT

    f = run_dir(loaded, name) / "train" / RESULT
    if not f.is_file():
        return None
    ev = orjson.loads(f.read_bytes())["eval"]
    return np.array([ev[s]["loss_nats"] for s in loaded.source_names])


def transfer_report(loaded) -> list[str]:
    """Criterion 2's figures from whatever target runs have finished (whole seeds only)."""
    from scipy.stats import spearmanr

    from corpusmix.mixing.laws import predict_targets

    try:
        mixtures, same_as, laws = transfer_mixtures(loaded)
    except SystemExit:
        return []
    runs = transfer_runs(mixtures)
    sources = loaded.source_names
    lines = [f"transfer: target preset {TARGET['preset']}, {TARGET['budget']:,} tokens per run (proxy: "
             f"{PROXY['preset']}, {PROXY['budget']:,}); seeds {list(TARGET_SEEDS)}; objective = mean held-out loss "
             "of the six sources, nats per token",
             "  mixtures (" + ", ".join(sources) + "):"]
    lines += [f"    {k:16} " + " ".join(f"{w[s]:.3f}" for s in sources) for k, w in mixtures.items()]
    lines += [f"    {k:16} = {twin} (the same weights: trained once)" for k, twin in same_as.items()]
    target = {}  # mixture -> seeds x sources
    for seed in TARGET_SEEDS:
        got = {k: _measured(loaded, f"target-{k}-seed{seed}") for k in mixtures}
        if any(v is None for v in got.values()):
            break  # only whole seeds: every mixture at that seed
        for k, v in got.items():
            target.setdefault(k, []).append(v)
    if not target:
        lines.append("  no whole seed of target runs yet")
        return lines
    n = len(next(iter(target.values())))
    obj = {k: np.array([v.mean() for v in vs]) for k, vs in target.items()}
    lines.append(f"  target objective per mixture, mean over {n} seed(s) (sd over seeds):")
    lines += [f"    {k:16} {o.mean():.4f} ({o.std(ddof=1) if n > 1 else float('nan'):.4f})"
              for k, o in sorted(obj.items(), key=lambda kv: kv[1].mean())]

    def paired(a: str, b: str) -> str:
        d = obj[b] - obj[a]  # positive: a is better (lower loss)
        se = d.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        return f"{a} vs {b}: {d.mean():+.4f} +- {se:.4f} nats (paired SE, {n} seeds; positive: {a} lower)"

    lines += ["  " + paired("proposal", other) for other in mixtures if other != "proposal"]
    if n > 1:
        d_nat, d_uni, d_best = (obj[o] - obj["proposal"] for o in ("natural", "uniform", "best-of-swarm"))
        se = lambda d: d.std(ddof=1) / np.sqrt(n)  # noqa: E731
        met = d_nat.mean() > 2 * se(d_nat) and d_uni.mean() > 2 * se(d_uni) and abs(d_best.mean()) <= se(d_best)
        lines.append("criterion 2: the proposal beats natural and uniform by more than 2 paired SEs and is within 1 "
                     f"SE of the best swarm mixture: {'MET' if met else 'NOT MET'} ({n} seeds)")
    done = results(loaded)
    keys = list(obj)
    measured = np.array([obj[k].mean() for k in keys])
    predicted = predict_targets(laws, np.array([[mixtures[k][s] for s in sources] for k in keys])).mean(axis=1)
    lines.append("  law-predicted objective (proxy scale) vs target-measured, Spearman rho over the "
                 f"{len(keys)} mixtures: {spearmanr(predicted, measured)[0]:+.2f}")
    proxy = {k: _measured(loaded, name) for name, k, _, _, target in runs if not target}
    proxy["best-of-swarm"] = next(done[r][1] for r in done if r.startswith("swarm-")
                                  and np.allclose([done[r][0][s] for s in sources],
                                                  [mixtures["best-of-swarm"][s] for s in sources]))
    if all(proxy.get(k) is not None for k in keys):
        pm = np.array([proxy[k].mean() for k in keys])
        lines.append("  proxy-measured objective (seed 0) vs target-measured, Spearman rho: "
                     f"{spearmanr(pm, measured)[0]:+.2f}; per mixture proxy -> target: "
                     + ", ".join(f"{k} {p:.3f} -> {m:.3f}" for k, p, m in zip(keys, pm, measured)))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["proxies", "fit", "transfer"], required=True)
    ap.add_argument("--limit-minutes", type=float, default=50.0)
    args = ap.parse_args()
    loaded = study_spec()
    if args.part == "proxies":
        part_proxies(loaded, args.limit_minutes)
    elif args.part == "transfer":
        part_transfer(loaded, args.limit_minutes)
    lines = part_fit(loaded) + transfer_report(loaded)
    print("\n".join(lines))
    REPORT.write_text("proxy study (benchmarks/proxy_study.py; setup and criteria in its docstring)\n"
                      + "\n".join(lines) + "\n")
    print(f"written: {REPORT}")


if __name__ == "__main__":
    main()
