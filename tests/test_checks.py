"""The check every materialization reports (integrity, schema, acceptance drift), and the epoch cap."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from assets.checks import stage_check_results
from corpusmix.core.manifest import manifest_path
from corpusmix.core.spec import load_spec
from corpusmix.ops import checks
from corpusmix.pipeline import run_stage
from workflows.definitions import build_definitions

from .conftest import CORPUS

WEB = [{"name": "web", "kind": "web", "paths": [str(CORPUS / "web" / "web-0000-of-0003.jsonl.gz")]}]


@pytest.fixture
def ingested(make_spec):
    loaded = load_spec(make_spec(WEB))
    m, path = run_stage("ingest", loaded, "web", progress=lambda x: None)
    return loaded, m, path


def test_clean_outputs_pass_integrity_and_schema(ingested):
    loaded, m, path = ingested
    assert checks.integrity_problems(loaded, path) == []
    assert checks.schema_problems(loaded, m) == []


def test_a_corrupted_output_fails_integrity(ingested):
    loaded, m, path = ingested
    part = loaded.storage_root / m["outputs"][0]["path"]
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    problems = checks.integrity_problems(loaded, path)
    assert len(problems) == 1 and "sha256" in problems[0] and m["outputs"][0]["path"] in problems[0]
    # the asset's one check fails at ERROR (blocking what reads the asset), whatever the rates did
    [result] = stage_check_results(loaded, m, path, previous=m)
    assert not result.passed and result.severity.value == "ERROR"
    assert result.metadata["integrity_problems"].value == problems


def test_a_table_breaking_its_schema_fails_the_schema_check(ingested):
    loaded, m, _ = ingested
    part = loaded.storage_root / m["outputs"][0]["path"]
    t = pq.read_table(part)
    texts = t.column("text").to_pylist()
    texts[3] = ""  # empty text is never a valid document
    pq.write_table(t.set_column(t.schema.get_field_index("text"), "text", pa.array(texts)), part)
    problems = checks.schema_problems(loaded, m)
    assert len(problems) == 1 and "documents fails its schema" in problems[0] and "str_length" in problems[0]
    part.write_bytes(b"not parquet")
    assert "fails its schema" in checks.schema_problems(loaded, m)[0]


def test_drift_warns_above_the_threshold():
    prev = {"rates": {"document_acceptance": 0.90, "token_acceptance": 0.80}}
    assert checks.drift(None, prev, 0.05) == {}
    assert checks.drift(prev, {"rates": {"document_acceptance": 0.92, "token_acceptance": 0.70}}, 0.05) == \
        {"token_acceptance": pytest.approx(-0.10)}
    assert checks.drift(prev, {"rates": {"document_acceptance": 0.91, "token_acceptance": 0.79}}, 0.05) == {}


def test_epoch_cap():
    plan = {"max_epochs": 4, "per_source": {"a": {"epochs": 3.99}, "b": {"epochs": 4.5}}}
    assert checks.epoch_cap_problems(plan) == ["b: 4.5000 epochs > max_epochs 4"]


def test_dagster_reports_the_checks_with_each_materialization(make_spec):
    spec = make_spec(WEB, checks={"drift_threshold": 0.01})
    defs = build_definitions(spec)
    loaded = load_spec(spec)
    with DagsterInstance.ephemeral() as instance:
        assert materialize([defs.resolve_assets_def("ingest")], partition_key="web", instance=instance).success
        first = {r.check_name: r for r in
                 materialize([defs.resolve_assets_def("ingest")], partition_key="web",
                             instance=instance).get_asset_check_evaluations()}
        assert list(first) == ["outputs_valid"] and first["outputs_valid"].passed
        shown = first["outputs_valid"].metadata
        assert shown["integrity_problems"].value == [] and shown["schema_problems"].value == []
        assert shown["outputs_verified"].value >= 2 and shown["largest_rate_change"].value.startswith("+0.0000")
        # a different spec section (a lower length limit) changes the acceptance rates: drift warns
        path = manifest_path(loaded.manifest_root, "ingest", "web")
        assert path.is_file()
        spec2 = make_spec(WEB, name="spec2.yaml", checks={"drift_threshold": 0.01},
                          storage={"root": str(loaded.storage_root), "manifests": str(loaded.manifest_root)},
                          ingest={"max_text_bytes": 2000})
        result = materialize([build_definitions(spec2).resolve_assets_def("ingest")], partition_key="web",
                             instance=instance)
        evals = {r.check_name: r for r in result.get_asset_check_evaluations()}
        check = evals["outputs_valid"]
        assert not check.passed and check.severity.value == "WARN"  # drift alone warns and blocks nothing
        assert check.metadata["integrity_problems"].value == [] and check.metadata["schema_problems"].value == []
        assert check.metadata["rates_moved_over_threshold"].value  # the rates that moved, signed
