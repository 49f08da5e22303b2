"""Rebuilds that Dagster starts on its own: a sensor on the source files and a cron schedule.

Both ask only for the source partitions whose ingest is out of date (its content key,
over the files' checksums, differs from the current manifest), as runs of
``source_job`` (ingest + dedup for that source). The global and later per-source
phases follow with ``corpusmix build`` (which skips every current partition) or from
the UI.
"""

import json

from dagster import (
    DefaultScheduleStatus, DefaultSensorStatus, RunRequest, ScheduleEvaluationContext,
    SensorEvaluationContext, SensorResult, SkipReason, schedule, sensor,
)

from corpusmix.freshness import is_current, source_fingerprint
from corpusmix.ingest import ingest_key
from corpusmix.spec import LoadedSpec


def _request(loaded: LoadedSpec, source: str) -> RunRequest:
    version = ingest_key(loaded, loaded.source(source))[1]
    # the run key makes a request for the same content idempotent across ticks
    return RunRequest(run_key=f"{source}:{version}", partition_key=source, tags={"corpusmix/trigger": "source files"})


def build_source_sensor(spec_path: str, source_job, loaded: LoadedSpec):
    cfg = loaded.spec.automation

    @sensor(name="source_files_sensor", job=source_job, minimum_interval_seconds=cfg.sensor_interval_s,
            default_status=DefaultSensorStatus.RUNNING if cfg.watch_sources else DefaultSensorStatus.STOPPED,
            description="Sees new, changed or removed source files (names, sizes, times; confirmed by checksums) "
                        "and requests ingest + dedup for the affected source partitions only.")
    def source_files_sensor(context: SensorEvaluationContext):
        from corpusmix.spec import load_spec

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


def build_rebuild_schedule(spec_path: str, source_job, loaded: LoadedSpec):
    cfg = loaded.spec.automation
    if cfg.rebuild_cron is None:
        return None

    @schedule(name="rebuild_schedule", job=source_job, cron_schedule=cfg.rebuild_cron, execution_timezone=cfg.timezone,
              default_status=DefaultScheduleStatus.RUNNING,
              description="On the spec's cron: ingest + dedup for every source whose files changed.")
    def rebuild_schedule(context: ScheduleEvaluationContext):
        from corpusmix.spec import load_spec

        current = load_spec(spec_path, check_files=False)
        stale = [s for s in current.source_names if not is_current(current, "ingest", s)]
        if not stale:
            return SkipReason("every source is up to date")
        return [_request(current, s) for s in stale]

    return rebuild_schedule
