"""Errors that mean "the input is wrong": stages print them as one line, without a traceback.

Also what a stage needs to clean up after an earlier one that was killed: which process owns a
temp folder or an MLflow run (:func:`process_identity`, :func:`process_gone`), and a window in
which SIGTERM / Ctrl-C wait until a half-made record is consistent (:func:`deferred_signals`).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import sys
import threading
from typing import Callable, Iterator

# A pid reused by a later process has a different start time; psutil's start times of one
# process agree to the clock tick, so anything further apart than this is another process.
_START_TOLERANCE_S = 1.0


class UserError(Exception):
    """Bad input (a file, a param, a server address); the message names it and the fix."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise print the message quoted
        return str(self.args[0]) if self.args else ""


def _pid_namespace() -> str:
    """This process's pid namespace ('' where /proc has none): two containers on one host (or with
    one host name) number their processes apart, so a pid only means something inside one."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return ""
    return "".join(c for c in link if c.isdigit())


def process_identity() -> dict[str, str]:
    """Who this process is, for finding out later whether it is still alive: host name, pid
    namespace, pid and start time (seconds since the epoch; tells a reused pid apart)."""
    import psutil

    return {"host": socket.gethostname(), "pidns": _pid_namespace(), "pid": str(os.getpid()),
            "start": f"{psutil.Process().create_time():.2f}"}


def machine_id(host: str | None = None, pidns: str | None = None) -> str:
    """8 hex digits naming (host, pid namespace): where a pid can be checked. Default: here."""
    host = socket.gethostname() if host is None else host
    pidns = _pid_namespace() if pidns is None else pidns
    return hashlib.sha1(f"{host}/{pidns}".encode()).hexdigest()[:8]


def process_gone(pid: int, start: float) -> bool:
    """True when process ``pid`` started at ``start`` no longer runs *on this machine* (it exited,
    was killed, is a zombie, or its pid now belongs to a later process). Callers check first that
    the owner was on this machine (same host and pid namespace): elsewhere nothing can be known.
    When in doubt (no permission to look), the owner counts as alive."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        return abs(proc.create_time() - start) > _START_TOLERANCE_S
    except psutil.NoSuchProcess:  # also ZombieProcess
        return True
    except psutil.Error:
        return False


@contextlib.contextmanager
def deferred_signals(signums=(signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Hold SIGTERM and Ctrl-C back while the block runs, then deliver them: for a few quick
    calls that must not stop half-way (an MLflow run created but not yet closed). Outside the
    main thread (where handlers cannot change) the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    try:
        for signum in signums:
            if signal.getsignal(signum) is not None:  # None: set outside Python, not restorable
                previous[signum] = signal.signal(signum, lambda s, frame: pending.append(s))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(pending):  # once each, in arrival order
            signal.raise_signal(signum)  # now handled as it would have been (SystemExit, ...)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main(); a UserError becomes ``error: ...`` on stderr and exit status 1.

    SIGTERM (``dvc queue kill``, a scheduler, ``kill``) becomes SystemExit, so cleanup still runs:
    temp output folders vanish and the MLflow run is closed as FAILED instead of left RUNNING.
    Ctrl-C runs the same cleanup (the MLflow run is closed as KILLED), then prints ``interrupted``
    on stderr, without a traceback, and exits with status 130 (128 + SIGINT) like a shell."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting: no traceback
        print("interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
