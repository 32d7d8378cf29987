"""connect(): one way to get a Dask client: from an address, a client, or a new local cluster."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from distributed import Client, Nanny

from . import _config, _malloc
from ._compat import check_not_bootstrapping, cpu_count, gpu_count, import_optional
from ._validation import check_positive_int
from .exceptions import ClusterConnectionError, ValidationError

logger = logging.getLogger(__name__)

__all__ = ["connect", "DasktrainClient", "dashboard_link", "worker_environ", "release_memory"]


class DasktrainClient(Client):
    """A :class:`distributed.Client` that also closes the local cluster ``connect`` started.

    Closing it (or leaving its ``with`` block) closes the client and, when :func:`connect`
    started a local cluster, that cluster too. A remote cluster is never shut down.
    """

    _dasktrain_cluster: Any = None

    if TYPE_CHECKING:  # distributed's Client.__init__ has no annotations

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...

    def close(self, *args: Any, **kwargs: Any) -> Any:
        result = super().close(*args, **kwargs)  # type: ignore[no-untyped-call]
        cluster, self._dasktrain_cluster = self._dasktrain_cluster, None
        if cluster is not None:
            cluster.close()
        return result


def _check_gpu(gpu: object) -> int:
    if gpu not in ("auto", True, False):
        raise ValidationError(f"gpu={gpu!r} must be 'auto', True or False.")
    if gpu is False:
        return 0  # don't probe: nvidia-smi can take seconds to answer
    n = gpu_count()
    if gpu is True and n == 0:
        raise ClusterConnectionError(
            "gpu=True but no NVIDIA GPU is visible (NVML and nvidia-smi found none); "
            "use gpu='auto' or gpu=False on this machine."
        )
    return n


_ADDRESS_FORM = "'tcp://host:port' (e.g. 'tcp://10.0.0.5:8786'), 'tls://host:port' or 'host:port'"


def _check_address(address: str) -> None:
    """Raise a ValidationError naming ``address`` and the expected form when it cannot be one.

    distributed fails on such strings with bare ``ValueError``/``AssertionError`` messages
    ("missing port number in address ''") that do not say what was expected.
    """
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    scheme, loc = parse_address(address)
    problem = None
    if scheme not in backends:
        problem = f"unknown protocol {scheme!r} (known: {', '.join(sorted(backends))})"
    elif scheme != "inproc":
        try:
            host, port = parse_host_port(loc)
        except (ValueError, TypeError) as exc:
            problem = str(exc)
        else:
            if not host or not 0 < port < 65536:
                problem = "the host is empty or the port is not in 1-65535"
    if problem is not None:
        raise ValidationError(
            f"address={address!r} is not a scheduler address: {problem}. Use the form "
            f"{_ADDRESS_FORM}, as printed by `dask scheduler`."
        )


def connect(
    address: str | Client | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | float | None = "auto",
    gpu: str | bool = "auto",
    dashboard_address: str | None = None,
    security: Any = None,
    timeout: str | float | None = None,
) -> Client:
    """Return a Dask client: pass one through, connect to a scheduler, or start a local cluster.

    Parameters
    ----------
    address : None, str or distributed.Client
        ``None`` starts a ``LocalCluster(processes=True)`` sized to this machine (or a
        ``dask_cuda.LocalCUDACluster`` with one worker per GPU, see ``gpu``). A string such as
        ``"tcp://10.0.0.5:8786"`` or ``"tls://..."`` connects to a running scheduler. An existing
        :class:`distributed.Client` is returned unchanged (``connect(c) is c``) and stays the
        caller's to close.
    n_workers, threads_per_worker : int, optional
        Local cluster size. By default one single-threaded worker per CPU, which is what CPU
        deep-learning and the fair local-vs-dask comparison want (one core per process).
    memory_limit : str or int
        Per-worker memory limit of a local cluster (Dask's ``"auto"`` by default).
    gpu : {"auto", True, False}
        ``"auto"`` starts a ``LocalCUDACluster`` when a GPU and dask-cuda are present; ``True``
        requires one; ``False`` never uses it. ``dask_cuda`` is only imported when a GPU is seen.
    dashboard_address : str, optional
        Where the dashboard listens; ``dasktrain.dashboard-address`` (``"127.0.0.1:8787"``) by
        default, loopback only. When the port is taken the dashboard moves to a free port.
    security : distributed.security.Security, optional
        TLS settings for ``tls://`` addresses.
    timeout : str or float, optional
        How long to wait for a remote scheduler (``dasktrain.connect-timeout``, 10 s).

    Returns
    -------
    distributed.Client
        Its ``dashboard_link`` gives the dashboard URL, which is also logged. Used as a context
        manager, it closes only what ``connect`` created: the client, plus the local cluster if
        one was started; a remote cluster keeps running.

    Raises
    ------
    ClusterConnectionError
        When the scheduler cannot be reached within ``timeout`` (the message names the address).
    ValidationError
        For a bad ``gpu`` value or address type.
    UnguardedScriptError
        When a process being started by multiprocessing runs it: a script without
        ``if __name__ == "__main__":`` (each worker would start a cluster of its own).
    """
    if isinstance(address, Client):
        return address
    check_not_bootstrapping("dasktrain.connect()")
    if address is not None:
        timeout = timeout if timeout is not None else _config.get("connect-timeout")
        return _connect_remote(address, security, timeout)
    for value, name in ((n_workers, "n_workers"), (threads_per_worker, "threads_per_worker")):
        if value is not None:
            check_positive_int(value, name)
    try:
        cluster = _start_local(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            n_gpus=_usable_gpus(gpu),
            dashboard_address=dashboard_address or _config.get("dashboard-address"),
            security=security,
        )
    except RuntimeError as exc:  # distributed's "Nanny failed to start.": the cause is above
        raise ClusterConnectionError(
            f"could not start the local cluster's workers ({exc}); each worker process "
            "prints its own error above. If that error is UnguardedScriptError, the script "
            'needs `if __name__ == "__main__":` around its code.'
        ) from exc
    try:
        client = DasktrainClient(cluster, security=security, set_as_default=True)
    except BaseException:
        cluster.close()
        raise
    client._dasktrain_cluster = cluster
    if _config.get("malloc.workers"):
        release_memory(client)
    logger.info(
        "started %s with %d workers; dashboard: %s",
        type(cluster).__name__,
        len(cluster.workers),
        client.dashboard_link,
    )
    return client


def _check_tls(address: str, security: Any) -> None:
    """A ``tls://`` address needs credentials: say so instead of distributed's TypeError."""
    if not address.startswith("tls://") or security is not None:
        return
    from distributed.security import Security

    # Without credentials distributed fails with a TypeError deep in the comm layer.
    if Security().get_connection_args("client").get("ssl_context") is None:
        raise ClusterConnectionError(
            f"{address!r} is a TLS address but no TLS credentials were given. Pass "
            "security=distributed.security.Security(tls_ca_file=..., tls_client_cert=..., "
            "tls_client_key=..., require_encryption=True) or set distributed.comm.tls "
            "in the Dask configuration."
        )


def _connect_remote(address: object, security: Any, timeout: str | float) -> Client:
    """A client of the running scheduler at ``address``."""
    if not isinstance(address, str):
        raise ValidationError(
            f"address={address!r} must be None, a scheduler address string "
            "('tcp://host:8786', 'tls://host:8786') or a distributed.Client."
        )
    _check_address(address)
    _check_tls(address, security)
    try:
        client = DasktrainClient(address, security=security, timeout=timeout, set_as_default=True)
    except (OSError, TimeoutError) as exc:
        raise ClusterConnectionError(
            f"could not reach the Dask scheduler at {address!r} within {timeout} ({exc}). "
            "Check that the scheduler is running and the address/port and TLS settings are "
            "right."
        ) from exc
    logger.info("connected to %s; dashboard: %s", address, client.dashboard_link)
    return client


def _usable_gpus(gpu: object) -> int:
    """GPUs a local cluster will use: 0 when ``gpu="auto"`` finds no dask-cuda."""
    n_gpus = _check_gpu(gpu)
    if n_gpus and gpu == "auto":
        try:
            import_optional("dask_cuda", "gpu")
        except ImportError as exc:
            # "auto" means: use the GPUs when dask-cuda can; a CPU cluster still works.
            logger.warning("%d GPU(s) seen but %s; starting a CPU LocalCluster", n_gpus, exc)
            return 0
    return n_gpus


def _start_local(
    *,
    n_workers: int | None,
    threads_per_worker: int | None,
    memory_limit: str | int | float | None,
    n_gpus: int,
    dashboard_address: str,
    security: Any,
) -> Any:
    """A LocalCUDACluster (one worker per GPU) or a LocalCluster of processes, on loopback."""
    if n_gpus:
        dask_cuda = import_optional("dask_cuda", "gpu")
        with _worker_malloc_env():
            return dask_cuda.LocalCUDACluster(
                host="127.0.0.1",
                dashboard_address=dashboard_address,
                threads_per_worker=threads_per_worker or 1,
                memory_limit=memory_limit,
                security=security,
                scheduler_kwargs=_LIVE_PAGE,
            )
    from distributed import LocalCluster

    if n_workers is None:
        # One single-threaded worker per CPU, or as many of the given width as fit.
        width = threads_per_worker or 1
        n_workers = cpu_count() if width == 1 else max(1, cpu_count() // width)
    with _worker_malloc_env() as tuned:
        return LocalCluster(
            worker_class=_Nanny if tuned else None,
            n_workers=n_workers,
            threads_per_worker=threads_per_worker or 1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            memory_limit=memory_limit,
            security=security,
            scheduler_kwargs=_LIVE_PAGE,
        )


# The schedulers connect() starts have the /dasktrain dashboard page (dasktrain.dashboard).
_LIVE_PAGE = {"preload": ["dasktrain.dashboard"]}


def dashboard_link(client: Client | None = None, *, warn: bool = True) -> str | None:
    """The address of the ``/dasktrain`` dashboard page of ``client``'s scheduler.

    Parameters
    ----------
    client : distributed.Client, optional
        Defaults to the current client.
    warn : bool
        Warn (saying how to enable the page) when there is none.

    Returns
    -------
    str or None
        The page's URL; None when the scheduler has no dashboard or was started without
        dasktrain's preload, with a warning that says how to start it with one (the library
        works the same without it).
    """
    import warnings

    from ._dask import get_client

    client = get_client(client)
    link: str | None = client.dashboard_link if client.run_on_scheduler(_has_live_page) else None
    if not link:
        if not warn:
            return None
        warnings.warn(
            "this scheduler has no dasktrain dashboard page: start it with "
            "`dask scheduler --preload dasktrain.dashboard` (or pass "
            "scheduler_kwargs={'preload': ['dasktrain.dashboard']} to your cluster); "
            "dasktrain.connect() starts local clusters with it.",
            stacklevel=2,
        )
        return None
    return link.rsplit("/", 1)[0] + "/dasktrain"


def _has_live_page(dask_scheduler: Any = None) -> bool:
    """On the scheduler: does it collect dasktrain's events and serve a dashboard?"""
    return "dasktrain-live" in dask_scheduler.plugins and dask_scheduler.http_server is not None


@contextlib.contextmanager
def _worker_malloc_env() -> Iterator[bool]:
    """Start nannies whose workers keep large temporaries in their heap (``dasktrain.malloc``).

    With ``dasktrain.malloc.workers`` (the default) each worker starts with
    :func:`dasktrain._malloc.process_environ` instead of Dask's ``MALLOC_TRIM_THRESHOLD_=65536``,
    which made every buffer above 128 kB an mmap and cost a CNN chunk half its speed in page
    faults; :func:`release_memory` then keeps Dask's memory limits honest. Set to False, the
    Dask configuration decides as usual. The nanny copies its variables into this process's
    ``os.environ`` before it spawns a worker, where later workers and subprocesses would
    inherit them: they are put back as they were afterwards.
    """
    import dask

    env = worker_environ()
    before = {k: os.environ.pop(k, None) for k in env}  # distributed prefers os.environ
    _malloc.remember_own(before)
    try:
        with dask.config.set(
            {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in env.items()}
        ):
            yield bool(env)
    finally:
        for k, v in before.items():
            if v is not None:
                os.environ[k] = v


class _Nanny(Nanny):
    """distributed's Nanny, putting this process's ``MALLOC_*`` back after each spawn.

    The nanny writes its pre-spawn variables into this process's environment whenever it
    starts its worker, its own restarts after a crash included; :func:`dasktrain._malloc.
    put_back` undoes that (later clusters and subprocesses of this process must not inherit
    the thresholds without the release plugin).
    """

    async def instantiate(self) -> Any:
        try:
            return await super().instantiate()
        finally:
            _malloc.put_back(self.pre_spawn_env)


def worker_environ() -> dict[str, str]:
    """The environment variables the workers of :func:`connect` start with.

    ``{"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "1073741824",
    "MALLOC_TRIM_THRESHOLD_": "1073741824"}`` on glibc (the threshold is
    ``dasktrain.malloc.threshold``), ``{}`` elsewhere or with ``dasktrain.malloc.workers``
    False. glibc reads them only when a process starts, so a cluster you start yourself
    needs them in its nannies' ``distributed.nanny.pre-spawn-environ`` (the deploying guide
    shows how), together with :func:`release_memory`: without them a CNN chunk spends about
    half its time in page faults on the worker.

    Returns
    -------
    dict of str to str
    """
    return _malloc.process_environ() if _config.get("malloc.workers") else {}


def release_memory(client: Client) -> None:
    """Have ``client``'s workers hand freed memory back to the system past a mark or when idle.

    Workers started with :func:`worker_environ`'s variables keep freed memory in their heap,
    and Dask's memory limits would count it; this registers
    ``ReleaseMemory`` (a worker plugin calling ``malloc_trim``, see
    ``dasktrain.malloc.release-at`` and ``release-idle``) on every worker, present and
    future. :func:`connect` does it for the clusters it starts; call it once for a cluster
    you started yourself. Harmless on workers started without the variables.

    Parameters
    ----------
    client : distributed.Client
    """
    from ._dask.memory import ReleaseMemory

    client.register_plugin(ReleaseMemory(), name=ReleaseMemory.name)
