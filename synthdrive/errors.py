"""Errors that mean "the input is wrong": stages print them as one line, without a traceback."""
from __future__ import annotations

import signal
import sys
from typing import Callable


class UserError(Exception):
    """Bad input (a file, a param, a server address); the message names it and the fix."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise print the message quoted
        return str(self.args[0]) if self.args else ""


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main(); a UserError becomes ``error: ...`` on stderr and exit status 1.

    SIGTERM (``dvc queue kill``, a scheduler, ``kill``) becomes SystemExit, so cleanup still runs:
    temp output folders vanish and the MLflow run is closed as FAILED instead of left RUNNING."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
