"""Die with the parent: imported by the pool's forkserver as it starts (and called by each worker).

A process pool outlives a build killed with SIGKILL unless the kernel ends it: Linux's
PR_SET_PDEATHSIG sends the process SIGKILL when the thread that created it exits. The
forkserver (child of the build) imports this module, and every worker it forks asks the
same right after the fork (``os.register_at_fork``), before it starts up: a worker still
starting when the build dies would otherwise wait on a dead queue forever. So a killed
build takes its forkserver with it, and the forkserver its workers. Elsewhere than Linux
it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux); exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


die_with_parent()
if hasattr(os, "register_at_fork"):  # and every process this one forks, from its first instruction on
    os.register_at_fork(after_in_child=die_with_parent)
