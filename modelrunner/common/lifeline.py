"""A process that dies with the process that started it (Linux), asked for by the child itself.

The kernel's PR_SET_PDEATHSIG is the way; setting it from a `preexec_fn` is not: that makes subprocess
fork() and run Python in the child of a process with gRPC threads, where gRPC's fork handlers and a
garbage-collected channel can abort the child before its exec (seen in the tests: a service "exited"
with SIGABRT and gRPC's epoll error before it ever ran). So the parent passes its pid and the child,
after exec, asks for the signal and checks that the parent did not die first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

PARENT_PID_ENV = "MODELRUNNER_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with(parent_pid: int, signum: int = signal.SIGTERM) -> bool:
    """Has `signum` sent to this process when its parent dies; False when `parent_pid` is already gone."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to ask for
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent_pid


def die_with_launcher() -> None:
    """For a service the launcher started (it sets PARENT_PID_ENV): exits if the launcher is gone."""
    parent = os.environ.pop(PARENT_PID_ENV, "")
    if parent.isdigit() and not die_with(int(parent)):
        raise SystemExit("the process that started this service has exited")
