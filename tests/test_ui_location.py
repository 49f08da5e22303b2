"""`dagster dev -w workspace.yaml` serves the code location: the ingest asset partitioned by
source, and a headless `corpusmix build` on the same DAGSTER_HOME shows up in it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .conftest import CORPUS, REPO


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["data"]


def test_dagster_dev_shows_partitioned_ingest_and_cli_runs(make_spec, tmp_path):
    spec = make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]},
                      {"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "*.jsonl.gz")]}])
    home = tmp_path / "home"
    env = os.environ | {"DAGSTER_HOME": str(home), "CORPUSMIX_SPEC": str(spec)}
    build = subprocess.run([sys.executable, "-m", "corpusmix.cli", "build", str(spec), "--source", "web"],
                           env=env, capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stderr
    port = _free_port()
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group, so SIGTERM reaches its children
    try:
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
        assert sorted(nodes, key=lambda n: n["assetKey"]["path"]) == [
            {"assetKey": {"path": ["cross_source_dedup"]}, "isPartitioned": False, "partitionKeys": []},
            {"assetKey": {"path": ["dedup"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["ingest"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["mixed_shards"]}, "isPartitioned": False, "partitionKeys": []},
            {"assetKey": {"path": ["mixture_plan"]}, "isPartitioned": False, "partitionKeys": []},
            {"assetKey": {"path": ["quality"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["tokenize"]}, "isPartitioned": True, "partitionKeys": ["math", "web"]},
            {"assetKey": {"path": ["tokenizer"]}, "isPartitioned": False, "partitionKeys": []}]
        mats = _graphql(port, '{ assetOrError(assetKey: {path: ["ingest"]}) { ... on Asset { assetMaterializations '
                              '{ partition metadataEntries { label } } } } }')["assetOrError"]["assetMaterializations"]
        assert [m["partition"] for m in mats] == ["web"]
        labels = {e["label"] for e in mats[0]["metadataEntries"]}
        assert {"document_acceptance_rate", "token_acceptance_rate", "funnel", "manifest"} <= labels
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
