"""The contract between the launcher and a rank process: its environment and its exit codes.

The worker task (:mod:`dasktrain.ddp._worker`) writes this environment with
:func:`rank_environ`; the rank process (:mod:`dasktrain.ddp._rank`) and the helpers inside
``train_fn`` (:func:`dasktrain.ddp.rank_info`) read it. Every name they share is defined here
once, never as a literal elsewhere.

=============================  ==============================================================
variable                       meaning
=============================  ==============================================================
``RANK``, ``WORLD_SIZE``,      torch's own (``torchrun`` sets the same names)
``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``,
``MASTER_PORT``
``OMP_NUM_THREADS``            the worker's thread count
``DASKTRAIN_DDP_NUM_THREADS``  torch threads of the rank (the worker's thread count)
``DASKTRAIN_DDP_TIMEOUT``      seconds: the process-group timeout of the collectives
``DASKTRAIN_DDP_PARENT_PID``   the worker process: the rank leaves when it is gone
``DASKTRAIN_DDP_BACKEND``      ``gloo`` or ``nccl``; its presence marks a launched rank
``DASKTRAIN_DDP_DEVICE``       set by the rank itself once it chose its device
``DASKTRAIN_DDP_METRICS_FILE`` where :func:`~dasktrain.ddp.report` appends JSON lines
``DASKTRAIN_DDP_CHECKPOINT_DIR``  the job's checkpoint folder ("" when off)
``DASKTRAIN_DDP_WORKDIR``      the worker's folder, entered before ``train_fn`` runs
``DASKTRAIN_DDP_SHARDS``       the spool folder of the job's datasets (:mod:`._feeder`)
``DASKTRAIN_DDP_HOST``         the worker's host (the address this rank may listen on)
``KERAS_BACKEND``              ``torch``: a Keras model in a rank is a ``torch.nn.Module``
                               (``env=`` of :func:`~dasktrain.ddp.run` may say otherwise)
``GLOO_SOCKET_IFNAME``         the interface of the worker's address (unless already set)
=============================  ==============================================================
"""

from __future__ import annotations

import logging
import os

from .. import _config, _malloc

logger = logging.getLogger(__name__)

# torch's own names
RANK = "RANK"
WORLD_SIZE = "WORLD_SIZE"
LOCAL_RANK = "LOCAL_RANK"
LOCAL_WORLD_SIZE = "LOCAL_WORLD_SIZE"
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"

ENV_NUM_THREADS = "DASKTRAIN_DDP_NUM_THREADS"
ENV_TIMEOUT = "DASKTRAIN_DDP_TIMEOUT"
ENV_PARENT_PID = "DASKTRAIN_DDP_PARENT_PID"
ENV_BACKEND = "DASKTRAIN_DDP_BACKEND"
ENV_DEVICE = "DASKTRAIN_DDP_DEVICE"
ENV_METRICS_FILE = "DASKTRAIN_DDP_METRICS_FILE"
ENV_CHECKPOINT_DIR = "DASKTRAIN_DDP_CHECKPOINT_DIR"
# The worker's current directory: the rank starts elsewhere (see _supervise.rank_command).
ENV_WORKDIR = "DASKTRAIN_DDP_WORKDIR"
# Where the rank reads its chunks (only for a job with datasets=; see _feeder).
ENV_SHARDS = "DASKTRAIN_DDP_SHARDS"
# The worker's host: the one address a rank listens on (the rendezvous of dasktrain.tf).
ENV_HOST = "DASKTRAIN_DDP_HOST"
KERAS_BACKEND = "KERAS_BACKEND"

# Exit codes of a rank process besides 0 (success) and 1 (train_fn or the setup raised).
EXIT_PORT_IN_USE = 75  # rank 0 could not bind MASTER_PORT: the launcher retries a new port
EXIT_ORPHANED = 76  # the parent worker died

# argv[1] of a pooled rank process (RankPool): it reads its jobs from stdin, one JSON per line.
POOL_FLAG = "--pool"


def worker_environ(environ):
    """The environment a rank process starts from: the worker's, with dasktrain's allocator.

    A Dask nanny gives its worker ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``), which makes glibc map and unmap every buffer
    above 128 kB: torch's activations were faulted in again on every step, about 25% of the
    training speed against the same loop in a plain process (resnet18 on 64x64 images, 1
    thread: 66 vs 85 samples/s). A rank gets :func:`dasktrain._malloc.process_environ` instead
    (``dasktrain.malloc.workers``; False: the worker's variables without the trim setting).
    A rank frees nothing it will not allocate again at the next step, so it needs no
    release. The thread-count variables the nanny sets are kept (the rank sets
    ``OMP_NUM_THREADS`` itself); ``env=`` of :func:`~dasktrain.ddp.run` still wins.
    """
    env = dict(environ)
    for name in _malloc.ENV_NAMES:
        env.pop(name, None)
    if _config.get("malloc.workers"):
        env.update(_malloc.process_environ())
    return env


def rank_environ(spec, *, environ, nthreads, metrics_file, host):
    """The full environment of the rank process of ``spec`` on this worker.

    Parameters
    ----------
    spec : RankSpec
    environ : mapping
        The worker's environment.
    nthreads : int
        The worker's thread count.
    metrics_file : str
    host : str
        The worker's host (for ``GLOO_SOCKET_IFNAME``).
    """
    env = worker_environ(environ)
    # A worker may run Keras on TensorFlow (KerasFeatures); a rank trains torch modules.
    env[KERAS_BACKEND] = "torch"
    env.update(spec.env)
    env.update(
        {
            RANK: str(spec.rank),
            WORLD_SIZE: str(spec.world_size),
            LOCAL_RANK: str(spec.local_rank),
            LOCAL_WORLD_SIZE: str(spec.local_world_size),
            MASTER_ADDR: spec.master_addr,
            MASTER_PORT: str(spec.master_port),
            "OMP_NUM_THREADS": str(nthreads),
            ENV_NUM_THREADS: str(nthreads),
            ENV_TIMEOUT: str(spec.timeout),
            ENV_PARENT_PID: str(os.getpid()),
            ENV_BACKEND: spec.backend,
            ENV_METRICS_FILE: metrics_file,
            ENV_CHECKPOINT_DIR: spec.checkpoint_dir or "",
            ENV_WORKDIR: os.getcwd(),
            ENV_HOST: host,
        }
    )
    env.update(network_environ(host, env))
    return env


def network_environ(host, env):
    """``GLOO_SOCKET_IFNAME`` for a rank on the worker at ``host``.

    gloo picks its address from the host name, which often resolves to a loopback address
    (Debian and Ubuntu map it to 127.0.1.1): peers on other hosts then get told to connect to
    127.0.0.1 and the full-mesh connect fails. The worker's own address is the one the other
    hosts reach, so its interface is the one to use. A value already in ``env`` (the worker's
    environment or ``env=`` of :func:`~dasktrain.ddp.run`) wins. NCCL picks its interface by
    its own rules, not from the host name; it is not changed here (``NCCL_SOCKET_IFNAME``
    through ``env=``).
    """
    from ._sockets import interface_of

    if "GLOO_SOCKET_IFNAME" in env:
        return {}
    ifname = interface_of(host)
    if ifname is None:
        logger.warning(
            "ddp: no network interface of this machine carries the worker address "
            "%s; gloo will pick one from the host name. Set GLOO_SOCKET_IFNAME "
            "(env=) if the ranks cannot connect.",
            host,
        )
        return {}
    return {"GLOO_SOCKET_IFNAME": ifname}


def launched() -> bool:
    """True inside a rank process that :func:`~dasktrain.ddp.run` started."""
    return RANK in os.environ and ENV_BACKEND in os.environ
