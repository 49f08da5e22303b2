"""A build killed with SIGKILL leaves no process behind: the pool's forkserver and its workers die
with it (the kernel's parent-death signal), instead of holding ~570 MB for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import sys, time
from corpusmix.core.executor import open_executor
from corpusmix.core.spec import Execution

with open_executor(Execution(workers=2), units=8) as ex:
    assert list(ex.map(abs, range(-8, 0))) == list(range(8, 0, -1))  # the workers are up
    print("ready", flush=True)
    time.sleep(600)
"""


def _children() -> dict[int, int]:
    """pid -> parent pid of every process."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = int(fields[1])
    return out


def _descendants(pid: int) -> set[int]:
    parents, found, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found.update(kids)
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_parent_takes_its_pool_with_it():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        pool = _descendants(proc.pid)
        assert len(pool) >= 3  # the forkserver and two workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in pool) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in pool if _alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
