"""The mixing_fit stage: one mixing law per target, fitted on proxy-run results.

The results are a table the spec names (``mixing.runs``: mixtures and losses joined on
``index``, RegMix's layout by default; the proxy runs of the next stages fill one in our
layout). Its training domains must be the spec's sources (renamed by
``mixing.runs.domains`` where the table calls them otherwise). One regressor of
``mixing.regressor`` is fitted per target (``laws.fit_per_target``); the objective is the
weighted mean of the per-target predictions (``mixing.objective``), never a law fitted to an
averaged loss. The fit's quality is measured on runs it was not fitted on: out-of-fold
predictions over ``mixing.cv_folds`` seeded folds, Spearman's rho per target and for the
objective.

Outputs: ``laws.json`` (the laws' parameters, enough to predict without refitting: what
``mixing_proposal`` reads), ``runs.parquet`` (each run's mixture, measured losses and
objective, and the objective predicted in sample and out of fold: the predicted-vs-observed
picture) and ``fit.md``. Without ``mixing.runs`` there is nothing to fit and the stage is not part of the build.
Same tables and spec, same bytes: the fits are seeded and LightGBM runs deterministic.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from corpusmix.core.manifest import manifest_refs, require_manifest, staged_ref
from corpusmix.core.spec import LoadedSpec, Spec
from corpusmix.core.stage import Built, Stage, StageRun
from corpusmix.core.storage import sha256_file
from corpusmix.mixing.laws import cross_validated, fit_per_target, out_of_fold, predict_targets
from corpusmix.mixing.runs import OURS, Runs, RunsError, over_sources, read_runs

NAME = "mixing_fit"
LAWS_FILE = "laws.json"
RUNS_FILE = "runs.parquet"
README = "fit.md"


def fit_config(loaded: LoadedSpec, partition: None) -> dict:
    m = loaded.spec.mixing
    return {"runs": m.runs.model_dump(mode="json") if m.runs else None, "regressor": m.regressor,
            "objective": m.objective, "cv_folds": m.cv_folds, "seed": m.seed, "sources": loaded.source_names}


def fit_inputs(loaded: LoadedSpec, partition: None) -> list:
    """The swarm it follows and the checksums of the runs tables: a new table is a new fit."""
    ident = [require_manifest(loaded.manifest_root, "swarm_design", None)[1]["version"]]
    runs = loaded.spec.mixing.runs
    if runs is not None:
        ident += [sha256_file(loaded.resolve(p)) for p in (runs.mixtures, runs.losses)]
    return ident


def objective_weights(targets: list[str], objective: dict[str, float], where: str) -> np.ndarray:
    """Weights of the runs' targets in the objective (equal when the spec gives none), summing to 1."""
    if not objective:
        return np.full(len(targets), 1.0 / len(targets))
    unknown = [t for t in objective if t not in targets]
    if unknown:
        raise RunsError(f"{where}: mixing.objective names target(s) {unknown} that the runs do not evaluate; "
                        f"they evaluate {targets}")
    w = np.array([float(objective.get(t, 0.0)) for t in targets])
    if (w < 0).any() or not w.sum() > 0:
        raise RunsError("mixing.objective: weights must be >= 0 with a positive sum")
    return w / w.sum()


def load_runs(loaded: LoadedSpec) -> Runs:
    """The spec's runs tables, their domains as the spec's sources."""
    cfg = loaded.spec.mixing.runs
    mixtures, losses = loaded.resolve(cfg.mixtures), loaded.resolve(cfg.losses)
    runs = read_runs(mixtures, losses, cfg.mixture_prefix, cfg.loss_prefix, cfg.loss_suffix)
    return over_sources(runs, loaded.source_names, cfg.domains, str(mixtures))


def runs_table(runs: Runs, weights: np.ndarray, fitted: np.ndarray, oof: np.ndarray) -> pa.Table:
    """Per run: mixture, measured losses and objective, predicted objective in sample and out of fold."""
    cols = {"index": pa.array(runs.index.astype(np.int64))}
    cols |= {f"{OURS['mixture_prefix']}{d}": pa.array(runs.mixtures[:, j]) for j, d in enumerate(runs.domains)}
    cols |= {f"{OURS['loss_prefix']}{t}": pa.array(runs.losses[:, k]) for k, t in enumerate(runs.targets)}
    cols |= {"objective": pa.array(runs.losses @ weights), "predicted": pa.array(fitted @ weights),
             "predicted_out_of_fold": pa.array(oof @ weights)}
    return pa.table(cols)


def build_fit(ctx: StageRun) -> Built:
    loaded = ctx.loaded
    m = loaded.spec.mixing
    swarm = ctx.upstream("swarm_design")
    inputs = manifest_refs(loaded, [swarm])
    runs = load_runs(loaded)
    where = str(loaded.resolve(m.runs.losses))
    weights = objective_weights(runs.targets, m.objective, where)
    if len(runs.index) < m.cv_folds:
        raise RunsError(f"{where}: {len(runs.index)} runs cannot be cross-validated over {m.cv_folds} folds; "
                        "add runs or lower mixing.cv_folds")
    ctx.say(f"fitting {m.regressor} laws for {len(runs.targets)} target(s) on {len(runs.index)} runs")
    models = fit_per_target(m.regressor, runs.mixtures, runs.losses, seed=m.seed)
    oof = out_of_fold(m.regressor, runs.mixtures, runs.losses, m.cv_folds, m.seed)
    cv = cross_validated(m.regressor, runs.mixtures, runs.losses, weights, m.cv_folds, m.seed, predicted=oof)
    fitted = predict_targets(models, runs.mixtures)
    laws = {"regressor": m.regressor, "domains": runs.domains, "targets": runs.targets,
            "objective": dict(zip(runs.targets, map(float, weights))), "runs": len(runs.index),
            "cross_validated": cv, "params": [model.params() for model in models]}
    (ctx.staging / LAWS_FILE).write_bytes(orjson.dumps(laws, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))
    pq.write_table(runs_table(runs, weights, fitted, oof), ctx.staging / RUNS_FILE, compression="zstd")
    rhos = ", ".join(f"{t} {r:.3f}" for t, r in zip(runs.targets, cv["per_target"]))
    (ctx.staging / README).write_text(
        f"# Mixing laws\n\n{m.regressor} laws, one per target, fitted on {len(runs.index)} proxy runs "
        f"({m.runs.mixtures}, {m.runs.losses}).\n\nCross-validated ({m.cv_folds} folds, seed {m.seed}) Spearman "
        f"rho of the objective: {cv['objective']:.3f} (mean absolute error {cv['objective_mae']:.4f}); per target: "
        f"{rhos}.\n")
    for p in (m.runs.mixtures, m.runs.losses):
        path = loaded.resolve(p)
        inputs.append({"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size,
                       "upstream_manifest": None})
    details = {"regressor": m.regressor, "targets": runs.targets,
               "objective": laws["objective"], "cross_validated": cv}
    return Built(inputs=inputs,
                 outputs=[staged_ref(ctx.staging, LAWS_FILE, "laws", rows=1),
                          staged_ref(ctx.staging, RUNS_FILE, "runs", rows=len(runs.index)),
                          staged_ref(ctx.staging, README, "readme")],
                 counts={"runs": len(runs.index), "targets": len(runs.targets)}, details=details,
                 summary=f"{m.regressor} on {len(runs.index)} runs, cross-validated rho {cv['objective']:.3f}")


STAGE = Stage(name=NAME, scope="global", upstream=("swarm_design",), config=fit_config, build=build_fit,
              module=__name__, inputs=fit_inputs, active=Spec.fits_laws)
