"""Per-source loss during training, and the next phase proposed from it, end to end on the real corpus:
a proxy trains phase a with a SourceLossMonitor, the next-phase proposal reads its log (DoReMi against a
reference run), a person accepts it in the spec, the build re-plans phase b, phase a's shards stay
byte-identical, phase b follows the new weights, and training resumes from the phase-a checkpoint."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context, materialize

from corpusmix.cli import main as cli
from corpusmix.core.spec import load_spec
from corpusmix.mixture.plan import PlanError, load_plan
from corpusmix.mixture.shards import check_on_target
from corpusmix.pipeline import run_stage

from .conftest import copy_build

torch = pytest.importorskip("torch")

from corpusmix.mixing.next_phase import NotYet, propose, render  # noqa: E402
from corpusmix.proxies.train import CheckpointError, TrainConfig, heldout_stores, shards_dir, train_proxy  # noqa: E402
from corpusmix.trainer.monitor import read_log  # noqa: E402
from workflows.definitions import build_definitions  # noqa: E402

QUIET = {"progress": lambda m: None}
# 4 x 64 = 256 tokens a step; 128 steps of 32,768 tokens; phase a is steps 1-64, up to token 16,384
CFG = TrainConfig(preset="tiny", seq_len=64, batch=4, warmup=8, checkpoint_every=16, log_every=4, eval_tokens=1024)
BUDGET, RESTART_STEP = 32_768, 64
RESTART = BUDGET // 2


def _mixture(a: dict, b) -> dict:
    return {"total_tokens": BUDGET, "seq_len": 64, "seed": 5, "max_epochs": 8,
            "schedule": {"type": "phases", "phases": [{"name": "a", "end": 0.5, "weights": a},
                                                      {"name": "b", "end": 1.0, "weights": b}]}}


def _build(loaded):
    run_stage("mixture_plan", loaded, **QUIET)
    return run_stage("mixed_shards", loaded, **QUIET)[0]


def _accept(loaded, weights) -> object:
    spec = yaml.safe_load(loaded.path.read_text())
    spec["mixture"]["schedule"]["phases"][1]["weights"] = weights
    loaded.path.write_text(yaml.safe_dump(spec))
    return load_spec(loaded.path)


def _files(loaded, manifest, phase: str) -> dict[str, str]:
    """sha256 of every file of the shards that lie wholly in ``phase``."""
    shards = {f"{k:05d}" for k, i in enumerate(manifest["details"]["shards"]) if set(i["phases"]) == {phase}}
    return {o["path"].rsplit("/", 1)[1]: o["sha256"] for o in manifest["outputs"]
            if o["path"].rsplit("/", 1)[1].split("-")[1].split(".")[0] in shards}


@pytest.mark.slow
def test_monitor_proposal_accept_replan_resume(built_corpus, tmp_path, capsys):
    names = built_corpus.source_names
    skewed = {s: (6.0 if i == 0 else 1.0) for i, s in enumerate(names)}  # phase a starves all but one source
    monitor = {"log": "run/monitor.jsonl", "policy": "doremi", "reference": "reference/monitor.jsonl",
               "eta": 2.0, "smoothing": 0.05}
    loaded = copy_build(built_corpus, tmp_path / "run", mixture=_mixture(skewed, skewed), monitor=monitor,
                        output={"shard_tokens": 4_096})
    before = _build(loaded)
    # the reference run: the same budget on equal weights (DoReMi's reference model)
    ref = copy_build(built_corpus, tmp_path / "reference", mixture=_mixture("equal", "equal"),
                     output={"shard_tokens": 4_096})
    _build(ref)
    stores = heldout_stores(loaded)
    train_proxy(shards_dir(ref), stores, tmp_path / "reference" / "train", CFG, stop_after=RESTART_STEP,
                monitor_log=tmp_path / "run" / "reference" / "monitor.jsonl", **QUIET)

    with pytest.raises(NotYet, match="no monitor log"):
        propose(loaded)
    out = tmp_path / "run" / "train"
    train_proxy(shards_dir(loaded), stores, out, CFG, stop_after=RESTART_STEP // 2,
                monitor_log=tmp_path / "run" / "run" / "monitor.jsonl", **QUIET)
    with pytest.raises(NotYet, match="first restart point"):  # half-way through phase a: nothing to propose
        propose(loaded)
    defs = build_definitions(loaded.path)
    sensor = next(s for s in defs.sensors if s.name == "next_phase_sensor")
    with DagsterInstance.ephemeral() as instance:
        skipped = sensor(build_sensor_context(instance=instance))
    assert isinstance(skipped, SkipReason) and f"first restart point (phase boundary) is at {RESTART:,}" in skipped.skip_message
    train_proxy(shards_dir(loaded), stores, out, CFG, stop_after=RESTART_STEP,
                monitor_log=tmp_path / "run" / "run" / "monitor.jsonl", **QUIET)
    log = read_log(tmp_path / "run" / "run" / "monitor.jsonl")
    assert [r["step"] for r in log] == list(range(4, RESTART_STEP + 1, 4)) and all(r["exact"] for r in log)
    assert log[-1]["tokens"] == RESTART and sum(r["sources"][names[0]]["tokens"] for r in log) > \
        3 * sum(r["sources"][names[1]]["tokens"] for r in log)  # the log sees phase a's 6:1:1:1

    with DagsterInstance.ephemeral() as instance:  # the sensor asks once the run reaches phase b
        request = sensor(build_sensor_context(instance=instance))
        assert isinstance(request, RunRequest) and request.tags["corpusmix/phase"] == "b"
        assert sensor(build_sensor_context(instance=instance)).run_key == request.run_key  # the same log: one run
        done = materialize([defs.resolve_assets_def("next_phase_proposal")], instance=instance)
        assert done.success
        md = {k: v.value for k, v in done.asset_materializations_for_node("next_phase_proposal")[0].metadata.items()}
    proposal = propose(loaded)
    assert cli(["next-phase", str(loaded.path)]) == 0
    printed = capsys.readouterr().out
    assert proposal["accept"] in printed and all(f"\n{s} " in printed for s in names)
    assert md["proposal"] == proposal["name"]  # the asset's proposal is the engine's, byte for byte
    assert md["loss_curves"].startswith("![per-source loss](data:image/svg+xml;base64,")
    table = [r.data for r in md["recommendations"].records]  # the UI's table: one row per source, with its reason
    assert [r["source"] for r in table] == names and all("excess" in r["reason"] for r in table)
    assert {r["source"]: r["proposed"] for r in table} == {s: f"{w:.4f}" for s, w in proposal["weights"].items()}
    assert proposal["phase"] == "b" and proposal["restart_tokens"] == RESTART and proposal["restart_sample"] == RESTART // 64
    assert proposal["keeps_trained_shards"] and proposal["log"]["records"] == len(log)
    recs = {r["source"]: r for r in proposal["recommendations"]}
    # the starved sources lag the equal-weights reference: their excess loss raises their weight
    for s in names[1:]:
        assert recs[s]["excess"] > 0 and recs[s]["action"] == "increase", recs[s]
    assert proposal["weights"][names[0]] < 0.5 < proposal["planned"][names[0]]
    assert sum(proposal["weights"].values()) == pytest.approx(1.0)
    assert "accept:" in render(proposal) and proposal["accept"].startswith("mixture.schedule.phases[1].weights")

    # a proposal is for the phase it was made for
    with pytest.raises(PlanError, match=r"proposed for mixture.schedule.phases\[1\]"):
        spec = yaml.safe_load(loaded.path.read_text())
        spec["mixture"]["schedule"]["phases"].insert(1, {"name": "a2", "end": 0.75, "weights": "equal"})
        spec["mixture"]["schedule"]["phases"][2]["weights"] = {"proposal": proposal["name"]}
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump(spec))
        run_stage("mixture_plan", load_spec(bad), **QUIET)

    accepted = _accept(loaded, {"proposal": proposal["name"]})
    after = _build(accepted)
    plan = load_plan(accepted)[0]
    assert plan["weights_origin"][1]["origin"] == "next-phase proposal"
    quotas = plan["phases"][1]["quotas"]
    assert {s: q / sum(quotas.values()) for s, q in quotas.items()} == pytest.approx(proposal["weights"])
    assert check_on_target(accepted)[0] == []  # phase b's realised tokens follow the new weights
    kept = _files(loaded, before, "a")
    assert len(kept) >= 4 * 4 and _files(accepted, after, "a") == kept  # phase a: every file byte-identical
    assert _files(accepted, after, "b") != _files(loaded, before, "b")

    said: list[str] = []
    result = train_proxy(shards_dir(accepted), stores, out, CFG, progress=said.append,
                         monitor_log=tmp_path / "run" / "run" / "monitor.jsonl")
    assert said[0].startswith(f"resuming from step {RESTART_STEP} of 128") and result["resumed_from"] == RESTART_STEP
    log = read_log(tmp_path / "run" / "run" / "monitor.jsonl")
    assert log[-1]["step"] == 128 and log[-1]["tokens"] == BUDGET
    # what the monitor attributed after the restart is exactly the new lineage's tokens there, per source
    # (targets of steps 65-128: stream positions RESTART + 1 to BUDGET)
    lineage = pa.concat_tables([pq.read_table(accepted.storage_root / o["path"]) for o in after["outputs"]
                                if o["kind"] == "lineage"])
    start, n = lineage.column("stream_start").to_numpy(), lineage.column("n_tokens").to_numpy()
    inside = np.clip(np.minimum(start + n, BUDGET + 1) - np.maximum(start, RESTART + 1), 0, None)
    recount = {s: int(inside[np.array(lineage.column("source").to_pylist()) == s].sum()) for s in names}
    assert {s: sum(r["sources"][s]["tokens"] for r in log if r["step"] > RESTART_STEP) for s in names} == recount

    # shards that differ in what the run has read (the reference's equal weights in phase a) are refused
    with pytest.raises(CheckpointError, match="differ from these in what it has read"):
        train_proxy(shards_dir(ref), stores, out, CFG, **QUIET)


def test_restart_points_and_when_the_trained_shards_are_kept():
    """The phase a log has reached is the latest whose start it has seen; the trained shards are kept
    only for step transitions without renormalisation under the caps, and the reason says why not."""
    from corpusmix.mixing.next_phase import keeps_trained_shards, reached_phase

    plan = {"phases": [{"start": 0.0}, {"start": 100.0}, {"start": 250.0}], "renormalized": False,
            "schedule": {"type": "phases", "transition": "step"}}
    at = [{"tokens": t} for t in (40, 80)]
    assert reached_phase(plan, []) is None and reached_phase(plan, at) is None
    assert reached_phase(plan, at + [{"tokens": 100}]) == 1 and reached_phase(plan, at + [{"tokens": 260}]) == 2
    assert keeps_trained_shards(plan)[0]
    linear = plan | {"schedule": {"type": "phases", "transition": "linear"}}
    kept, why = keeps_trained_shards(linear)
    assert not kept and "transition: linear" in why
    assert not keeps_trained_shards(plan | {"renormalized": True})[0]
    assert not keeps_trained_shards(plan | {"schedule": {"type": "static"}})[0]
