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


def build_next_phase_sensor(spec_path: str, job, loaded: LoadedSpec):
    """Watches the trainer's monitor log (``monitor.log``): once the run reaches a phase boundary, a restart
    point, it asks for next_phase_proposal once per (phase, records read), so a log that grows past the
    boundary, or a restarted sensor, asks nothing twice."""
    cfg = loaded.spec.automation

    @sensor(name="next_phase_sensor", job=job, minimum_interval_seconds=cfg.sensor_interval_s,
            default_status=DefaultSensorStatus.RUNNING,
            description="Reads the trainer's per-source loss log (monitor.log); when the run reaches a phase "
                        "boundary, materializes next_phase_proposal for the phase that starts there.")
    def next_phase_sensor(context: SensorEvaluationContext):
        from corpusmix.core.spec import canonical_hash, load_spec
        from corpusmix.mixing.next_phase import NotYet, restart_reached
        from corpusmix.mixture.plan import load_plan

        current = load_spec(spec_path, check_files=False)
        try:
            plan = load_plan(current)[0]
        except FileNotFoundError as e:
            return SkipReason(f"no mixture plan yet: {e}")
        try:
            q, used = restart_reached(current, plan)
        except NotYet as e:
            return SkipReason(str(e))
        phase = plan["phases"][q]["name"]
        context.log.info(f"the run reached phase {phase!r} ({len(used)} logged intervals): asking for a proposal")
        return RunRequest(run_key=f"{phase}:{canonical_hash(used)[:20]}",
                          tags={"corpusmix/trigger": "monitor log", "corpusmix/phase": phase})

    return next_phase_sensor
