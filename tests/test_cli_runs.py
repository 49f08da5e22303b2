"""`corpusmix build` runs are first-class runs of the workspace's code location: each carries the
remote job origin of `workspace.yaml`'s location, the build's `corpusmix/build` tag, the partition
tags a per-source run had before, and shows STARTED in the instance while it executes; the
webserver of `dagster dev -w workspace.yaml` lists them under their jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml

from .conftest import CORPUS, REPO, base_spec, write_spec
from .dagster_dev import dagster_dev
from .dagster_dev import graphql as _graphql

pytestmark = pytest.mark.slow  # a whole build through Dagster; the second test starts dagster dev

BUILD_TAG = "corpusmix/build"
WORKSPACE = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]


def _instance(home):
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory):
    """One `corpusmix build` of two one-file sources, watched from this process while it runs:
    its DAGSTER_HOME, env, output, build id, the run id printed per run label, and the statuses of
    each run seen in the instance while the build ran."""
    root = tmp_path_factory.mktemp("cli_runs")
    sources = [{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "math-0000-of-0002.jsonl.gz")]},
               {"name": "dialogue", "kind": "dialogue",
                "paths": [str(CORPUS / "dialogue" / "dialogue-0000-of-0002.jsonl.gz")]}]
    spec = write_spec(root / "spec.yaml", base_spec(sources, root))
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = os.environ | {"DAGSTER_HOME": str(home), "CORPUSMIX_SPEC": str(spec)}
    log = root / "build.log"
    seen: dict[str, set[str]] = {}  # run id -> statuses seen in the instance while the build ran
    with open(log, "w") as sink, _instance(home) as instance:
        proc = subprocess.Popen([sys.executable, "-m", "workflows.cli", "build", str(spec)], env=env, cwd=root,
                                stdout=sink, stderr=subprocess.STDOUT, text=True)
        while proc.poll() is None:
            for run in instance.get_runs():
                seen.setdefault(run.run_id, set()).add(run.status.value)
            time.sleep(0.1)
    out = log.read_text()
    assert proc.wait(timeout=600) == 0, out
    m = re.search(r"^build (\S+): its runs carry the tag", out, re.MULTILINE)
    return SimpleNamespace(home=home, env=env, out=out, build_id=m.group(1) if m else None, seen=seen,
                           printed=dict(re.findall(r"^  (.+?): ok \(run ([0-9a-f-]{36})\)$", out, re.MULTILINE)))


def test_every_run_of_a_cli_build_is_a_run_of_the_code_location_with_the_build_tag(cli_build):
    from dagster import AssetKey, DagsterRunStatus, RunsFilter
    from dagster._core.storage.tags import PARTITION_NAME_TAG, REPOSITORY_LABEL_TAG

    home, out, build_id, seen, printed = cli_build.home, cli_build.out, cli_build.build_id, cli_build.seen, \
        cli_build.printed
    assert build_id, out  # printed before the first run
    assert list(printed) == ["math ingest + dedup", "dialogue ingest + dedup",
                             "cross_source_dedup + tokenizer",
                             "math quality + heldout_split + tokenize",
                             "dialogue quality + heldout_split + tokenize",
                             "swarm_design + mixture_plan + mixed_shards + megatron_blends"]
    with _instance(home) as instance:
        runs = instance.get_runs()
        assert {r.run_id for r in runs} == set(printed.values())  # the build's runs and nothing else
        assert {r.run_id for r in instance.get_runs(filters=RunsFilter(tags={BUILD_TAG: build_id}))} == \
            set(printed.values())
        for label, run_id in printed.items():
            run = instance.get_run_by_id(run_id)
            assert run.status == DagsterRunStatus.SUCCESS
            assert run.tags[BUILD_TAG] == build_id and run.tags["corpusmix/pid"].isdigit()
            origin = run.remote_job_origin
            assert origin is not None and origin.job_name == run.job_name
            assert origin.repository_origin.code_location_origin.location_name == WORKSPACE["location_name"]
            assert origin.repository_origin.repository_name == "__repository__"  # Definitions' repository
            target = origin.repository_origin.code_location_origin.loadable_target_origin
            assert (target.module_name, target.attribute) == (WORKSPACE["module_name"], WORKSPACE["attribute"])
            assert run.job_code_origin is not None and run.job_code_origin.job_name == run.job_name
            # the label the UI's job pages filter runs by
            assert run.tags_for_storage()[REPOSITORY_LABEL_TAG] == "__repository__@" + WORKSPACE["location_name"]
            source = label.split()[0]
            if source in ("math", "dialogue"):  # per-source runs: the partition tags execute_in_process set
                assert run.tags[PARTITION_NAME_TAG] == source
                assert run.tags["dagster/partition_set"] == f"{run.job_name}_partition_set"
            else:
                assert PARTITION_NAME_TAG not in run.tags
        # partitions materialized as before
        assert instance.get_materialized_partitions(AssetKey("tokenize")) == {"math", "dialogue"}
    # visible while it ran: every run was seen STARTED in the instance (each runs for a second or more)
    assert set(seen) == set(printed.values()), seen
    assert all("STARTED" in statuses for statuses in seen.values()), seen


def test_dagster_dev_lists_the_cli_runs_under_their_jobs(cli_build):
    build_id, printed = cli_build.build_id, cli_build.printed
    with _instance(cli_build.home) as instance:
        by_job: dict[str, set[str]] = {}
        for run_id in printed.values():
            by_job.setdefault(instance.get_run_by_id(run_id).job_name, set()).add(run_id)
    with dagster_dev(cli_build.env) as port:
        deadline, repos = time.time() + 120, []
        while time.time() < deadline and not repos:
            entries = _graphql(port, "{ workspaceOrError { ... on Workspace { locationEntries { name "
                                     "locationOrLoadError { ... on RepositoryLocation { repositories { name } } } } } } }")
            for entry in entries["workspaceOrError"]["locationEntries"]:
                if entry["name"] == WORKSPACE["location_name"] and entry["locationOrLoadError"]:
                    repos = [r["name"] for r in entry["locationOrLoadError"].get("repositories") or []]
            time.sleep(0 if repos else 1)
        assert repos == ["__repository__"]
        for job, run_ids in by_job.items():
            data = _graphql(port, f'{{ pipelineOrError(params: {{pipelineName: "{job}", repositoryName: "{repos[0]}", '
                                  f'repositoryLocationName: "{WORKSPACE["location_name"]}"}}) {{ __typename '
                                  '... on Pipeline { runs { runId status tags { key value } } } } }')
            listed = data["pipelineOrError"]["runs"]
            assert {r["runId"] for r in listed} == run_ids, (job, listed)
            for r in listed:
                assert r["status"] == "SUCCESS"
                assert {"key": BUILD_TAG, "value": build_id} in r["tags"]
        runs = _graphql(port, f'{{ runsOrError(filter: {{tags: [{{key: "{BUILD_TAG}", value: "{build_id}"}}]}}) '
                              '{ ... on Runs { results { runId pipelineName repositoryOrigin '
                              '{ repositoryLocationName repositoryName } } } } }')["runsOrError"]["results"]
        assert {r["runId"] for r in runs} == set(printed.values())
        assert all(r["repositoryOrigin"] == {"repositoryLocationName": WORKSPACE["location_name"],
                                             "repositoryName": "__repository__"} for r in runs), runs
