"""Rebuilds that Dagster starts on its own: a sensor on the source files, a cron schedule, and
the automation sensor that pulls the later stages after them.

The source-file sensor and the schedule ask only for the source partitions whose
ingest is out of date (its content key, over the files' checksums, differs from the
current manifest), as runs of ``source_job`` (ingest + dedup). Every asset after
ingest carries ``AutomationCondition.eager()``; ``corpusmix_automation`` evaluates
those conditions, so the changed source's later partitions follow, and the global
assets (cross-source dedup, plan, shards) after them, tick by tick. Partitions whose
content key did not change skip themselves in the engine.
"""

import json

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from corpusmix.core.spec import LoadedSpec
from corpusmix.ops.freshness import is_current, source_fingerprint


def _request(loaded: LoadedSpec, source: str) -> RunRequest:
    # the run key makes a request for the same files idempotent across ticks
    return RunRequest(run_key=f"{source}:{source_fingerprint(loaded, source)[:20]}", partition_key=source,
                      tags={"corpusmix/trigger": "source files"})


def build_source_sensor(spec_path: str, source_job, loaded: LoadedSpec):
    cfg = loaded.spec.automation

    @sensor(name="source_files_sensor", job=source_job, minimum_interval_seconds=cfg.sensor_interval_s,
            default_status=DefaultSensorStatus.RUNNING if cfg.watch_sources else DefaultSensorStatus.STOPPED,
            description="Sees new, changed or removed source files (names, sizes, times; confirmed by checksums) "
                        "and requests ingest + dedup for the affected source partitions only.")
    def source_files_sensor(context: SensorEvaluationContext):
        from corpusmix.core.spec import load_spec

        current = load_spec(spec_path, check_files=False)
        seen = json.loads(context.cursor) if context.cursor else {}
        prints = {s: source_fingerprint(current, s) for s in current.source_names}
        changed = [s for s in current.source_names if prints[s] != seen.get(s)]
        stale = [s for s in changed if not is_current(current, "ingest", s)]
        cursor = json.dumps(prints, sort_keys=True)
        if not stale:
            return SensorResult(skip_reason=SkipReason(f"no source changed ({len(changed)} fingerprint(s) moved, "
                                                       "content unchanged)"), cursor=cursor)
        context.log.info(f"out-of-date sources: {stale}")
        return SensorResult(run_requests=[_request(current, s) for s in stale], cursor=cursor)

    return source_files_sensor


def build_automation_sensor(loaded: LoadedSpec) -> AutomationConditionSensorDefinition:
    """Evaluates the assets' conditions (every stage after ingest follows its upstream), so a new
    ingest partition pulls dedup, the global steps and the later stages. It runs by default
    (Dagster's own default sensor of this kind is stopped, which would leave the conditions inert)."""
    return AutomationConditionSensorDefinition(
        "corpusmix_automation", target=AssetSelection.all(), default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=loaded.spec.automation.sensor_interval_s,
        description="Materializes the stages downstream of changed partitions (AutomationCondition.eager).")


def build_rebuild_schedule(spec_path: str, source_job, loaded: LoadedSpec):
    cfg = loaded.spec.automation
    if cfg.rebuild_cron is None:
        return None

    @schedule(name="rebuild_schedule", job=source_job, cron_schedule=cfg.rebuild_cron, execution_timezone=cfg.timezone,
              default_status=DefaultScheduleStatus.RUNNING,
              description="On the spec's cron: ingest + dedup for every source whose files changed.")
    def rebuild_schedule(context: ScheduleEvaluationContext):
        from corpusmix.core.spec import load_spec

        current = load_spec(spec_path, check_files=False)
        stale = [s for s in current.source_names if not is_current(current, "ingest", s)]
        if not stale:
            return SkipReason("every source is up to date")
        return [_request(current, s) for s in stale]

    return rebuild_schedule
