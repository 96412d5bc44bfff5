"""Progress of a training run, for the person or the log watching it."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """Progress goes to stderr: stdout's last line is the run's JSON result."""
    print(message, file=sys.stderr, flush=True)
