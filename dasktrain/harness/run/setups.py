"""The setups of a comparison: the local engine and one or more Dask clusters, side by side.

A *setup* is what one row of the table measures: ``"local"`` (the plain engine in this
process) or a named Dask cluster (``"dask"`` by default; ``"dask-1w"``, ``"dask-2w"``,
``"cluster-a"``... when :func:`~dasktrain.compare` gets ``clusters=``). Every option is checked
by :func:`check_clusters` before a cluster starts; :func:`open_setups` then connects to the
clusters (or starts the local ones) and :func:`close_setups` closes what it opened, never a
cluster the caller passed in.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import platform
import socket
import sys
from collections.abc import Mapping
from typing import Any

from ... import __version__
from ..._compat import cpu_count, gpu_count
from ...exceptions import ClusterConnectionError, ValidationError
from .progress import SetupDescription
from .spark_setup import close_spark, describe_spark, open_spark

__all__ = [
    "Setup",
    "check_clusters",
    "open_setups",
    "close_setups",
    "free_stuck_workers",
    "versions",
    "LOCAL",
]

LOCAL = "local"

#: Keyword arguments of :func:`dasktrain.connect` a cluster spec may set (a dict spec).
_CONNECT_KEYS = ("n_workers", "threads_per_worker", "memory_limit", "gpu", "dashboard_address")


@dataclasses.dataclass
class Setup:
    """One thing the comparison measures: the local engine or one Dask cluster.

    ``engine`` is ``"local"``, ``"dask"`` or ``"spark"``; ``name`` labels its rows (the
    ``setup`` column). ``threads`` is the cores its runs may use (a cluster's worker threads;
    for the local engine and a Spark session started here, as many as the largest cluster
    has, so the comparison is per core). ``client`` is the Spark setup's ``SparkSession``.
    """

    name: str
    engine: str
    client: Any = None
    #: The comparison made the client (closes it at the end) / started the cluster itself.
    owned: bool = False
    started: bool = False
    workers: int = 0
    threads: int = 0
    gpus: int = 0
    #: ``{worker address: pid}`` of the cluster's workers (pid -1 when on another host).
    worker_pids: dict = dataclasses.field(default_factory=dict)
    #: Why the setup cannot run (Spark without pyspark or Java): its rows say so.
    unavailable: str | None = None

    @property
    def devices(self) -> int:
        """Devices the setup uses: its workers (1 for the local engine)."""
        return max(1, self.workers) if self.engine == "dask" else 1

    def describe(self) -> SetupDescription:
        """JSON-ready description (``Results.setup["setups"][name]``)."""
        if self.engine == "spark":
            return describe_spark(self)
        c = self.client
        return SetupDescription(
            engine=self.engine,
            workers=self.workers,
            threads=self.threads,
            gpus=self.gpus,
            devices=self.devices,
            scheduler=c.scheduler.address if c is not None else None,
            dashboard=c.dashboard_link if c is not None else None,
            live_page=_live_page(c),
            worker_addresses=sorted(self.worker_pids),
            started_here=self.started,
        )


def _live_page(client):
    """The ``/dasktrain`` page of ``client``'s scheduler, or None (none, or unreachable)."""
    from ...cluster import dashboard_link

    try:
        return dashboard_link(client, warn=False) if client is not None else None
    except Exception:  # a description never fails: a closed client has no page to show
        return None


# --------------------------------------------------------------------------------------------
# Checking (before anything starts)
# --------------------------------------------------------------------------------------------
def _check_spec(name, spec):
    from distributed import Client

    if isinstance(spec, Client):
        return spec
    if isinstance(spec, str):
        if not spec.strip():
            raise ValidationError(f"clusters[{name!r}] is an empty address.")
        return spec
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        if spec < 1:
            raise ValidationError(
                f"clusters[{name!r}]={spec!r}: a number of local workers must be >= 1."
            )
        return int(spec)
    if isinstance(spec, Mapping):
        bad = sorted(set(spec) - set(_CONNECT_KEYS))
        if bad:
            raise ValidationError(
                f"clusters[{name!r}] has unknown key(s) {bad!r}; a dict spec takes the "
                f"arguments of dasktrain.connect(): {', '.join(_CONNECT_KEYS)}."
            )
        return dict(spec)
    raise ValidationError(
        f"clusters[{name!r}]={spec!r} must be a distributed.Client, a scheduler address "
        "('tcp://host:8786'), a number of local workers, or a dict of dasktrain.connect() "
        "arguments (e.g. {'n_workers': 2} or {'gpu': True})."
    )


def _as_mapping(clusters):
    if isinstance(clusters, Mapping):
        return dict(clusters)
    if isinstance(clusters, (str, bytes)) or not hasattr(clusters, "__iter__"):
        raise ValidationError(
            f"clusters={clusters!r} must be a mapping name -> cluster, or a list of local "
            "cluster sizes such as [1, 2]."
        )
    items = list(clusters)
    named = {}
    for n in items:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise ValidationError(
                f"clusters={items!r}: a list names local cluster sizes (ints, e.g. [1, 2]); "
                "pass a mapping name -> client, address or size for anything else."
            )
        named[f"dask-{int(n)}w"] = n
    return named


def _check_client(client):
    from distributed import Client

    if client is not None and not isinstance(client, (str, Client)):
        raise ValidationError(
            f"client={client!r} must be None, a scheduler address or a distributed.Client."
        )


def check_clusters(clusters, engines, client) -> dict | None:
    """Check ``clusters=`` of :func:`~dasktrain.compare`; return ``{name: spec}`` or None.

    Raises
    ------
    ValidationError
        Not a mapping or list of sizes, a bad name or spec, ``client=`` given as well, or no
        ``"dask"`` among ``engines``.
    """
    if clusters is None:
        _check_client(client)
        return None
    named = _as_mapping(clusters)
    if not named:
        raise ValidationError("clusters is empty; name at least one cluster, or pass None.")
    if client is not None:
        raise ValidationError("pass either client= (one cluster) or clusters= (several), not both.")
    if "dask" not in engines:
        raise ValidationError(
            f"clusters= runs the dask engine on each cluster; add 'dask' to engines={engines!r}."
        )
    for name in named:
        if not isinstance(name, str) or not name.strip() or name == LOCAL:
            raise ValidationError(
                f"cluster name {name!r} must be a non-empty string other than {LOCAL!r}."
            )
    specs = [s for s in named.values() if not isinstance(s, (int, str, dict, Mapping))]
    if len({id(s) for s in specs}) != len(specs):
        raise ValidationError("clusters= names the same client twice; each setup needs its own.")
    return {name: _check_spec(name, spec) for name, spec in named.items()}


# --------------------------------------------------------------------------------------------
# Opening and closing
# --------------------------------------------------------------------------------------------
def _connect_spec(spec, first_local):
    """``(client, owned, started)`` for one checked spec: the client, whether the comparison
    made it (and closes it), whether it started the cluster too."""
    from distributed import Client

    from ..._dask import maybe_client
    from ...cluster import connect

    if spec is None:  # the legacy single cluster: the default client, else a new one
        default = maybe_client()
        return (default, False, False) if default is not None else (connect(), True, True)
    if isinstance(spec, Client):
        if spec.status not in ("running", "newly-created"):
            raise ClusterConnectionError(
                f"client {spec!r} is {spec.status!r}; connect it again with dasktrain.connect()."
            )
        return spec, False, False
    if isinstance(spec, str):
        return connect(spec), True, False  # raises ClusterConnectionError naming the address
    kw = {"n_workers": spec} if isinstance(spec, int) else dict(spec)
    if isinstance(spec, int):
        kw.update(threads_per_worker=1, gpu=False)
    if not first_local:
        # Only the first local cluster takes the usual dashboard port: the others would log
        # a port-in-use warning on their way to a free one.
        kw.setdefault("dashboard_address", "127.0.0.1:0")
    return connect(**kw), True, True


def _probe():
    """(pid, host, GPUs) of the process it runs in (a worker: run with ``Client.run``)."""
    from dasktrain._compat import gpu_count as _gpus

    return os.getpid(), socket.gethostname(), _gpus()


def _worker_info(client):
    """``({address: pid}, GPUs)`` of the workers (pid -1 for a worker on another host)."""
    here = socket.gethostname()
    try:
        info = client.run(_probe)
    except Exception:  # noqa: BLE001 - only used to name processes and count GPUs
        return {}, 0
    pids = {a: (pid if host == here else -1) for a, (pid, host, _) in info.items()}
    # The GPUs the cluster can use: those its workers see, once per host (dask-cuda lists
    # every device to each worker, its own first).
    per_host = {}
    for _, host, n in info.values():
        per_host[host] = max(per_host.get(host, 0), n)
    return pids, sum(per_host.values())


def _fill(setup):
    """Workers, threads and GPUs of a dask setup, from its scheduler."""
    from ..._dask import scheduler_workers

    workers = scheduler_workers(setup.client)
    if not workers:
        raise ClusterConnectionError(
            f"the Dask cluster of setup {setup.name!r} at {setup.client.scheduler.address!r} has "
            "no workers; start some or use engines=('local',)."
        )
    setup.workers = len(workers)
    setup.threads = int(sum(w.get("nthreads", 0) for w in workers.values())) or len(workers)
    setup.worker_pids, setup.gpus = _worker_info(setup.client)
    return setup


def open_setups(engines, client, clusters, spark=None, log=None) -> list[Setup]:
    """The setups of a comparison, clusters connected or started, in the order they run.

    ``clusters`` is what :func:`check_clusters` returned (None: one cluster, ``client``);
    ``spark`` the user's ``SparkSession`` or master URL (None: a ``local[N]`` session with
    the largest cluster's threads); ``log`` the file a Spark session started here writes to.
    The local setup comes first and gets as many cores as the largest cluster has threads
    (this machine's CPUs when no dask setup runs). On a failure, what was opened is closed.
    """
    dask = []
    if "dask" in engines:
        specs = clusters if clusters is not None else {"dask": client}
        first_local = True
        try:
            for name, spec in specs.items():
                c, owned, started = _connect_spec(spec, first_local)
                first_local = first_local and not started
                dask.append(Setup(name, "dask", client=c, owned=owned, started=started))
                _fill(dask[-1])
        except BaseException:
            close_setups(dask)
            raise
    out = []
    threads = max((s.threads for s in dask), default=_cluster_threads(client))
    if LOCAL in engines:
        out.append(Setup(LOCAL, "local", threads=threads, gpus=gpu_count()))
    out += dask
    if "spark" in engines:  # last: its session starts with the cores the clusters have
        out.append(open_spark(Setup("spark", "spark"), spark, threads, log))
    return out


def _cluster_threads(client):
    """Cores of the local engine without a dask setup: a Client passed in still sets them."""
    from distributed import Client

    from ..._dask import total_threads

    if isinstance(client, Client):
        return total_threads(client)
    return cpu_count()


def free_stuck_workers(setup, busy) -> str:
    """Leave a cluster usable after a timed-out run whose cancelled tasks still hold threads.

    A running Python task cannot be stopped, so every later run on those workers would wait
    for it (and time out in its turn). The comparison restarts the workers of a cluster it
    started itself; a cluster of the user's is never restarted: its setup is marked so that
    every later run on it is not run (``setup.unavailable``), saying why.

    Parameters
    ----------
    setup : Setup
    busy : dict
        ``{worker address: [task key, ...]}`` still running.

    Returns
    -------
    str, the sentence for the timed-out row: what was done.
    """
    workers = sorted(busy)
    names = ", ".join(workers)
    if setup.started:
        try:
            setup.client.restart_workers(workers)
        except Exception as exc:  # noqa: BLE001 - then it is left busy, and said so
            why = f"restarting them failed ({type(exc).__name__}: {exc})"
        else:
            setup.worker_pids = _worker_info(setup.client)[0]
            return (
                f"its cancelled task(s) still held worker(s) {names}, which were restarted "
                "(this comparison started the cluster), so the later runs start clean"
            )
    else:
        why = "it is your cluster: not restarted"
    setup.unavailable = (
        "not run: the cluster was left busy by a timed-out run (its cancelled task(s) still "
        f"hold worker(s) {names})"
    )
    return (
        f"its cancelled task(s) still hold worker(s) {names} ({why}), so the cluster is left "
        f"busy and the later runs on setup {setup.name!r} are not run. Restart those workers "
        "(client.restart()) or raise timeout="
    )


def close_setups(setups) -> None:
    """Close the clients (and the local clusters) the comparison opened; never the caller's."""
    for s in setups:
        if s.engine == "spark":
            close_spark(s)
        elif s.owned and s.client is not None:
            s.client.close()  # a DasktrainClient also closes the local cluster it started


def versions() -> dict:
    """The versions of Python, dasktrain and the libraries a comparison ran with."""
    out = {"python": platform.python_version(), "dasktrain": __version__}
    for mod in (
        "numpy",
        "pandas",
        "dask",
        "distributed",
        "sklearn",
        "xgboost",
        "dask_ml",
        "torch",
        "psutil",
    ):
        m = sys.modules.get(mod)
        if m is None and mod != "torch":  # torch is only reported when a workload used it
            try:
                m = __import__(mod)
            except ImportError:
                continue
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out
