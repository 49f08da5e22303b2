"""Proxy runs on the session's built corpus: a subsampled mixture repeats each source as the target
budget would, and `corpusmix proxies` trains the swarm's mixtures at a proxy budget (resumably,
after a measured estimate) into the runs tables the fit reads."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpusmix.core.manifest import manifest_path, read_manifest, require_manifest
from corpusmix.core.spec import load_spec
from corpusmix.handoff.megatron_blends import BlendError
from corpusmix.mixing.runs import OURS, read_runs
from corpusmix.mixture.plan import source_subset, store_sizes
from corpusmix.mixture.shards import check_on_target
from corpusmix.pipeline import run_stage

from .conftest import copy_build

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # the session's built corpus
QUIET = {"progress": lambda m: None}


def test_a_subsample_draws_from_a_seeded_subset_that_repeats_as_the_target_would(built_corpus, tmp_path):
    mixture = {"total_tokens": 250_000, "seq_len": 512, "subsample": 0.25,
               "schedule": {"type": "static", "weights": {"code": 1, "web": 1, "math": 1, "dialogue": 1}}}
    loaded = copy_build(built_corpus, tmp_path, mixture=mixture)
    plan = run_stage("mixture_plan", loaded, **QUIET)[0]["details"]["per_source"]
    shards = run_stage("mixed_shards", loaded, **QUIET)[0]
    full = {s: read_manifest(manifest_path(loaded.manifest_root, "tokenize", s))["counts"]["tokens_stored"]
            for s in loaded.source_names}
    lineage = pq.read_table([loaded.storage_root / o["path"] for o in shards["outputs"] if o["kind"] == "lineage"][0]
                            ).to_pandas()
    for s in loaded.source_names:
        m = require_manifest(loaded.manifest_root, "tokenize", s)[1]
        sizes = store_sizes(loaded, s, m)
        subset = source_subset(0, s, sizes, 0.25)
        assert plan[s]["available"] == int(sizes[subset].sum()) == pytest.approx(0.25 * full[s], rel=0.05)
        # the epochs are those of the full budget (1M, 4x) on the whole store
        assert plan[s]["epochs"] == pytest.approx(plan[s]["allocated"] * 4 / full[s], rel=0.05)
        ids = pq.read_table(loaded.storage_root / next(o["path"] for o in m["outputs"]
                                                        if o["kind"] == "token_documents"), columns=["doc_id"])
        allowed = set(np.asarray(ids.column("doc_id").to_pylist(), object)[subset])
        drawn = set(lineage.loc[lineage["source"] == s, "doc_id"])
        assert drawn and drawn <= allowed  # only the subset's documents, and with epochs >= 1 all of them
        if plan[s]["epochs"] >= 1:
            assert drawn == allowed
    assert check_on_target(loaded)[0] == []  # on target, recounted from the lineage
    with pytest.raises(BlendError, match="mixture.subsample is 0.25"):
        run_stage("megatron_blends", loaded, **QUIET)


def test_corpusmix_proxies_trains_the_swarm_into_the_runs_tables(built_corpus, tmp_path):
    loaded = copy_build(built_corpus, tmp_path)
    run_stage("swarm_design", loaded, **QUIET)
    command = [sys.executable, "-m", "corpusmix.cli", "proxies", str(loaded.path), "--runs", "4", "--budget", "32768",
               "--seq-len", "32", "--batch", "4", "--eval-tokens", "256"]
    r = subprocess.run(command, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the CI-sized swarm: 4 proxies of a few hundred steps (the study's science is in benchmarks/proxy_study.py)
    assert "4 proxy runs of 32,768 tokens (256 steps of 4 x 32, tiny), 0 already done" in r.stdout
    assert "estimate:" in r.stdout and "step 256/256 loss" in r.stdout
    root = loaded.storage_root / "proxy_runs"
    runs = read_runs(root / "mixtures.parquet", root / "losses.parquet", **OURS)
    swarm = pq.read_table(loaded.storage_root / require_manifest(loaded.manifest_root, "swarm_design", None)[1]
                          ["outputs"][0]["path"]).to_pandas()
    assert runs.index.tolist() == [0, 1, 2, 3] and runs.domains == loaded.source_names == runs.targets
    assert np.allclose(runs.mixtures, swarm[[f"train_{s}" for s in loaded.source_names]].to_numpy()[:4])
    assert np.isfinite(runs.losses).all() and (runs.losses > 0).all()
    proxy = load_spec(root / "swarm-0001" / "spec.yaml", check_files=False)
    assert proxy.spec.mixture.subsample == pytest.approx(32768 / 1_000_000)
    before = {p: p.read_bytes() for p in (root / "mixtures.parquet", root / "losses.parquet")}
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "0 already done" not in again.stdout and "4 already done" in again.stdout
    assert "estimate:" not in again.stdout  # nothing left to run
    assert {p: p.read_bytes() for p in before} == before


def test_proxy_runs_are_dagster_assets_partitioned_by_the_swarm(built_corpus, tmp_path):
    """Materializing swarm_design adds one proxy_run partition per mixture; materializing a partition
    trains that mixture's proxy (mixing.proxy's settings) and shows its held-out losses and curve."""
    from dagster import AssetKey, DagsterInstance, materialize

    from workflows.definitions import build_definitions

    proxy = {"budget": 4096, "seq_len": 32, "batch": 4, "eval_tokens": 256}
    loaded = copy_build(built_corpus, tmp_path, mixing={"proxy": proxy})
    defs = build_definitions(loaded.path)
    with DagsterInstance.ephemeral() as instance:
        assert materialize([defs.resolve_assets_def("swarm_design")], instance=instance).success
        keys = instance.get_dynamic_partitions("proxy_runs")
        assert keys == [f"swarm-{i:04d}" for i in range(4 * len(loaded.source_names))]
        result = materialize([defs.resolve_assets_def("proxy_run")], partition_key="swarm-0002", instance=instance)
        assert result.success
        md = instance.get_latest_materialization_event(AssetKey("proxy_run")).asset_materialization.metadata
        rows = {r.data["source"]: r.data for r in md["heldout_loss"].records}
        assert set(rows) == set(loaded.source_names) and all(float(r["nats per token"]) > 0 for r in rows.values())
        assert md["curve"].value.startswith("![training loss](data:image/svg+xml;base64,")
        assert md["steps"].value == 4096 // 32 // 4 and md["runs_tables"].value.startswith("1 finished run(s)")
        # a second swarm_design materialization adds nothing twice
        assert materialize([defs.resolve_assets_def("swarm_design")], instance=instance).success
        assert instance.get_dynamic_partitions("proxy_runs") == keys
