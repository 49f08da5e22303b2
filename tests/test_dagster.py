"""The Dagster layer: the code location loads, the ingest asset materializes per source with
its rates as metadata, and `corpusmix build` records runs in a persistent instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize

from workflows.definitions import build_definitions

from .conftest import CORPUS, REPO

pytestmark = pytest.mark.slow  # builds through Dagster


def _sources(*names):
    kinds = {"math": "math", "dialogue": "dialogue", "web": "web"}
    return [{"name": n, "kind": kinds[n], "paths": [str(CORPUS / n / "*.jsonl.gz")]} for n in names]


def test_definitions_validate_via_the_dagster_cli(make_spec):
    spec = make_spec(_sources("math", "web"))
    env = os.environ | {"CORPUSMIX_SPEC": str(spec)}
    r = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Validation successful" in r.stdout + r.stderr


def test_partitions_come_from_the_spec(make_spec):
    defs = build_definitions(make_spec(_sources("math", "dialogue", "web")))
    asset = defs.resolve_assets_def("ingest")
    assert asset.partitions_def.get_partition_keys() == ["math", "dialogue", "web"]


def test_materialize_one_partition_reports_rates(make_spec):
    spec = make_spec(_sources("math", "web"))
    defs = build_definitions(spec)
    with DagsterInstance.ephemeral() as instance:
        # the asset from the Definitions carries its resources (the spec) with it
        result = materialize([defs.resolve_assets_def("ingest")], partition_key="web", instance=instance)
        assert result.success
        mat = result.asset_materializations_for_node("ingest")[0]
        md = {k: v.value for k, v in mat.metadata.items()}
        assert md["documents_in"] == "1,764" and md["documents_out"] == "1,737"  # digits grouped
        assert md["document_acceptance_rate"] == round(1737 / 1764, 4)
        assert 0.99 < md["token_acceptance_rate"] <= 1.0
        assert md["token_counting"].startswith("exact")
        assert md["dagster/row_count"] == 1737 and md["reused"] is False
        summary = {r.data["source"]: r.data for r in md["all_sources"].records}  # every source's line
        assert summary["web"]["documents in → out"] == "1,764 → 1,737" and summary["math"]["documents in → out"] == "not built"
        checks = result.get_asset_check_evaluations()
        assert checks and {c.partition for c in checks} == {"web"}  # each check result names its source
        funnel = {r.data["step"]: r.data["documents"] for r in md["funnel"].records}
        assert funnel == {"in": "1,764", "removed: empty_text": "27", "out": "1,737"}  # in - removed = out
        tokens = {r.data["step"]: int(r.data["tokens"].replace(",", "")) for r in md["funnel"].records}
        assert tokens["in"] - tokens["removed: empty_text"] == tokens["out"] == int(md["tokens_out"].replace(",", ""))
        assert os.path.isfile(md["manifest"])
        event = instance.get_latest_materialization_event(AssetKey("ingest"))
        assert event.dagster_event.partition == "web"


def test_cli_build_records_runs_in_the_instance(make_spec, tmp_path, monkeypatch):
    spec = make_spec(_sources("math", "dialogue"))
    home = tmp_path / "fresh_home"  # does not exist yet: the build creates it
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    r = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("math ingest + dedup: ok", "dialogue ingest + dedup: ok",
                 "cross_source_dedup + tokenizer: ok",
                 "math quality + heldout_split + tokenize: ok",
                 "dialogue quality + heldout_split + tokenize: ok",
                 "swarm_design + mixture_plan + mixed_shards + megatron_blends: ok"):
        assert line in r.stdout, r.stdout
    assert "telemetry" in (home / "dagster.yaml").read_text()
    report = r.stdout.split("report: ")[1].split()[0]
    assert open(report).read().startswith("# Build report: test")
    v = subprocess.run([sys.executable, "-m", "corpusmix.cli", "verify", str(spec)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr  # per-source and global manifests all check out
    p = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", str(spec)], capture_output=True, text=True)
    assert p.returncode == 0 and "availability exact (tokenize)" in p.stdout, p.stderr
    lines = p.stdout.splitlines()
    assert "mixture.schedule.weights: hand-tuned weights" in p.stdout  # where the weights came from
    table = next(i for i, line in enumerate(lines) if line.startswith("source "))
    assert [line.split()[0] for line in lines[table + 1:table + 3]] == ["math", "dialogue"]
    j = subprocess.run([sys.executable, "-m", "corpusmix.cli", "plan", "--json", str(spec)], capture_output=True,
                       text=True)
    plan = json.loads(j.stdout)
    assert plan["error"] is None and plan["per_source"]["math"]["allocated"] == pytest.approx(500_000)
    with DagsterInstance.get() as instance:
        assert sorted(run.job_name for run in instance.get_runs()) == [
            "cross_source_dedup_tokenizer_job", "ingest_dedup_job", "ingest_dedup_job",
            "quality_heldout_split_tokenize_job", "quality_heldout_split_tokenize_job",
            "swarm_design_mixture_plan_mixed_shards_megatron_blends_job"]
        for stage in ("ingest", "dedup", "quality", "tokenize"):
            assert instance.get_materialized_partitions(AssetKey(stage)) == {"math", "dialogue"}
        assert instance.get_latest_materialization_event(AssetKey("cross_source_dedup")) is not None
        tok = instance.get_latest_materialization_event(AssetKey("tokenizer")).asset_materialization.metadata
        assert tok["vocab_size"].value == 50257 and tok["dtype"].value == "uint16"
        md = instance.get_latest_materialization_event(AssetKey("tokenize")).asset_materialization.metadata
        n = {k: int(md[k].value.replace(",", "")) for k in ("tokens_stored", "tokens_out", "documents_out")}
        assert n["tokens_stored"] == n["tokens_out"] + n["documents_out"]
        assert md["token_counting"].value.startswith("exact")
        assert abs(md["estimate_relative_error"].value) < 0.05
        shards = instance.get_latest_materialization_event(AssetKey("mixed_shards")).asset_materialization.metadata
        assert shards["tokens"].value == "1,000,001" and shards["samples"].value == f"{1_000_000 // 512:,}"
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [AssetCheckKey(AssetKey("mixed_shards"), "mixture_on_target")])
        assert check[AssetCheckKey(AssetKey("mixed_shards"), "mixture_on_target")].status.value == "SUCCEEDED"


def test_cli_build_refuses_a_bad_spec_before_any_work(make_spec, tmp_path):
    sources = _sources("math")
    sources[0]["paths"] = [str(CORPUS / "math" / "*.nope")]
    spec = make_spec(sources)
    r = subprocess.run([sys.executable, "-m", "workflows.cli", "build", str(spec)], capture_output=True, text=True,
                       env=os.environ | {"DAGSTER_HOME": str(tmp_path / "h")}, cwd=tmp_path)
    # the spec is refused before Dagster starts: no instance, no outputs
    assert r.returncode == 2 and "sources[0].paths[0]" in r.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "h").exists()


def test_build_with_a_trained_tokenizer_runs_quality_before_the_tokenizer(make_spec, tmp_path, monkeypatch):
    """A tokenizer from a file lets one run per source do quality and tokenize; a trained one
    reads every source's quality output, so the build splits those runs around it."""
    from workflows.build import run_build

    spec = make_spec(_sources("math", "dialogue"),
                     tokenizer={"train": {"vocab_size": 1024, "sample_bytes": 1 << 20}})
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    echo: list[str] = []
    assert run_build(spec, echo=echo.append), "\n".join(echo)
    order = [line.split(":")[0].strip() for line in echo if line.endswith(")") and ": ok (run" in line]
    assert order == ["math ingest + dedup", "dialogue ingest + dedup", "cross_source_dedup",
                     "math quality + heldout_split", "dialogue quality + heldout_split",
                     "tokenizer", "math tokenize",
                     "dialogue tokenize",
                     "swarm_design + mixture_plan + mixed_shards + megatron_blends"]
    with DagsterInstance.get() as instance:
        assert instance.get_materialized_partitions(AssetKey("tokenize")) == {"math", "dialogue"}
        tok = instance.get_latest_materialization_event(AssetKey("tokenizer")).asset_materialization.metadata
        assert tok["vocab_size"].value == 1024


def test_a_failed_build_prints_the_engine_error_with_its_fix(make_spec, tmp_path, monkeypatch):
    """Not Dagster's wrapper ("Error occurred while executing op ingest") but the IngestError under it."""
    from workflows.build import run_build

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_text('{"id": "1", "body": "no text field here"}\n')
    spec = make_spec([{"name": "s", "kind": "web", "paths": [str(raw / "*.jsonl")]}])
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    echo: list[str] = []
    assert not run_build(spec, echo=echo.append)
    text = "\n".join(echo)
    assert "s ingest + dedup: FAILED" in text
    assert "IngestError: source 's': 1 of its 1 records are quarantined" in text and "fix: set sources[s]" in text
    assert "cross_source_dedup" not in text  # the next wave never started
