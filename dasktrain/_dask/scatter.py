"""numpy pieces sent to the cluster, mapped, and gathered back, surviving lost workers."""

from __future__ import annotations

import logging
from concurrent.futures import CancelledError

from .client import connect_timeout, scheduler_workers
from .keys import task_keys
from .restarts import Restarts
from .waits import scatter_data, wait_for

logger = logging.getLogger(__name__)

__all__ = ["map_scattered"]


class _Pieces:
    """Scatters pieces and resubmits the ones lost with a worker, at most ``max_resubmits``."""

    def __init__(self, client, func, pieces, name, max_resubmits, args=()):
        self.client, self.func, self.pieces, self.args = client, func, pieces, tuple(args)
        self.timeout = connect_timeout()
        # Each piece has its own budget: a piece lost again and again means a worker that
        # keeps dying on it, while others lost once each are the cluster shrinking.
        self.restarts = [
            Restarts(f"piece {i} of the images", max_resubmits, logger) for i in range(len(pieces))
        ]
        self.keys = task_keys(name, len(pieces))

    def scatter(self, items):
        from ..exceptions import WorkerLostError

        try:
            # hash=False: equal inputs of an earlier call must not share (and lose) its keys.
            return scatter_data(self.client, items, hash=False, timeout=self.timeout)
        except (TimeoutError, OSError) as exc:
            raise WorkerLostError(
                f"could not send {len(items)} piece(s) of images to the cluster within "
                f"{self.timeout:g} s ({type(exc).__name__}: {exc}); does it still have workers? "
                f"Workers now: {sorted(scheduler_workers(self.client))!r}."
            ) from exc

    def submit_all(self):
        n = len(self.pieces)
        extra = [[a] * n for a in self.args]
        futures = self.client.map(
            self.func, self.scatter(self.pieces), *extra, key=self.keys, pure=False
        )
        return futures, {f.key: i for i, f in enumerate(futures)}

    def resubmit(self, i, exc):
        """A new future for piece ``i``, lost with a worker; raise once it was lost too often."""
        from ..exceptions import WorkerLostError

        restarts = self.restarts[i]
        if not restarts.failed(f"lost with a worker ({exc}); sent again"):
            raise WorkerLostError(
                f"piece {i} of the images ({len(self.pieces[i])} images) was lost with a "
                f"worker {restarts.attempts} times ({exc}); the cluster keeps losing workers. "
                "Check the workers' logs (memory limit?) and try again."
            ) from exc
        key = f"{self.keys[i]}-resent{restarts.restarts}"
        piece = self.scatter([self.pieces[i]])[0]
        return self.client.submit(self.func, piece, *self.args, key=key, pure=False)


def map_scattered(client, func, pieces, *, name, progress=None, max_resubmits=None, args=()):
    """``[func(piece, *args) for piece in pieces]`` on the cluster, surviving lost workers.

    The pieces are scattered (they travel to the workers directly, not through the task
    graph), mapped and gathered as they finish, each result released on the cluster at once.
    A scattered piece lives on one worker only and the scheduler cannot recompute it: when that
    worker dies, its task is cancelled ("already forgotten"). Such a piece is scattered again
    from the driver's copy and resubmitted, at most ``max_resubmits`` times
    (``distributed.scheduler.allowed-failures`` by default), as the lazy path's tasks are
    recomputed by the scheduler.

    Parameters
    ----------
    client : distributed.Client
    func : callable
        Module-level function (or a partial of one) of one numpy piece.
    pieces : list of ndarray
    name : str
        Key prefix on the dashboard (``"cnnfeatures-piece"``).
    progress : str, optional
        Show a progress bar with this label.
    args : tuple, optional
        Values every call gets after its piece, positionally: futures (a model scattered
        once) are resolved on the worker. Never bind a large value into ``func``: it would
        travel inside every task (dask-ml #842).

    Returns
    -------
    list, the results in the order of ``pieces``.

    Raises
    ------
    WorkerLostError
        A piece was lost more than ``max_resubmits`` times, or no worker took it back in
        ``distributed.comm.timeouts.connect``.
    WorkersPausedError
        The pieces waited on workers paused for memory (:mod:`.waits`).
    """
    import dask.config

    if not pieces:
        return []
    if max_resubmits is None:
        max_resubmits = int(dask.config.get("distributed.scheduler.allowed-failures", 3))
    work = _Pieces(client, func, pieces, name, max_resubmits, args)
    pending, index = work.submit_all()
    # Only _collect holds the futures: each is dropped once its result is here.
    return _collect(pending, index, work, _progress_bar(progress, len(pieces)))


def _progress_bar(label, total):
    if not label:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="chunk", desc=label)


def _collect(pending, index, work, bar):
    """Results by piece, resubmitting the pieces whose futures were cancelled (lost)."""
    from distributed.client import FutureCancelledError

    results = [None] * len(work.pieces)
    try:
        while pending:
            done, pending = wait_for(work.client, pending, return_when="FIRST_COMPLETED")
            for fut in done:
                i = index.pop(fut.key)
                try:
                    results[i] = fut.result()
                except (FutureCancelledError, CancelledError) as exc:
                    new = work.resubmit(i, exc)
                    index[new.key] = i
                    pending.append(new)
                    continue
                if bar is not None:
                    bar.update(1)
            del done
    finally:
        if bar is not None:
            bar.close()
    return results
