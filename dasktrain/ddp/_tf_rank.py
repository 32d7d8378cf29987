"""Entry point of one TensorFlow worker process.

``python -m dasktrain.ddp._tf_rank PAYLOAD RESULT``.

Started by the DDP launcher's worker task (:mod:`dasktrain.ddp._worker`, ``RankSpec.module``)
with the same environment contract (:mod:`dasktrain.ddp._env`), private folder, logs, parent
watch, result file and exit codes as a torch rank (:mod:`dasktrain.ddp._rank_process`, shared
with it). Instead of a torch process group it:

1. meets the other ranks at ``MASTER_ADDR:MASTER_PORT`` (rank 0 listens there, on that one
   address, with the job's key: :mod:`multiprocessing.connection`'s challenge) to learn every
   rank's ``host:port`` for TensorFlow's gRPC server;
2. writes ``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type": "worker",
   "index": RANK}}``) and starts a ``tf.distribute.MultiWorkerMirroredStrategy`` whose
   collectives time out (``CommunicationOptions(timeout_seconds=...)``): a missing peer is
   an error, never a hang (tensorflow#35878, #58434);
3. runs ``train_fn`` inside ``strategy.scope()`` with ``keras.Model.fit`` refused.

TensorFlow's gRPC server listens on every interface (it takes only a port): see the TF guide.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from multiprocessing.connection import Client, Listener

from dasktrain.ddp import _env
from dasktrain.ddp._rank_process import (
    enter_workdir,
    exit_process,
    job_timeout,
    num_threads,
    port_in_use,
    run_payload,
    watch_parent,
)
from dasktrain.ddp._sockets import bind_listener
from dasktrain.ddp._tf_env import ENV_COLLECTIVE_TIMEOUT, ENV_KEY, TF_CONFIG


def _url(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _rendezvous(rank, world_size, timeout):
    """Every rank's ``host:port``, in rank order (rank 0 collects and hands them out).

    Each rank holds the port it found until every rank has reported: two ranks on one host
    never get the same one. TensorFlow binds it again just after (a rare collision with
    another program is a port-in-use failure, retried by the launcher).
    """
    host = os.environ[_env.ENV_HOST]
    with bind_listener(host, 0) as held:
        me = _url(host, held.getsockname()[1])
        if world_size == 1:
            return [me]
        return _exchange(rank, world_size, me, timeout)


def _exchange(rank, world_size, me, timeout):
    master = (os.environ[_env.MASTER_ADDR], int(os.environ[_env.MASTER_PORT]))
    key = bytes.fromhex(os.environ[ENV_KEY])
    if rank == 0:
        workers, conns = {0: me}, []
        with Listener(master, authkey=key) as listener:  # one address: MASTER_ADDR
            while len(workers) < world_size:
                conn = listener.accept()
                peer, address = json.loads(conn.recv_bytes())
                workers[int(peer)] = address
                conns.append(conn)
            answer = json.dumps([workers[i] for i in range(world_size)]).encode()
            for conn in conns:
                conn.send_bytes(answer)
                conn.close()
        return json.loads(answer)
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = Client(master, authkey=key)
            break
        except OSError:  # refused: rank 0 not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:
        conn.send_bytes(json.dumps([rank, me]).encode())
        return json.loads(conn.recv_bytes())


def _strategy(tf, collective_timeout):
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        timeout_seconds=collective_timeout,
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _start(rank, world_size):
    """TF_CONFIG written, the strategy ready; None when a port was taken (MASTER_PORT on
    rank 0, or this rank's TensorFlow port): the launcher then retries with fresh ports."""
    timeout = job_timeout()
    try:
        workers = _rendezvous(rank, world_size, timeout)
    except OSError as exc:
        if rank == 0 and port_in_use(exc):
            sys.stderr.write(f"dasktrain.tf: MASTER_PORT in use: {exc}\n")
            return None
        raise
    os.environ[TF_CONFIG] = json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}
    )
    import tensorflow as tf

    nthreads = num_threads()
    if nthreads > 0:  # the worker's share of the machine, as a torch rank takes
        tf.config.threading.set_intra_op_parallelism_threads(nthreads)
        tf.config.threading.set_inter_op_parallelism_threads(nthreads)
    try:
        return _strategy(tf, float(os.environ.get(ENV_COLLECTIVE_TIMEOUT, "60")))
    except Exception as exc:
        if "could not start grpc server" in str(exc).lower():
            # Its port was taken between the rendezvous and TensorFlow's bind.
            sys.stderr.write(f"dasktrain.tf: the TensorFlow port was taken: {exc}\n")
            return None
        raise


def _scope(rank, world_size):
    """The strategy started; the context ``train_fn`` runs in (None: a port was taken)."""
    strategy = _start(rank, world_size)
    return None if strategy is None else _in_strategy(strategy)


@contextlib.contextmanager
def _in_strategy(strategy):
    from dasktrain.ddp.tf_context import refuse_fit

    with strategy.scope(), refuse_fit(load=True):
        yield


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    watch_parent()
    enter_workdir()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    rank, world_size = int(os.environ[_env.RANK]), int(os.environ[_env.WORLD_SIZE])
    return run_payload(argv[0], argv[1], lambda: _scope(rank, world_size))


if __name__ == "__main__":
    # No interpreter teardown: TensorFlow's collective executor may wait on peers that left.
    exit_process(main)
