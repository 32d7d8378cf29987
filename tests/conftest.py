"""Shared fixtures: one real LocalCluster for the session (processes, 2 workers x 1 thread)."""

from __future__ import annotations

import os

import pytest

# Keep BLAS/torch from oversubscribing the 2 cores the tests share with the cluster.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
