"""The source-file sensor and the rebuild schedule: they request only out-of-date source partitions."""

from __future__ import annotations

import os
import shutil

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_schedule_context, build_sensor_context

from corpusmix.core.spec import SpecError, load_spec
from corpusmix.pipeline import run_stage
from workflows.definitions import build_definitions

from .conftest import CORPUS

pytestmark = pytest.mark.slow  # materializes through Dagster's sensors and automation


@pytest.fixture
def two_sources(make_spec, tmp_path):
    raw = tmp_path / "raw"
    for s in ("math", "dialogue"):
        raw.joinpath(s).mkdir(parents=True)
        shutil.copy(next((CORPUS / s).glob("*.jsonl.gz")), raw / s)
    spec = make_spec([{"name": s, "kind": s, "paths": [str(raw / s / "*.jsonl.gz")]} for s in ("math", "dialogue")],
                     automation={"rebuild_cron": "0 3 * * *", "watch_sources": True})
    loaded = load_spec(spec)
    for s in loaded.source_names:
        run_stage("ingest", loaded, s, progress=lambda m: None)
    return spec, raw


def _tick(sensor, cursor):
    with DagsterInstance.ephemeral() as instance:
        result = sensor(build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, SensorResult)
    return result, [r.partition_key for r in result.run_requests or []]


def test_sensor_requests_only_the_source_whose_files_changed(two_sources):
    spec, raw = two_sources
    defs = build_definitions(spec)
    sensor = defs.resolve_sensor_def("source_files_sensor")
    assert sensor.default_status.value == "RUNNING"  # automation.watch_sources: true
    result, asked = _tick(sensor, None)
    assert asked == [] and result.skip_reason  # everything is built: nothing to ask for
    cursor = result.cursor
    # a new file in one source
    shutil.copy(next((CORPUS / "math").glob("*-0001-*.jsonl.gz")), raw / "math" / "extra.jsonl.gz")
    result, asked = _tick(sensor, cursor)
    assert asked == ["math"]
    assert result.run_requests[0].run_key.startswith("math:")
    # same tick again with the new cursor: nothing new
    _, asked = _tick(sensor, result.cursor)
    assert asked == []
    # a file touched but not changed moves the fingerprint, and the checksums clear it
    f = next((raw / "dialogue").glob("*.jsonl.gz"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    result3, asked = _tick(sensor, result.cursor)
    assert asked == [] and "content unchanged" in result3.skip_reason.skip_message
    # a removed file
    f.unlink()
    shutil.copy(next((CORPUS / "dialogue").glob("*-0001-*.jsonl.gz")), raw / "dialogue")
    _, asked = _tick(sensor, result3.cursor)
    assert asked == ["dialogue"]


def test_schedule_runs_on_the_spec_cron_and_asks_for_stale_sources(two_sources):
    spec, raw = two_sources
    defs = build_definitions(spec)
    schedule = defs.resolve_schedule_def("rebuild_schedule")
    assert schedule.cron_schedule == "0 3 * * *" and schedule.execution_timezone == "UTC"
    with DagsterInstance.ephemeral() as instance:
        assert isinstance(schedule(build_schedule_context(instance=instance)), SkipReason)
        shutil.copy(next((CORPUS / "dialogue").glob("*-0001-*.jsonl.gz")), raw / "dialogue")
        requests = schedule(build_schedule_context(instance=instance))
    assert [r.partition_key for r in requests] == ["dialogue"]


def test_no_cron_no_schedule_and_a_bad_cron_is_a_spec_error(make_spec):
    src = [{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]}]
    assert not list(build_definitions(make_spec(src)).schedules)
    with pytest.raises(SpecError, match="automation.rebuild_cron"):
        load_spec(make_spec(src, name="bad.yaml", automation={"rebuild_cron": "every night"}))


def test_later_stages_follow_a_new_ingest_partition_and_only_it(make_spec, tmp_path):
    """With the automation sensor's conditions (every stage after ingest follows its upstream),
    a fresh ingest of one source requests that source's later partitions and none of the other's."""
    import dagster as dg

    from workflows.build import run_build

    raw = tmp_path / "raw"
    for s in ("math", "dialogue"):
        raw.joinpath(s).mkdir(parents=True)
        shutil.copy(sorted((CORPUS / s).glob("*.jsonl.gz"))[0], raw / s)
    spec = make_spec([{"name": s, "kind": s, "paths": [str(raw / s / "*.jsonl.gz")]} for s in ("math", "dialogue")])
    assert run_build(spec, echo=lambda m: None)
    defs = build_definitions(spec)
    assert defs.resolve_sensor_def("corpusmix_automation").default_status.value == "RUNNING"
    with DagsterInstance.get() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # everything is built
        shutil.copy(sorted((CORPUS / "math").glob("*.jsonl.gz"))[1], raw / "math")  # a new math file
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(
            asset_selection=[dg.AssetKey("ingest")], partition_key="math", instance=instance).success
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        later = ("dedup", "quality", "heldout_split", "tokenize")  # math's later stages, same tick
        for asset in later:
            assert after.get_requested_partitions(dg.AssetKey(asset)) == {"math"}, asset
        assert after.total_requested == len(later)


def test_an_up_to_date_materialization_pulls_nothing_after_it(two_sources):
    """Materializing a current partition (a no-op click in the UI) records the same data version,
    flagged as reused, and automation requests nothing after it; before, eager() answered with
    every later stage of every source. A real change still pulls the next stage."""
    from dagster import AssetKey, evaluate_automation_conditions, materialize

    from corpusmix.pipeline import active_stages

    spec, raw = two_sources
    defs = build_definitions(spec)
    sources = load_spec(spec).source_names

    def run(stage: str, partition: str | None):
        result = materialize([defs.resolve_assets_def(stage)], partition_key=partition, instance=instance)
        assert result.success
        return {k: v.value for k, v in result.asset_materializations_for_node(stage)[0].metadata.items()}

    with DagsterInstance.ephemeral() as instance:
        for stage in active_stages(load_spec(spec).spec):
            for partition in sources if stage.per_source else [None]:
                run(stage.name, partition)
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # everything is built
        again = run("dedup", "math")
        assert again["reused"] is True
        tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert tick.total_requested == 0, {r.key: r.true_subset for r in tick.results if r.true_subset.size}
        shutil.copy(next((CORPUS / "math").glob("*-0001-*.jsonl.gz")), raw / "math" / "extra.jsonl.gz")
        assert run("ingest", "math")["reused"] is False
        tick = evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_requested_partitions(AssetKey("dedup")) == {"math"}
