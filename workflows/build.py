"""Headless build: materialize the same assets as the UI, through Dagster, on a persistent instance.

``corpusmix build SPEC`` calls ``run_build``. Runs land in the instance at
``$DAGSTER_HOME`` (default ``./.dagster``), so ``dagster dev`` on the same home
shows them, with the same metadata and manifests as UI-launched runs.

Every run of a build is a first-class run of the ``corpusmix`` code location that
``dagster dev -w workspace.yaml`` loads (``DagsterRuns``): it carries that location's job origin
(so the UI lists it on the job's page, the Overview timeline and under the code location), the
tag ``corpusmix/build=<build id>`` shared by every run of one build (the id is printed first), and
``corpusmix/pid``, the process that runs it. How a run executes, and why, is in ``DagsterRuns``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import signal
import threading
import time
from pathlib import Path

DEFAULT_HOME = ".dagster"
# Step logs (progress, counts) at INFO; Dagster's per-event DEBUG lines stay in the instance for the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# The jobs' executor (Dagster's default, multiprocess or in-process) set to in-process, as execute_in_process does.
RUN_CONFIG = {**QUIET, "execution": {"config": {"in_process": {}}}}
OWNER_TAG = "corpusmix/pid"  # the process that runs a CLI build's runs: a run it left STARTED is orphaned when it is gone
OWNER = {OWNER_TAG: str(os.getpid())}
BUILD_TAG = "corpusmix/build"  # shared by every run of one `corpusmix build` (filter the UI's runs by it)
REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"  # the code location `dagster dev -w workspace.yaml` (make ui) loads
LOCATION = "corpusmix"  # its location_name, when workspace.yaml is not beside the package


def new_build_id() -> str:
    """Sortable and unique enough: UTC time to the second plus 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or ./.dagster, creating it with telemetry off (no network here)."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / DEFAULT_HOME).resolve()
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_build(spec_path: str | os.PathLike, sources: list[str] | None = None, echo=print) -> bool:
    """Materialize every built stage for the chosen sources; True when all runs succeeded.

    Builds of one storage root run one at a time (a second waits, then skips what the first built).
    """
    from corpusmix.core.manifest import check_owner
    from corpusmix.core.spec import load_spec
    from corpusmix.core.storage import build_lock, collect_stale
    from corpusmix.stages.eval_index import check_eval_files

    loaded = load_spec(spec_path)  # fail on a bad spec before Dagster starts anything
    check_owner(loaded)  # and on a manifests folder another spec owns (a SpecError: exit 2, no run started)
    check_eval_files(loaded)  # and on an unusable eval file, before any stage reads a byte
    chosen = sources or loaded.source_names
    unknown = sorted(set(chosen) - set(loaded.source_names))
    if unknown:
        raise SystemExit(f"unknown source(s) {unknown}; the spec's sources are {loaded.source_names}")
    with build_lock(loaded.storage_root, echo):
        dirs, size = collect_stale(loaded.storage_root)
        if dirs:
            echo(f"removed {dirs} staging director{'y' if dirs == 1 else 'ies'} ({size / 1e6:.1f} MB) that killed "
                 "runs left behind")
        return _build(loaded, chosen, echo)


def _build(loaded, chosen: list[str], echo) -> bool:
    from corpusmix.core.executor import warm_up
    from corpusmix.ops.freshness import everything_current, stale_sources
    from corpusmix.ops.report import write_report
    from corpusmix.pipeline import is_current, stage_modules, waves
    from corpusmix.stages.tokencount import counter_for

    if set(chosen) == set(loaded.source_names) and everything_current(loaded):
        # nothing would run: answer without starting Dagster (a no-op rebuild costs the checks only)
        echo(f"up to date: every stage of {loaded.spec.name} has the content key it would compute now; no run started")
        return True
    info = counter_for(loaded)[1]  # the tokenizer ingest counts with, when exact: workers load it at start too
    # the pool's workers import the stages (and load the tokenizer) while Dagster starts
    warm_up(loaded.spec.execution, stage_modules(), [info.warm] if info else [])
    home = ensure_dagster_home()
    os.environ["CORPUSMIX_SPEC"] = str(loaded.path)

    from dagster import DagsterInstance

    from workflows.definitions import build_definitions

    defs = build_definitions(loaded.path)
    build_id = new_build_id()

    def execute(job: str, label: str, partition: str | None = None) -> bool:
        result = runs.execute(job, partition)
        ok = _run(result, label, echo)
        if signals or _interrupted(result):  # the signal failed this run (its stage discarded its staging)
            raise BuildInterrupted(signals.first() or signal.SIGINT, label)
        return ok

    def per_source(job: str, label: str, stages: tuple[str, ...]) -> bool:
        todo = stale_sources(loaded, list(stages), chosen)
        for src in sorted(set(chosen) - set(todo), key=chosen.index):
            echo(f"  {src} {label}: up to date (no run)")
        results = [execute(job, f"{src} {label}", src) for src in todo]  # every source, even after a failure
        return all(results)

    def once(job: str, label: str, stages: tuple[str, ...]) -> bool:
        if all(is_current(loaded, st) for st in stages):
            echo(f"  {label}: up to date (no run)")
            return True
        return execute(job, label)

    with DagsterInstance.get() as instance, _interruptible() as signals:
        echo(f"Dagster instance: {home}")
        runs = DagsterRuns(defs, instance, {**OWNER, BUILD_TAG: build_id})
        echo(f"build {build_id}: its runs carry the tag {BUILD_TAG}={build_id} (code location "
             f"{runs.location} in the UI)")
        _fail_orphaned_runs(instance, echo)
        # The pipeline's waves: each needs the one before it complete for every source; a wave whose
        # outputs already carry the content key it would compute now starts no run at all.
        for wave in waves(loaded.spec):
            label = " + ".join(wave.stages)
            if wave.scope == "global" and set(chosen) != set(loaded.source_names):
                echo(f"  {label} and later: not run (only some sources were built; they need every source)")
                return True
            if not (per_source if wave.scope == "source" else once)(wave.name, label, wave.stages):
                return False
    echo(f"report: {write_report(loaded)}")
    return True


class DagsterRuns:
    """Creates and executes the build's runs as runs of the workspace's code location.

    Each run is created the way the webserver creates a launched one: ``create_run_for_job`` with
    the remote job origin of ``workspace.yaml``'s location (the UI finds a job's runs by job name and
    the ``.dagster/repository`` label that origin gives, ``__repository__@corpusmix``) and the
    Python origin a run worker would load the job from; the tags are those ``execute_in_process``
    gave (the job's run tags, ``dagster/partition`` and the other partition tags, merged by the same
    Dagster function) plus the build's own.

    Then the run is executed here, in the build's process, by ``execute_run`` (what a run worker
    calls once it has loaded the job) with the in-process executor chosen in the run config.
    Launching through the instance's run launcher instead would start one Python process per run
    that imports Dagster and the definitions again (about 2-3 s each, ~14 runs a build) and would
    take the runs out of this process, so SIGINT/SIGTERM, the build's ``corpusmix/pid`` owner tag
    and the engine's process pool warmed up before the first run would no longer apply. Executing
    here keeps the speed and the signal handling of ``execute_in_process`` (Dagster's step
    execution is the same), and the run is STARTED in the instance from its first event to its last,
    so the UI shows it running. The job definition is the one ``build_definitions`` made for this
    spec (the same the code location makes for it), wrapped as an in-memory job: nothing is
    reimported, and builds of other specs in one process keep their own definitions.

    Not covered: the UI's Terminate button asks the code location's server, which never held
    these runs, so it cannot stop them; stop a build with Ctrl-C or SIGTERM to its process.
    """

    def __init__(self, defs, instance, tags: dict[str, str]):
        from dagster._core.definitions.reconstruct import ReconstructableRepository
        from dagster._core.remote_origin import RemoteRepositoryOrigin

        self.defs, self.instance, self.tags = defs, instance, tags
        origin = _code_location_origin()
        self.location = origin.location_name
        self.repository = RemoteRepositoryOrigin(origin, defs.get_repository_def().name)
        target = origin.loadable_target_origin
        self.python_repository = ReconstructableRepository.for_module(
            target.module_name, target.attribute, working_directory=target.working_directory)
        user = _user()
        if user:
            self.tags = {"user": f"{user} (corpusmix build)", **self.tags}  # "Launched by" instead of "Manually"

    def execute(self, job: str, partition: str | None = None):
        """Create and run one run of ``job`` (for ``partition``); returns its ``JobExecutionResult``."""
        from dagster._core.definitions.job_base import InMemoryJob
        from dagster._core.execution.api import create_execution_plan, execute_run
        from dagster._core.execution.execute_in_process import merge_run_tags

        job_def = self.defs.resolve_job_def(job)
        run_config = RUN_CONFIG  # as execute_in_process was given it: no partitioned run config on top
        tags = merge_run_tags(job_def=job_def, partition_key=partition, tags=self.tags, asset_selection=None,
                              instance=self.instance, run_config=run_config)
        plan = create_execution_plan(job_def, run_config=run_config, instance_ref=self.instance.get_ref(), tags=tags)
        run = self.instance.create_run_for_job(
            job_def=job_def, execution_plan=plan, run_config=run_config, tags=tags,
            remote_job_origin=self.repository.get_job_origin(job),
            job_code_origin=self.python_repository.get_reconstructable_job(job).get_python_origin())
        return execute_run(InMemoryJob(job_def), run, self.instance, raise_on_error=False)


def _code_location_origin():
    """The origin of the code location ``dagster dev -w workspace.yaml`` loads (as it builds it from
    the file), or the same module target by name where the file is not beside the package."""
    from dagster._core.workspace.load import location_origin_from_module_name, location_origins_from_yaml_paths

    if WORKSPACE.is_file():
        origins = [o for o in location_origins_from_yaml_paths([str(WORKSPACE)])
                   if getattr(o, "loadable_target_origin", None) is not None
                   and o.loadable_target_origin.module_name == "workflows.definitions"]
        if origins:
            return origins[0]
    return location_origin_from_module_name("workflows.definitions", "defs", str(REPO), LOCATION)


def _user() -> str | None:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return None


class BuildInterrupted(Exception):
    """SIGINT or SIGTERM stopped the build: the run in progress failed and nothing after it started."""

    def __init__(self, signum: int, during: str):
        self.signum, self.during = signum, during
        super().__init__(f"interrupted by {signal.Signals(signum).name} during {during}: that run failed (its "
                         "partial outputs were discarded) and no later run started; the next build resumes there")


class _Signals:
    """The SIGINT and SIGTERM this process received during the build, whoever handled them: inside a
    run Dagster installs its own handlers (and turns either signal into an interrupted step), so the
    numbers are also read off the interpreter's wakeup fd, which sees every signal first."""

    def __init__(self, wakeup_r: int | None):
        self.handled: list[int] = []
        self._r = wakeup_r

    def __bool__(self) -> bool:
        return bool(self.first())

    def first(self) -> int | None:
        if self._r is not None:
            with contextlib.suppress(BlockingIOError):
                self.handled += [s for s in os.read(self._r, 64) if s in (signal.SIGINT, signal.SIGTERM)]
        return self.handled[0] if self.handled else None


@contextlib.contextmanager
def _interruptible():
    """While the build runs, SIGINT and SIGTERM stop the work in progress (as Ctrl-C would: Dagster
    fails the run, the stage discards its staging) and are remembered, so the build stops instead
    of going on with the next source. Yields the signals received (``_Signals``)."""
    if threading.current_thread() is not threading.main_thread():
        yield _Signals(None)
        return
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    received = _Signals(r)

    def handler(signum, frame):
        received.handled.append(signum)
        raise KeyboardInterrupt

    previous_fd = signal.set_wakeup_fd(w)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    except KeyboardInterrupt:
        if not received:
            raise
        raise BuildInterrupted(received.first(), "the build") from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(previous_fd)
        os.close(r)
        os.close(w)


def _fail_orphaned_runs(instance, echo) -> None:
    """Mark failed the runs an earlier `corpusmix build` left STARTED when it was killed (their
    process is gone), so the UI does not show them running forever."""
    from dagster import DagsterRunStatus, RunsFilter

    from corpusmix.core.storage import pid_alive

    # NOT_STARTED too: a build killed between creating a run and executing it leaves one
    unfinished = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(filters=RunsFilter(statuses=unfinished)):
        owner = run.tags.get(OWNER_TAG)
        if owner and owner.isdigit() and int(owner) != os.getpid() and not pid_alive(int(owner)):
            instance.report_run_failed(run, f"the corpusmix build process {owner} that ran it is gone (killed)")
            echo(f"  marked run {run.run_id} ({run.job_name}) failed: its build process {owner} was killed")


def _run(result, label: str, echo) -> bool:
    echo(f"  {label}: {'ok' if result.success else 'FAILED'} (run {result.run_id})")
    if not result.success:
        for ev in result.all_events:
            if ev.is_step_failure and ev.step_failure_data.error:
                echo(f"    {ev.step_key}: " + root_cause(ev.step_failure_data.error).replace("\n", "\n    "))
    return result.success


def _interrupted(result) -> bool:
    """Did a signal stop this run? Inside a run Dagster handles SIGINT itself and turns it into a
    DagsterExecutionInterruptedError of the step, so the build's own handler never sees it."""
    for ev in result.all_events:
        error = ev.step_failure_data.error if ev.is_step_failure and ev.step_failure_data else None
        while error is not None:
            if error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                return True
            error = error.cause
    return False


def root_cause(error) -> str:
    """The engine's own message under Dagster's wrappers ("Error occurred while executing op ..."):
    the innermost cause, which names the file, line or field and the fix."""
    while error.cause is not None:
        error = error.cause
    return f"{error.cls_name}: {error.message.strip()}" if error.cls_name else error.message.strip()
