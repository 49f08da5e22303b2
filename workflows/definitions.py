"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here.

The spec is chosen by ``CORPUSMIX_SPEC`` (default: the demo spec). Partitions
are the spec's source names. Definitions load without touching the data (the
globs are checked when an asset runs), so the UI opens even before the demo
data is harvested.
"""

import os
from pathlib import Path

from dagster import Definitions, StaticPartitionsDefinition, define_asset_job

from assets import wiring
from assets.factory import stage_asset
from assets.next_phase import next_phase_asset
from assets.proxies import PROXY_PARTITIONS, proxy_run_asset
from corpusmix.core.spec import load_spec
from corpusmix.pipeline import active_stages, waves

from .automation import build_automation_sensor, build_next_phase_sensor, build_rebuild_schedule, build_source_sensor
from .resources import CorpusSpec

SPEC_ENV = "CORPUSMIX_SPEC"
DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "specs" / "demo.yaml"


def spec_path_from_env() -> Path:
    return Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC).resolve()


def build_definitions(spec_path: str | os.PathLike) -> Definitions:
    """Assets from the stages of this spec's build (in the pipeline's order; a stage the spec asks
    nothing of has no asset), one job per wave of ``corpusmix build``."""
    loaded = load_spec(spec_path, check_files=False)
    sources = StaticPartitionsDefinition(loaded.source_names)
    assets, checks = {}, []
    for stage in active_stages(loaded.spec):
        ui = wiring(stage)
        assets[stage.name] = stage_asset(stage, ui, loaded.spec, sources, assets)
        checks += ui.asset_checks(assets[stage.name])
    jobs = [define_asset_job(w.name, selection=[assets[n] for n in w.stages],
                             description=(f"Per source partition: {' then '.join(w.stages)}." if w.scope == "source"
                                          else f"Once, over every source: {' then '.join(w.stages)}.")
                                         + f" Step {i} of `corpusmix build`.")
            for i, w in enumerate(waves(loaded.spec), 1)]
    proxy = proxy_run_asset(loaded.spec, assets["swarm_design"], assets["tokenize"])
    jobs.append(define_asset_job("proxy_runs_job", selection=[proxy], partitions_def=PROXY_PARTITIONS,
                                 description="One proxy run per partition (a swarm mixture): not part of a build."))
    source_job = jobs[0]  # the first wave reads the raw files: what a changed source needs first
    schedule = build_rebuild_schedule(str(loaded.path), source_job, loaded)
    sensors = [build_source_sensor(str(loaded.path), source_job, loaded), build_automation_sensor(loaded)]
    extra = [proxy]
    if loaded.spec.monitor.log is not None:  # a training run to watch: its proposals, and the sensor that asks
        extra.append(next_phase_asset(loaded.spec, assets["mixture_plan"]))
        jobs.append(define_asset_job("next_phase_proposal_job", selection=[extra[-1]],
                                     description="The next phase's proposal from the monitor log: not part of a "
                                                 "build; the next-phase sensor starts it at a restart point."))
        sensors.append(build_next_phase_sensor(str(loaded.path), jobs[-1], loaded))
    return Definitions(
        assets=[*assets.values(), *extra],
        asset_checks=checks,
        jobs=jobs,
        sensors=sensors,
        schedules=[schedule] if schedule else [],
        resources={"corpus": CorpusSpec(spec_path=str(loaded.path))},
    )


defs = build_definitions(spec_path_from_env())
