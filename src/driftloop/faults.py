"""Named fault points: where a crash would matter, the code says so, and tests can crash it there.

``fault_point(register.FAULTS["gate"]["after_alias"])`` (the point ``registry.gate.after_alias``) does nothing
unless the environment variable ``DRIFTLOOP_FAULT`` names that point (only tests and ``benchmarks/bench_faults.py``
set it). When it does, the process kills itself with SIGKILL at that exact moment: no ``finally``, no ``atexit``,
no flush: the same as ``kill -9`` or a power cut.

``DRIFTLOOP_FAULT`` may name several points separated by commas; ``name@N`` fires on the N-th time the point is
reached (1-based, counted per process), so a point inside a loop (a trial, a stage) can be hit in the middle.

Every point is listed in ``POINTS`` with the command that reaches it, so the fault benchmark can exercise them all
and a test can check that none was renamed or removed without updating the list.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "DRIFTLOOP_FAULT"

# point name -> what reaches it (documentation for the harness; tests assert code and list agree)
POINTS: dict[str, str] = {}

_hits: Counter[str] = Counter()


def register_point(name: str, reached_by: str) -> str:
    """Declare a fault point (at import of the module that owns it); returns the name for use in code."""
    POINTS[name] = reached_by
    return name


def _armed() -> dict[str, int]:
    spec = os.environ.get(ENV, "").strip()
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = part.partition("@")
        out[name] = int(nth) if nth else 1
    return out


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if ``DRIFTLOOP_FAULT`` arms ``name`` (and this is the armed hit)."""
    if ENV not in os.environ:  # the common path: one dict lookup
        return
    armed = _armed()
    if name not in armed:
        return
    _hits[name] += 1
    if _hits[name] == armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
