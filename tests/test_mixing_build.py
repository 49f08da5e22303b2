"""Mixing laws in the build: the swarm design, the fit and the proposal as Dagster assets, and a
schedule that names a proposal built down to the shards, with the plan saying where its weights
came from.

The proxy results here are the swarm's own mixtures with losses from a known log-linear law plus
seeded noise (our proxy trainer comes with the next issue): the law is known, so what the build
proposes can be checked against the law's true optimum under the caps."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from corpusmix.core.manifest import manifest_path, read_manifest
from corpusmix.core.spec import SpecError, load_spec
from corpusmix.core.storage import sha256_file

from .conftest import CORPUS, base_spec, write_spec

SOURCES = [{"name": n, "kind": k, "paths": [str(CORPUS / n / f"{n}-0000-of-000{c}.jsonl.gz")]}
           for n, k, c in (("wiki", "prose", 3), ("code", "code", 4), ("math", "math", 2))]
# the known law: target k's loss falls as its own source's weight rises (t_kk < 0)
T = np.array([[-1.5, 0.2, 0.1], [0.3, -2.0, 0.2], [0.2, 0.3, -1.8]])
C = np.array([0.8, 0.3, 0.5])
MIXTURE = {"total_tokens": 2_000_000, "seq_len": 512, "max_epochs": 1.0,
           "schedule": {"type": "phases", "phases": [{"name": "warm", "end": 0.5, "weights": "tokens"},
                                                     {"name": "main", "end": 1.0, "weights": {"proposal": "law"}}]}}
MIXING = {"proposals": [{"name": "law", "method": "convex", "kl": 0.0},
                        {"name": "near_prior", "method": "convex", "kl": 0.1},
                        {"name": "sampled", "method": "simulate", "samples": 20_000, "top_k": 50},
                        {"name": "best_run", "method": "best_observed"}]}


def true_losses(x: np.ndarray) -> np.ndarray:
    return np.exp(C) + np.exp(x @ T.T + 0.5)


def true_optimum(caps: np.ndarray) -> np.ndarray:
    from scipy.optimize import minimize

    res = minimize(lambda x: true_losses(x[None])[0].mean(), np.full(3, 1 / 3), method="SLSQP",
                   bounds=[(0, c) for c in caps], constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                   options={"ftol": 1e-12})
    return res.x


def _proxy_losses(loaded, dest) -> str:
    """The losses of 'proxy runs' on the swarm's mixtures, in our layout (val_loss_<source>)."""
    m = read_manifest(manifest_path(loaded.manifest_root, "swarm_design", None))
    swarm = pd.read_parquet(loaded.storage_root / m["outputs"][0]["path"])
    x = swarm[[f"train_{s['name']}" for s in SOURCES]].to_numpy()
    y = true_losses(x) + np.random.default_rng(0).normal(0, 0.003, (len(x), 3))
    pd.DataFrame({"index": swarm["index"], **{f"val_loss_{s['name']}": y[:, k] for k, s in enumerate(SOURCES)}}) \
        .to_csv(dest / "losses.csv", index=False)
    shutil.copy(loaded.storage_root / m["outputs"][0]["path"], dest / "swarm.parquet")
    return str(dest / "losses.csv")


@pytest.mark.slow
def test_a_spec_naming_a_proposal_builds_through_dagster_down_to_the_shards(tmp_path, monkeypatch):
    from dagster import AssetKey, DagsterInstance

    from workflows.build import run_build

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    spec = base_spec(SOURCES, tmp_path, mixture=MIXTURE | {"schedule": {"type": "static", "weights": "tokens"}},
                     mixing=MIXING)
    path = write_spec(tmp_path / "spec.yaml", spec)
    echo: list[str] = []
    assert run_build(path, echo=echo.append), "\n".join(echo)
    loaded = load_spec(path)
    design = read_manifest(manifest_path(loaded.manifest_root, "swarm_design", None))
    assert design["counts"]["runs"] == 12  # 4 x the sources
    caps = np.array([design["details"]["caps"][s["name"]] for s in SOURCES])
    assert caps.min() < 0.5  # math's 1 epoch of ~0.67M tokens is a third of the 2M budget: a cap that binds
    # no proxy results yet: nothing to fit or propose, so neither stage is in the build
    assert not manifest_path(loaded.manifest_root, "mixing_fit", None).exists()
    assert not any("mixing_fit" in line for line in echo), echo

    # the proxy runs come back; the schedule's second phase takes the law's proposal
    spec["mixing"] = MIXING | {"runs": {"mixtures": "swarm.parquet", "losses": _proxy_losses(loaded, tmp_path),
                                        "mixture_prefix": "train_", "loss_prefix": "val_loss_", "loss_suffix": ""}}
    spec["mixture"] = MIXTURE
    write_spec(path, spec)
    echo.clear()
    assert run_build(path, echo=echo.append), "\n".join(echo)
    loaded = load_spec(path)
    prop_manifest = read_manifest(manifest_path(loaded.manifest_root, "mixing_proposal", None))
    proposals = prop_manifest["details"]["proposals"]
    law = np.array([proposals["law"]["weights"][s["name"]] for s in SOURCES])
    assert np.all(law <= caps + 1e-9) and proposals["law"]["binding_caps"]  # held under the caps, and says which bind
    assert law == pytest.approx(true_optimum(caps), abs=0.02)  # the fitted law's optimum is the true law's
    for name in ("near_prior", "sampled", "best_run"):
        w = np.array([proposals[name]["weights"][s["name"]] for s in SOURCES])
        assert np.all(w <= caps + 1e-9), name
    baselines = prop_manifest["details"]["baselines"]
    assert set(baselines) == {"natural", "uniform", "temperature 0.5", "unimax", "best run of the swarm"}
    assert proposals["law"]["objective"] <= min(baselines.values()) + 1e-9  # the optimum beats every baseline

    plan = read_manifest(manifest_path(loaded.manifest_root, "mixture_plan", None))["details"]
    origin = {o["field"]: o for o in plan["weights_origin"]}
    main = origin["mixture.schedule.phases[1].weights"]
    assert main["origin"] == "proposal" and main["proposal"] == "law"
    assert main["mixing_proposal_version"] == prop_manifest["version"] and main["runs"] == 12
    assert origin["mixture.schedule.phases[0].weights"]["origin"] == "baseline tokens"
    phase = plan["phases"][1]
    span = phase["end"] - phase["start"]
    assert {s: q / span for s, q in phase["quotas"].items()} == pytest.approx(proposals["law"]["weights"], abs=1e-9)
    shards = read_manifest(manifest_path(loaded.manifest_root, "mixed_shards", None))
    main_phase = next(p for p in shards["details"]["phases"] if p["name"] == "main")
    assert all(r["ok"] for r in main_phase["sources"].values())  # the shards follow the proposal, within tolerance

    out = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "mixture.schedule.phases[1].weights: proposal 'law' (convex, KL weight 0)" in out.stdout
    assert f"of mixing_proposal {prop_manifest['version']}" in out.stdout
    assert "weights " + ", ".join(f"{s['name']} {proposals['law']['weights'][s['name']]:.4f}" for s in SOURCES) \
        in out.stdout

    with DagsterInstance.get() as instance:
        def meta(asset):
            return instance.get_latest_materialization_event(AssetKey(asset)).asset_materialization.metadata

        picture = meta("mixing_fit")["predicted_vs_observed"].value
        assert picture.startswith("![predicted vs observed](data:image/svg+xml;base64,")
        assert float(meta("mixing_fit")["cv_objective_rho"].value) > 0.9
        rows = [r.data["mixture"] for r in meta("mixing_proposal")["proposals_vs_baselines"].records]
        assert len(rows) == 4 + 5 and any(r.startswith("proposal law") for r in rows)
        origins = [r.data["weights"] for r in meta("mixture_plan")["weights_origin"].records]
        assert origins == ["mixture.schedule.phases[0].weights", "mixture.schedule.phases[1].weights"]

    # same inputs, same laws and proposals, byte for byte
    first = {k: sha256_file(loaded.storage_root / o["path"]) for k in ("mixing_fit", "mixing_proposal")
             for o in read_manifest(manifest_path(loaded.manifest_root, k, None))["outputs"]}
    for stage in ("mixing_fit", "mixing_proposal"):
        manifest_path(loaded.manifest_root, stage, None).unlink()
        shutil.rmtree(loaded.storage_root / stage)
    from corpusmix.pipeline import run_stage

    for stage in ("mixing_fit", "mixing_proposal"):
        run_stage(stage, loaded, progress=lambda s: None)
    again = {k: sha256_file(loaded.storage_root / o["path"]) for k in ("mixing_fit", "mixing_proposal")
             for o in read_manifest(manifest_path(loaded.manifest_root, k, None))["outputs"]}
    assert again == first


def test_a_schedule_naming_a_proposal_is_checked_before_any_work(tmp_path):
    spec = base_spec(SOURCES, tmp_path, mixture=MIXTURE, mixing=MIXING)
    with pytest.raises(SpecError) as e:  # named, but no proxy runs to fit on
        load_spec(write_spec(tmp_path / "a.yaml", spec))
    assert "mixture.schedule.phases[1].weights.proposal" in str(e.value) and "mixing.runs" in str(e.value)
    (tmp_path / "m.csv").write_text("index,train_wiki\n0,1\n")
    runs = {"mixtures": "m.csv", "losses": "missing.csv"}
    spec["mixing"] = MIXING | {"runs": runs}
    spec["mixture"] = MIXTURE | {"schedule": {"type": "static", "weights": {"proposal": "lw"}}}
    with pytest.raises(SpecError) as e:
        load_spec(write_spec(tmp_path / "b.yaml", spec))
    text = str(e.value)
    assert "no proposal 'lw' in mixing.proposals" in text and "did you mean 'law'?" in text
    assert "mixing.runs.losses: file 'missing.csv' does not exist" in text
    spec["mixing"] = MIXING | {"runs": runs | {"losses": "m.csv"}, "regressor": "lightgbm"}
    with pytest.raises(SpecError) as e:
        load_spec(write_spec(tmp_path / "c.yaml", spec))
    assert "mixing.proposals[0].method: the convex proposer needs log-linear laws" in str(e.value)


def test_the_runs_must_cover_the_sources_and_nothing_else():
    from corpusmix.mixing.runs import Runs, RunsError, over_sources

    runs = Runs(np.arange(3), ["wikipedia", "code"], ["t"], np.array([[0.5, 0.5], [1, 0], [0, 1.0]]), np.ones((3, 1)))
    with pytest.raises(RunsError, match=r"training domains \['wikipedia'\] are not sources.*mixing.runs.domains"):
        over_sources(runs, ["code", "wiki"], {}, "m.csv")
    renamed = over_sources(runs, ["code", "wiki"], {"wikipedia": "wiki"}, "m.csv")
    assert renamed.domains == ["code", "wiki"] and renamed.mixtures[0].tolist() == [0.5, 0.5]
    assert renamed.mixtures[1].tolist() == [0.0, 1.0]  # columns in the spec's source order
    with pytest.raises(RunsError, match=r"no run trains on source\(s\) \['math'\]"):
        over_sources(runs, ["code", "wiki", "math"], {"wikipedia": "wiki"}, "m.csv")


@pytest.mark.parametrize("kind", ["log_linear", "ridge", "lightgbm"])
def test_fitted_laws_predict_the_same_after_a_round_trip_through_json(kind):
    """What mixing_fit writes (laws.json) is what mixing_proposal predicts with: no refit."""
    import orjson

    from corpusmix.mixing.laws import fit_per_target, from_params, predict_targets

    rng = np.random.default_rng(1)
    x = rng.dirichlet(np.ones(3), 60)
    y = true_losses(x) + rng.normal(0, 0.003, (60, 3))
    models = fit_per_target(kind, x, y, seed=0)
    params = orjson.loads(orjson.dumps([m.params() for m in models]))
    probe = rng.dirichlet(np.ones(3), 20)
    assert np.array_equal(predict_targets(from_params(kind, params), probe), predict_targets(models, probe))


def test_the_swarm_table_is_what_the_fit_reads_back(tmp_path):
    """The swarm design's layout is a runs table's mixtures: a proxy runner only adds the losses."""
    from corpusmix.mixing.design import swarm_table
    from corpusmix.mixing.runs import OURS, read_runs

    x = np.random.default_rng(0).dirichlet(np.ones(3), 8)
    pq.write_table(swarm_table(["wiki", "code", "math"], x), tmp_path / "swarm.parquet")
    pd.DataFrame({"index": range(8), "val_loss_wiki": true_losses(x)[:, 0]}).to_parquet(tmp_path / "loss.parquet")
    runs = read_runs(tmp_path / "swarm.parquet", tmp_path / "loss.parquet", **OURS)
    assert runs.domains == ["wiki", "code", "math"] and runs.targets == ["wiki"]
    assert np.allclose(runs.mixtures, x) and np.allclose(runs.losses[:, 0], true_losses(x)[:, 0])
