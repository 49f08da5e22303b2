"""Where shard-level work runs: in this process, or in a local process pool.

Stages hand a list of independent units (one input file, one shard) to an
executor's ``map`` and get results back in input order, so the output does not
depend on which worker finished first. A pool is started once and can be
shared by every source of a build, which matters: starting Python workers
costs about a second.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager


class InlineExecutor:
    """Runs each unit in the calling process, one after another (debugging, tests, tiny inputs)."""

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        return map(fn, items)


@contextmanager
def make_executor(workers: int) -> Iterator[Executor | InlineExecutor]:
    """A process pool of ``workers`` (forkserver start: safe under threaded hosts), or inline for 0/1."""
    if workers <= 1:
        yield InlineExecutor()
        return
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield pool
