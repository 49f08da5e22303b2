"""`dagster dev -w workspace.yaml` serves the code location: the ingest asset partitioned by
source, and a headless `corpusmix build` on the same DAGSTER_HOME shows up in it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from .conftest import CORPUS
from .dagster_dev import dagster_dev
from .dagster_dev import graphql as _graphql

pytestmark = pytest.mark.slow  # starts dagster dev


def test_dagster_dev_shows_partitioned_ingest_and_cli_runs(make_spec, tmp_path):
    spec = make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]},
                      {"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "*.jsonl.gz")]}])
    home = tmp_path / "home"
    env = os.environ | {"DAGSTER_HOME": str(home), "CORPUSMIX_SPEC": str(spec)}
    build = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec), "--source", "web"],
                           env=env, capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    with dagster_dev(env) as port:
        deadline = time.time() + 120
        nodes = None
        while time.time() < deadline:
            try:
                nodes = _graphql(port, "{ assetNodes { assetKey { path } isPartitioned partitionKeys } }")["assetNodes"]
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        # the stages of this spec's build: no eval sets (no eval_index, decontaminate), no proxy runs to fit
        # (no mixing_fit, mixing_proposal), MDS off (no mds_shards)
        assert sorted(nodes, key=lambda n: n["assetKey"]["path"]) == [
            {"assetKey": {"path": ["cross_source_dedup"]}, "isPartitioned": False, "partitionKeys": []},
            {"assetKey": {"path": ["dedup"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["heldout_split"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["ingest"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["megatron_blends"]}, "isPartitioned": False, "partitionKeys": []},
            {"assetKey": {"path": ["mixed_shards"]}, "isPartitioned": False, "partitionKeys": []},
            {"assetKey": {"path": ["mixture_plan"]}, "isPartitioned": False, "partitionKeys": []},
            # one partition per swarm mixture, added when swarm_design materializes (not in a --source build)
            {"assetKey": {"path": ["proxy_run"]}, "isPartitioned": True, "partitionKeys": []},
            {"assetKey": {"path": ["quality"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["swarm_design"]}, "isPartitioned": False, "partitionKeys": []},
            {"assetKey": {"path": ["tokenize"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["tokenizer"]}, "isPartitioned": False, "partitionKeys": []}]
        mats = _graphql(port, '{ assetOrError(assetKey: {path: ["ingest"]}) { ... on Asset { assetMaterializations '
                              '{ partition metadataEntries { label } } } } }')["assetOrError"]["assetMaterializations"]
        assert [m["partition"] for m in mats] == ["web"]
        labels = {e["label"] for e in mats[0]["metadataEntries"]}
        assert {"document_acceptance_rate", "token_acceptance_rate", "funnel", "manifest"} <= labels
