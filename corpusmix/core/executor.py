"""Where shard-level work runs: in this process, in a local process pool, or on Ray.

Stages cut their work into independent units (one input file, one Parquet part)
and hand them to an executor. Two operations cover every stage:

* ``map(fn, items)``: results come back in input order, whichever worker
  finished first, so the output never depends on scheduling;
* ``shuffle(map_fn, items, buckets, reduce_fn)``: each map call returns one
  payload per bucket and one reduce call per bucket receives that bucket's
  payloads from every map call, in input order. On Ray the payloads stay in the
  object store (spilling to disk when it fills) and travel from the map task to
  the reduce task directly, so a global group-by (MinHash LSH banding) is never
  held by one process; locally they pass through this process.

A unit's result must not depend on the backend or the number of workers: the
same units, in the same order, give byte-identical outputs on all three.

Units read and write files under the storage root, so on a cluster the root
must be a filesystem every worker sees (see the README, "Running on a cluster").
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("corpusmix.core.executor")

REPO_ROOT = Path(__file__).resolve().parents[2]


class Executor(Protocol):
    backend: str
    workers: int

    def map(self, fn: Callable, items: Iterable) -> Iterator: ...

    def shuffle(self, map_fn: Callable, items: Iterable, buckets: int, reduce_fn: Callable) -> list: ...


def _star(fn: Callable, args: tuple) -> Any:
    return fn(*args)


class _LocalShuffle:
    """Shuffle through this process: map, regroup by bucket, reduce (all via ``self.map``)."""

    def shuffle(self, map_fn: Callable, items: Iterable, buckets: int, reduce_fn: Callable) -> list:
        outs = list(self.map(map_fn, items))
        groups = [tuple(o[b] for o in outs) for b in range(buckets)]
        del outs
        return list(self.map(functools.partial(_star, reduce_fn), groups))


class InlineExecutor(_LocalShuffle):
    """Each unit in the calling process, one after another (debugging, tiny inputs, profiling)."""

    backend = "inline"
    workers = 1

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        return map(fn, items)


class ProcessExecutor(_LocalShuffle):
    """A pool of local worker processes (forkserver start: safe under threaded hosts such as Dagster).

    At most ``2 x workers`` units are queued or finished-but-unread at a time, so
    results (a part's token ids, say) do not pile up in the driver; when a unit
    fails, the units not yet started are cancelled rather than run to no purpose.
    """

    backend = "processes"

    def __init__(self, pool: ProcessPoolExecutor, workers: int):
        self.pool, self.workers = pool, workers

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(self.pool.submit(fn, item))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


class RayExecutor:
    """Units as Ray tasks (one CPU each) on whatever cluster ``ray.init`` joined.

    At most ``2 x workers`` map tasks are in flight, so a long input list does not
    queue every unit's result in the object store at once; as on the pool, a
    failure cancels the tasks still in flight.
    """

    backend = "ray"

    def __init__(self, ray_module, workers: int):
        self.ray, self.workers = ray_module, workers
        self._call = ray_module.remote(num_cpus=1)(_apply)

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        get, pending = self.ray.get, deque()
        try:
            for item in items:
                pending.append(self._call.remote(fn, item))
                if len(pending) >= 2 * self.workers:
                    yield get(pending.popleft())
            while pending:
                yield get(pending.popleft())
        finally:  # a failed unit (or a caller that stops reading) leaves no task running for nothing
            for ref in pending:
                self.ray.cancel(ref)

    def shuffle(self, map_fn: Callable, items: Iterable, buckets: int, reduce_fn: Callable) -> list:
        mapper = self._call.options(num_returns=buckets)
        if buckets == 1:
            map_fn = functools.partial(_first, map_fn)
        outs = [mapper.remote(map_fn, item) for item in items]
        if buckets == 1:
            outs = [[o] for o in outs]
        return self.ray.get([self._call.remote(reduce_fn, *[o[b] for o in outs]) for b in range(buckets)])


def _first(fn: Callable, item: Any) -> Any:
    return fn(item)[0]


def _apply(fn: Callable, *args: Any) -> Any:
    """A Ray task: Ray resolves object refs only when they are top-level arguments, hence the star."""
    return fn(*args)


@contextmanager
def open_executor(execution, units: int | None = None, shared: Path | None = None,
                  multithreaded_units: bool = False) -> Iterator[Executor]:
    """The executor the spec's ``execution`` section asks for, for ``units`` units of work.

    ``processes`` runs in-process when it would start at most one worker (starting
    workers costs about a second). ``ray`` joins ``ray_address`` (``auto``, a
    ``host:port`` or a ``ray://`` client address), or starts Ray on this machine
    when it is unset; a Ray this process already joined is reused. ``shared`` (the
    storage root) must be visible on every Ray node; that and the engine's code
    version are checked before any unit is sent.

    ``multithreaded_units`` (tokenize: the Rust encoder uses every core) keeps a
    ``processes`` build in this process: splitting the cores between pool workers
    only adds a tail, e.g. 3 parts on 2 one-thread workers leave a core idle for
    the third (stage/raw encode 0.72 on such sources against ~0.92 in-process).
    On Ray the units still spread over the machines.
    """
    if execution.backend == "ray":
        with _ray_session(execution, shared) as ex:
            yield ex
        return
    if (execution.backend == "inline" or execution.workers <= 1 or (units is not None and units <= 1)
            or multithreaded_units):
        yield InlineExecutor()
        return
    yield ProcessExecutor(_pool(execution.workers), execution.workers)


_POOLS: dict[int, ProcessPoolExecutor] = {}
_PRELOAD: list[str] = []  # modules a new pool's workers import as they start (``warm_up``)
_WARM: list[Callable[[], object]] = []  # and calls they make then (filling per-process caches)


def _pool(workers: int) -> ProcessPoolExecutor:
    """One pool per process and size, kept for every later stage: a worker pays ~1 s of
    imports (pyarrow, numpy, tokenizers) once, not once per stage and source."""
    pool = _POOLS.get(workers)
    if pool is None or pool._broken:  # a worker that died (OOM, kill) breaks the pool for good: start anew
        pool = _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=_forkserver(),
                                                     initializer=_preload, initargs=(tuple(_PRELOAD), tuple(_WARM)))
    return pool


def warm_up(execution, modules: Iterable[str], calls: Iterable[Callable[[], object]] = ()) -> None:
    """Start the local pool's workers now and return at once: each imports ``modules`` (the
    stages the caller will run, ~1 s) and makes ``calls`` (picklable: e.g. loading the
    tokenizer a stage encodes with) while the caller does its own start-up (``corpusmix build``:
    Dagster's imports and first run). The executor itself knows no stage."""
    if execution.backend == "processes" and execution.workers > 1:
        _PRELOAD[:] = sorted(set(_PRELOAD) | set(modules))
        _WARM[:] = list(calls)
        pool = _pool(execution.workers)
        for _ in range(execution.workers):
            pool.submit(_preload, tuple(_PRELOAD), tuple(_WARM))


def _forkserver():
    """The forkserver context, whose server dies with this process (``deathsig``), so a build
    killed with SIGKILL leaves no pool behind."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["corpusmix.core.deathsig"])
    return ctx


def _preload(modules: tuple[str, ...], calls: tuple[Callable[[], object], ...] = ()) -> None:
    """Pool initializer: import the modules a worker will need and fill its caches, once."""
    for name in modules:
        importlib.import_module(name)
    for call in calls:
        call()


@atexit.register
def shutdown_pools() -> None:
    """Stop the kept pools (at exit, or so that the next build starts its own, as a benchmark wants)."""
    for pool in _POOLS.values():
        pool.shutdown(wait=True, cancel_futures=True)
    _POOLS.clear()


@contextmanager
def _ray_session(execution, shared: Path | None) -> Iterator[RayExecutor]:
    """Join (or start) Ray once per process and keep it: a local start costs seconds, and
    every later stage of the build reuses it (Ray shuts itself down at exit)."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a dependency; this guards broken installs
        raise RuntimeError("execution.backend is 'ray' but ray is not importable; pip install 'ray==2.60.0'") from e
    if not ray.is_initialized():
        # Workers must import corpusmix: put this checkout on their path (a cluster image
        # that has corpusmix installed does not need it, and is not harmed by it).
        # A task holds one CPU, so the tokenizer's thread pool gets one thread.
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                            "RAYON_NUM_THREADS": "1"}}
        address = execution.ray_address or "local"
        kwargs = {"num_cpus": execution.workers or None} if address == "local" else {}
        if address == "local":
            _private_token_file()
        log.info("ray: %s", "starting a local instance" if address == "local" else f"joining {address}")
        ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **kwargs)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = min(execution.workers, cpus) if execution.workers else cpus
    if shared not in _CHECKED:  # once per process and storage root, not once per stage and source
        _check_workers(ray, shared)
        _CHECKED.add(shared)
    log.info("ray: %d CPU(s) in the cluster, %d task(s) at a time", cpus, workers)
    yield RayExecutor(ray, max(1, workers))


_CHECKED: set[Path | None] = set()


def _private_token_file() -> None:
    """A local Ray start in token mode (Ray's default) writes ~/.ray/auth_token with the umask's
    permissions, readable by every user of the machine: create it (or narrow it) to 0600 first.
    A token given in the environment (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) is the user's business."""
    import secrets

    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path = Path.home() / ".ray" / "auth_token"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))


def _probe_node(shared: str | None) -> tuple[str, str, bool]:
    """What one node offers: its address, its engine code version, whether it sees ``shared``."""
    import ray

    from corpusmix.core.stage import engine_digest

    return ray.util.get_node_ip_address(), engine_digest(), shared is None or os.path.isdir(shared)


def _check_workers(ray, shared: Path | None) -> None:
    """Refuse a cluster that would build something else than this driver expects, one probe
    per node: content keys are computed here, so other worker code would publish other
    bytes under this version's name; and units read and write under the storage root,
    which every node must mount at the same path."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from corpusmix.core.stage import engine_digest

    probe = ray.remote(num_cpus=0)(_probe_node)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                       .remote(str(shared) if shared else None) for n in nodes])
    problems = [f"node {ip} runs corpusmix code {theirs[:12]}, this driver {engine_digest()[:12]}: deploy the same "
                "corpusmix version in the cluster's image" for ip, theirs, _ in answers if theirs != engine_digest()]
    problems += [f"node {ip} cannot see the storage root {shared}: mount the same shared filesystem at the same "
                 "path on every Ray node (see the README, 'Running on a cluster')" for ip, _, sees in answers if not sees]
    if problems:
        raise RuntimeError("the Ray cluster cannot run this build:\n  " + "\n  ".join(problems))
