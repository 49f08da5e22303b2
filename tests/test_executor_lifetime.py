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


def test_a_local_ray_start_keeps_its_token_private(tmp_path, monkeypatch):
    """Ray's local start writes ~/.ray/auth_token with the umask's permissions (0644 here): the
    executor creates it 0600 first, or narrows one that is readable by others."""
    from corpusmix.core.executor import _private_token_file

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    token = tmp_path / ".ray" / "auth_token"
    _private_token_file()
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text()) == 64
    first = token.read_text()
    token.chmod(0o644)
    _private_token_file()
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text() == first  # narrowed, not replaced
