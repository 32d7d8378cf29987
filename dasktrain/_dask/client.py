"""Which client, what is there, who left: the questions each step asks of the cluster.

* **which client?** :func:`maybe_client` / :func:`get_client` resolve ``client=None`` late,
  with :func:`distributed.get_client` (a model never pickles its client);
  :func:`using_client` makes an explicit client the one dask computations use;
* **what is there?** :func:`scheduler_workers` (``{address: info}``), :func:`live_workers`
  (the addresses, asked afresh), :func:`total_threads` (all workers' threads: the cores a fair
  local baseline gets), :func:`current_worker_threads` (the threads of the one worker running
  this task), :func:`scheduler_host`;
* **who left?** :class:`WorkerWatch` reads the scheduler's ``remove-worker`` events.

:func:`dasktrain.connect` (in :mod:`dasktrain.cluster`) is the one way to *get* a client; this
module only looks one up.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..exceptions import ValidationError

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

__all__ = [
    "maybe_client",
    "get_client",
    "using_client",
    "connect_timeout",
    "scheduler_workers",
    "live_workers",
    "total_threads",
    "current_worker_threads",
    "scheduler_host",
    "WorkerWatch",
]


# --------------------------------------------------------------------------------------------
def maybe_client(client: Client | None = None) -> Client | None:
    """Return ``client``, else the default ``distributed`` client, else None (never raises)."""
    if client is not None:
        return client
    from distributed import get_client as _default

    try:
        return _default()
    except ValueError:
        return None


def get_client(client: Client | None = None, *, what: str = "engine='dask'") -> Client:
    """Return ``client`` or the default client; raise saying how to get one when there is none.

    Parameters
    ----------
    client : distributed.Client, optional
    what : str
        What needs the client, for the message (e.g. ``"cross_validate(engine='dask')"``).

    Raises
    ------
    ValidationError
        When ``client`` is None and no default client exists.
    """
    c = maybe_client(client)
    if c is None:
        raise ValidationError(
            f"{what} needs a Dask client but client=None and no default client exists. "
            "Start one with `client = dasktrain.connect()` (or distributed.Client(...)) "
            "or pass client=..."
        )
    return c


def using_client(client):
    """Context in which dask computations use ``client`` (when given) instead of the default.

    An explicit ``client=`` that is not the default client must also run the checks and
    reductions a method computes on the way (NaN checks, unique labels, scores).
    """
    import contextlib

    return client.as_current() if client is not None else contextlib.nullcontext()


def connect_timeout():
    """Seconds to wait for the cluster to answer: ``distributed.comm.timeouts.connect``.

    A number, never the setting's string (``"30s"``): ``client.scatter(timeout="30s")`` failed
    with ``TypeError: float + str`` instead of timing out.
    """
    import dask.config
    from dask.utils import parse_timedelta

    value = dask.config.get("distributed.comm.timeouts.connect", "30s")
    return float(parse_timedelta(value, default="seconds"))


def scheduler_workers(client):
    """``{address: info}`` of every worker, asked of the scheduler now.

    Not ``client.scheduler_info()``: it fetches into an attribute of the client that the
    client's periodic refresh overwrites with an identity holding no per-worker entries (recent
    distributed asks for none), so read after a refresh it listed no workers on a full
    cluster (an XGBoost fit divided by zero in CI). Recent distributed also lists only 5
    workers unless asked for all.
    """
    import inspect

    try:
        all_kw = "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover - a client without a signature
        all_kw = False
    kwargs = {"n_workers": -1} if all_kw else {}
    return client.sync(client.scheduler.identity, **kwargs)["workers"]


def live_workers(client: Client) -> set[str]:
    """The addresses of the workers alive now, asked of the scheduler (never a cached list).

    ``client.nthreads()`` asks the scheduler every time; ``client.scheduler_info()`` can
    return a cached identity whose worker list a periodic refresh has just emptied, so code
    that watches workers come and go (the DDP launcher) uses this.
    """
    return set(client.nthreads())


def total_threads(client):
    """Total threads of the client's workers: the cores a fair local baseline gets."""
    return int(sum(w.get("nthreads", 1) for w in scheduler_workers(client).values()))


def current_worker_threads():
    """Threads of the Dask worker running this task, or None outside a worker.

    Not :func:`total_threads`: this is one worker's share of its machine, what a task that
    sizes a thread pool of its own (torch, TensorFlow) may use.
    """
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def scheduler_host(client):
    """The scheduler's host as its workers reach it (from its own address, not the client's).

    A client behind an SSH tunnel knows the scheduler as ``127.0.0.1``; the scheduler's own
    address (``scheduler_info()["address"]``) is the one its workers connect to, so it is the
    address to bind services that the workers must reach, such as XGBoost's tracker.
    """
    from distributed.comm import get_address_host

    return get_address_host(client.scheduler_info()["address"])


class WorkerWatch:
    """Which workers leave the cluster from now on, as the scheduler saw it.

    Reads the scheduler's ``remove-worker`` events (``Client.get_events("all")``), so a worker
    that died and was restarted by its nanny (even under the same address) still counts, and a
    run's record can say it lost a worker. Only events newer than the creation of the watch
    count (the scheduler's own timestamps: no clock skew with the client).

    Parameters
    ----------
    client : distributed.Client
    """

    def __init__(self, client):
        self.client = client
        self._since = max((t for t, _ in self._all()), default=float("-inf"))

    def _all(self):
        """The scheduler's ``remove-worker`` events, picked out on the scheduler.

        Reading the whole ``"all"`` topic fails once it holds an event that cannot be
        serialised: ``Client.scatter(..., broadcast=True)`` logs a ``replicate`` event with
        the scheduler's ``WorkerState`` objects in it (distributed 2026.8), after which every
        removal went unseen.
        """

        def removals(dask_scheduler):  # nested: travels by value, runs on the scheduler
            return [
                (t, {k: msg.get(k) for k in ("action", "worker", "expected")})
                for t, msg in dask_scheduler.get_events("all")
                if isinstance(msg, dict) and msg.get("action") == "remove-worker"
            ]

        try:
            return list(self.client.run_on_scheduler(removals))
        except Exception:  # noqa: BLE001 - a scheduler that cannot answer: nothing seen
            logger.debug("could not read the scheduler's events", exc_info=True)
            return []

    def _removals(self):
        return [
            (t, msg)
            for t, msg in self._all()
            if isinstance(msg, dict) and msg.get("action") == "remove-worker"
        ]

    def lost(self, *, wait=0.0):
        """``[(address, expected)]`` of the workers removed since the watch began.

        ``expected`` is True for a planned retirement (scaling down), False for a worker that
        died. ``wait`` seconds are given to the scheduler to notice a death that just happened
        (it learns of it when the worker's connection breaks).
        """
        import time

        deadline = time.monotonic() + wait
        while True:
            out = [
                (msg.get("worker"), bool(msg.get("expected")))
                for t, msg in self._removals()
                if t > self._since
            ]
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(0.05)
