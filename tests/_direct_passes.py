"""How many direct passes the workers have served: what the tests of DirectGroup watch.

A direct pass leaves no task behind, so the tests count the calls of the worker's pass
function instead: :func:`passes_served` wraps ``dasktrain._dask.direct._run_pass`` in every
worker process once (the real function still runs) and returns the sum of the counts. A
worker restarted afterwards counts from 0 again, from the next call on.
"""

from __future__ import annotations


class _Counting:
    """``_run_pass`` with a count of its calls (on a worker)."""

    def __init__(self, run):
        self.run, self.served = run, 0

    def __call__(self, *args, **kwargs):
        try:
            return self.run(*args, **kwargs)
        finally:
            self.served += 1


def _served_here():
    from dasktrain._dask import direct

    if not isinstance(direct._run_pass, _Counting):
        direct._run_pass = _Counting(direct._run_pass)
    return direct._run_pass.served


def passes_served(client) -> int:
    """Passes served by the direct tasks of every worker since this was first called there."""
    return sum(client.run(_served_here).values())
