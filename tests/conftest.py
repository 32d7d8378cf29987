"""Shared fixtures: one real LocalCluster for the session (processes, 2 workers x 1 thread)."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest

# Keep BLAS/torch from oversubscribing the 2 cores the tests share with the cluster.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# compare() refuses a busy machine by default (after waiting up to a minute): the suite runs
# beside other programs (another suite, a benchmark) and tests the refusal on purpose only
# (tests/test_harness_machine.py passes allow_busy=False). The scripts the tests start read them
# from the environment.
os.environ.setdefault("DASK_DASKTRAIN__COMPARE__ALLOW_BUSY", "True")
os.environ.setdefault("DASK_DASKTRAIN__COMPARE__QUIET_WAIT", "0")


def _compare_settings_from_environ():
    """A pytest plugin may have imported dask before this file: this process reads the two
    settings now (dask reads the environment once, at import)."""
    import dask.config

    env = os.environ
    dask.config.set(
        {
            "dasktrain.compare.allow-busy": env["DASK_DASKTRAIN__COMPARE__ALLOW_BUSY"] == "True",
            "dasktrain.compare.quiet-wait": env["DASK_DASKTRAIN__COMPARE__QUIET_WAIT"],
        }
    )


_compare_settings_from_environ()


def _local_cluster():
    """A real LocalCluster: processes, 2 workers, 1 thread each, dashboard on a free port."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit="4GiB",
    )


@pytest.fixture(scope="session")
def cluster():
    """The session's LocalCluster (see ``_local_cluster``)."""
    with _local_cluster() as cluster:
        yield cluster


@pytest.fixture
def own_client():
    """A client on a fresh LocalCluster of its own, for tests that kill or restart workers."""
    from distributed import Client

    with _local_cluster() as cluster, Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="session")
def client(cluster):
    """A client on the session cluster. Tests must not kill or restart its workers."""
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
def as_default(client):
    """Make the session client the default one (for code that resolves get_client())."""
    with client.as_current():
        yield client


def _run_script(path, timeout):
    """Run a script file with this interpreter and this checkout on its path, in a process
    group of its own: ``(returncode, output, seconds)``; returncode None when it ran past
    ``timeout`` (the whole group is killed then, so a hang fails the test, never the run)."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        cwd=str(Path(path).parent),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    else:
        try:  # what the script left behind (worker processes of a hung start)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return rc, out, time.monotonic() - t0


@pytest.fixture
def run_script():
    """``run_script(path, timeout) -> (returncode, output, seconds)`` (see ``_run_script``)."""
    return _run_script


@pytest.fixture(scope="session")
def has_gpu():
    from dasktrain._compat import has_gpu

    return has_gpu()


def pytest_collection_modifyitems(config, items):
    from dasktrain._compat import has_gpu

    if has_gpu():
        return
    skip = pytest.mark.skip(reason="no NVIDIA GPU on this machine (GPU paths run on a lent GPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _listening(pids):
    """``{(pid, ip, port)}`` of the TCP sockets listening in the processes ``pids`` now."""
    import psutil

    out = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            # net_connections: psutil >= 6; connections: the same before (minimum 5.9.4)
            listed = getattr(proc, "net_connections", None) or proc.connections
            conns = listed(kind="inet")
        except psutil.Error:
            continue
        out |= {(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


@contextlib.contextmanager
def _sampling(pids):
    """Yield a set that holds every socket listening in ``pids`` (a list, or a function
    returning one) at any moment of the block, sampled every 5 ms."""
    seen, stop = set(), threading.Event()

    def sample():
        while not stop.is_set():
            seen.update(_listening(pids() if callable(pids) else pids))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        stop.set()
        sampler.join()


@pytest.fixture
def listening_sockets():
    """``(listening, sampling)``: the TCP sockets listening in some processes now
    (``listening(pids)``), or at any moment of a block (``with sampling(pids) as seen:``)."""
    return _listening, _sampling


@pytest.fixture
def cpu_burner(tmp_path):
    """Start a program outside this process tree (reparented to init, as another user's job
    would be) that spins one core for at most 120 s; yields its pid, killed afterwards."""
    import signal
    import subprocess
    import sys

    pidfile = tmp_path / "burner.pid"
    spin = "import time\nt=time.time()\nwhile time.time()-t<120: pass"
    subprocess.run(
        ["sh", "-c", f'{sys.executable} -c "{spin}" >/dev/null 2>&1 & echo $! > {pidfile}'],
        check=True,
    )
    pid = int(pidfile.read_text())
    time.sleep(0.3)  # spinning before the test looks
    try:
        yield pid
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
