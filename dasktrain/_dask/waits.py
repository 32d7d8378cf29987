"""Every wait of dasktrain on the cluster, never forever on workers paused for memory.

* :func:`wait_for` (and :func:`gather`, :func:`result` on top of it): dasktrain's own waits on
  futures, in steps of a fraction of a second; after the first step each step asks
  :class:`~.paused.StallWatch` whether the work can still run;
* :func:`scatter_data`: ``client.scatter`` once a running worker can take the data
  (distributed sends scattered data to running workers only, and waits for one until its
  timeout: "No valid workers found");
* :func:`watching`: a guard around a blocking call that dasktrain does not own
  (``xgboost.dask``, dask-ml, the input checks, a :func:`~dasktrain.compare` workload): a
  thread looks at the futures the client gained since the call began and, once they are
  stuck, cancels them, which ends the call; the guard then raises
  :class:`~dasktrain.exceptions.WorkersPausedError` instead of the cancellation;
* :func:`future_keys`, :func:`cancel_keys`, :func:`busy_with_cancelled`: the futures a call
  made, cancelling them, and the cancelled tasks that still hold a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import WorkersPausedError
from .paused import StallWatch

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

__all__ = [
    "wait_for",
    "gather",
    "result",
    "scatter_data",
    "watching",
    "future_keys",
    "cancel_keys",
    "busy_with_cancelled",
]


def _wait_step(client, futures, timeout, return_when):
    """``(done, not_done)`` after at most ``timeout`` s; a cancelled future counts as done."""
    from distributed import wait
    from distributed.client import FuturesCancelledError

    with client.as_current():  # wait() looks up the default client
        try:
            wait(futures, timeout=timeout, return_when=return_when)
        except (TimeoutError, FuturesCancelledError) as exc:
            # Not done yet, or cancelled (the caller's gather or result raises that, as
            # without this wait). distributed's sync() keeps the exception in a local of a
            # frame of its traceback: a cycle that would keep this frame, and so the
            # futures and their data on the cluster, alive until the next garbage collection.
            exc.__traceback__ = None
    done = [f for f in futures if f.done()]
    return done, [f for f in futures if not f.done()]


def wait_for(client, futures, *, what=None, return_when="ALL_COMPLETED", timeout=None):
    """Wait for ``futures`` like :func:`distributed.wait`, never forever on paused workers.

    Parameters
    ----------
    client : distributed.Client
    futures : list of distributed.Future
    what : str, optional
        What waits, for the message.
    return_when : {"ALL_COMPLETED", "FIRST_COMPLETED"}
    timeout : float, optional
        Seconds in all; :class:`TimeoutError` after them, as :func:`distributed.wait`.

    Returns
    -------
    (done, not_done) : lists of futures. A cancelled or failed future is done.

    Raises
    ------
    WorkersPausedError
        The work has waited for workers paused for memory for ``dasktrain.paused-workers.grace``.
    """
    from distributed.client import futures_of

    futures = futures_of(futures)
    end = None if timeout is None else time.monotonic() + float(timeout)
    watch = StallWatch(client, what)
    # The scheduler is asked nothing during the first step: a wait that ends within it costs
    # what distributed.wait costs.
    step = watch.interval
    while True:
        if end is not None:
            step = min(step, max(0.0, end - time.monotonic()))
        done, not_done = _wait_step(client, futures, step, return_when)
        if not not_done or (return_when == "FIRST_COMPLETED" and done):
            return done, not_done
        if end is not None and time.monotonic() >= end:
            raise TimeoutError(f"{len(not_done)} task(s) did not finish within {timeout} s")
        watch.check([f.key for f in not_done])
        step = watch.interval


def gather(client, futures, *, what=None):
    """``client.gather(futures)`` after :func:`wait_for` (same structure back)."""
    wait_for(client, futures, what=what)
    return client.gather(futures)


def scatter_data(client, data, *, what=None, workers=None, **kwargs):
    """``client.scatter(data, workers=workers, **kwargs)``, never stuck on paused workers.

    While only paused workers could take the data, wait (without sending) and raise
    :class:`~dasktrain.exceptions.WorkersPausedError` after the grace period; with no worker
    at all, ``client.scatter`` fails after its ``timeout`` as usual.
    """
    watch = StallWatch(client, what)
    while watch.check_sending(workers):
        time.sleep(watch.interval)
    return client.scatter(data, workers=workers, **kwargs)


def result(future, *, what=None, timeout=None):
    """``future.result()`` after :func:`wait_for` (``timeout`` as ``Future.result``)."""
    wait_for(future.client, [future], what=what, timeout=timeout)
    return future.result()


# -------------------------------------------------------------------------------- the guard
def future_keys(client):
    """The keys of the futures ``client`` holds (its event loop thread may change the dict)."""
    for _ in range(10):
        try:
            return set(client.futures)
        except RuntimeError:  # "dictionary changed size during iteration"
            time.sleep(0.01)
    return set(client.futures)


def cancel_keys(client, keys, reason):
    """Cancel the futures of ``keys`` (force: their dependents too); how many were asked."""
    from distributed import Future

    keys = list(keys)
    if keys:
        futures = [Future(k, client) for k in keys]
        try:
            client.cancel(futures, force=True, reason=reason)
        except Exception:  # noqa: BLE001 - best effort: the caller says what happened
            logger.warning("could not cancel %d task(s)", len(keys), exc_info=True)
        del futures
    return len(keys)


def busy_with_cancelled(client):
    """``{worker: [key, ...]}`` of cancelled tasks that still hold a worker thread.

    A running Python task cannot be stopped: after ``client.cancel`` the worker forgets the
    task but its thread runs on (state ``cancelled`` in ``WorkerState.executing``), and the
    worker starts nothing else on that thread until it returns. Seceded tasks hold no thread
    and are left out. ``{}`` when the workers cannot be asked.
    """

    def stuck(dask_worker):  # nested: travels by value
        return [str(ts.key) for ts in dask_worker.state.executing if ts.state == "cancelled"]

    try:
        found = client.run(stuck)
    except Exception:  # noqa: BLE001 - nothing known to be stuck
        logger.debug("could not ask the workers for cancelled tasks", exc_info=True)
        return {}
    return {worker: keys for worker, keys in found.items() if keys}


class _Guard:
    """The thread of :func:`watching`: looks at the new futures, cancels them once stuck."""

    def __init__(self, client, what):
        self.client, self.what = client, what
        self.before = future_keys(client)
        self.watch = StallWatch(client, what)
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="dasktrain-paused")

    def new_keys(self):
        return future_keys(self.client) - self.before

    def _run(self):
        while not self._stop.wait(self.watch.interval):
            keys = self.new_keys()
            try:
                if self.error is None:
                    self.watch.check(keys)
                    continue
            except WorkersPausedError as exc:
                self.error = exc
            except Exception:  # noqa: BLE001 - a client closing meanwhile: nothing to watch
                logger.debug("the paused-worker guard could not look", exc_info=True)
                continue
            # Stuck: every future of the call, also those made since, is cancelled.
            cancel_keys(self.client, keys, reason=f"dasktrain: {self.error}")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, kind, exc, tb):
        self._stop.set()
        self._thread.join()
        # Once tripped, the call's futures are cancelled: whatever it returns is unusable.
        if self.error is not None and not isinstance(exc, WorkersPausedError):
            raise self.error from exc
        return False


def watching(client: Client | None, what: str) -> contextlib.AbstractContextManager[Any]:
    """A guard around a blocking call dasktrain does not own (see the module docstring).

    Parameters
    ----------
    client : distributed.Client or None
        None: nothing to watch (no distributed client).
    what : str
        What waits, for the message.

    Returns
    -------
    A context manager. Inside it, once the futures the client gained were stuck behind
    paused workers for the grace period, they are cancelled; the exception that ends the
    call is then raised as :class:`~dasktrain.exceptions.WorkersPausedError`.
    """
    if client is None:
        return contextlib.nullcontext()
    return _Guard(client, what)
