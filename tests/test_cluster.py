"""connect(): pass-through, real scheduler processes, local clusters, TLS, dashboard fallback."""

from __future__ import annotations

import operator
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest
from distributed import Client

import dasktrain
from dasktrain.exceptions import ClusterConnectionError, OptionalDependencyError, ValidationError


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_existing_client_passes_through(client):
    assert dasktrain.connect(client) is client


def test_import_is_light():
    code = (
        "import sys, dasktrain; "
        "heavy = [m for m in ('torch', 'tensorflow', 'dask_cuda', 'xgboost', 'distributed') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_local_cluster_is_loopback_and_closed_on_exit():
    with dasktrain.connect(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as c:
        cluster = c._dasktrain_cluster
        assert len(cluster.workers) == 2
        info = c.scheduler_info()
        assert {w["nthreads"] for w in info["workers"].values()} == {1}
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in info["workers"])
        assert urlparse(c.dashboard_link).hostname == "127.0.0.1"
        assert c.submit(operator.add, 1, 1).result() == 2
        assert "dask_cuda" not in sys.modules  # no GPU here: never imported
    assert cluster.status.name == "closed"


def test_dashboard_port_taken_moves_to_free_port():
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        with pytest.warns(UserWarning, match="already in use"):
            c = dasktrain.connect(n_workers=1, dashboard_address=f"127.0.0.1:{taken}")
        with c:
            link = urlparse(c.dashboard_link)
            assert link.hostname == "127.0.0.1"
            assert link.port not in (None, taken)


@pytest.fixture
def scheduler_process(tmp_path):
    """A separately started `dask scheduler` and `dask worker`, as on a real cluster."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    common = dict(stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "w"))
    sched = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dask",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        **common,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dask",
            "worker",
            address,
            "--nthreads",
            "1",
            "--nworkers",
            "1",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--memory-limit",
            "2GiB",
        ],
        **common,
    )
    try:
        yield address, sched
    finally:
        for proc in (worker, sched):
            proc.terminate()
        for proc in (worker, sched):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_connect_to_address_of_separate_scheduler(scheduler_process):
    address, sched = scheduler_process
    deadline = time.monotonic() + 30
    while True:  # the scheduler process needs a moment to listen
        try:
            c = dasktrain.connect(address, timeout="2s")
            break
        except ClusterConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with c:
        c.wait_for_workers(1, timeout=30)
        assert c.submit(operator.add, 41, 1).result() == 42
        assert c.scheduler.address == address
    # Leaving the block closed our client only: the remote scheduler keeps running.
    assert sched.poll() is None
    with Client(address, timeout="5s") as again:
        assert again.submit(operator.add, 1, 1).result() == 2


def test_unreachable_scheduler_fails_fast_naming_address():
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ClusterConnectionError, match=address.replace(".", r"\.")):
        dasktrain.connect(address, timeout="2s")
    assert time.monotonic() - t0 < 20


def test_tls_cluster_with_security():
    from distributed import LocalCluster
    from distributed.security import Security

    sec = Security.temporary()
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        security=sec,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        with dasktrain.connect(cluster.scheduler_address, security=sec) as c:
            assert c.submit(operator.add, 2, 1).result() == 3
        with pytest.raises(ClusterConnectionError, match="no TLS credentials"):
            dasktrain.connect(cluster.scheduler_address, timeout="2s")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"gpu": "yes"}, ValidationError, "gpu='yes'"),
        ({"gpu": True}, ClusterConnectionError, "no NVIDIA GPU"),
    ],
)
def test_bad_arguments(kwargs, exc, match, has_gpu):
    if has_gpu and kwargs.get("gpu") is True:
        pytest.skip("a GPU is present")
    with pytest.raises(exc, match=match):
        dasktrain.connect(**kwargs)


@pytest.mark.parametrize("kwargs", [{"threads_per_worker": 0}, {"n_workers": 0}])
def test_bad_cluster_sizes(kwargs):
    # Regression: threads_per_worker=0 raised ZeroDivisionError.
    with pytest.raises(ValidationError, match=list(kwargs)[0]):
        dasktrain.connect(**kwargs)


def test_bad_address_type():
    with pytest.raises(ValidationError, match="address=8786"):
        dasktrain.connect(8786)


@pytest.mark.parametrize(
    "address, why",
    [
        ("notaurl", "missing port number"),
        ("tcp://", "missing port number"),
        ("tcp://127.0.0.1:notaport", "notaport"),
        ("localhost:8786x", "8786x"),  # distributed raised a bare AssertionError
        ("tcp://:8786", "host is empty"),
        ("tcp://127.0.0.1:0", "port is not in 1-65535"),
        ("spark://host:7077", "unknown protocol 'spark'"),
    ],
)
def test_malformed_address_names_it_and_the_expected_form(address, why):
    # Regression: connect("notaurl") raised a raw ValueError from distributed.
    t0 = time.perf_counter()
    with pytest.raises(ValidationError) as info:
        dasktrain.connect(address, timeout=2)
    msg = str(info.value)
    assert f"address={address!r}" in msg and why in msg and "tcp://host:port" in msg
    assert time.perf_counter() - t0 < 5  # refused before any connection attempt


def test_missing_optional_dependency_names_extra():
    from dasktrain._compat import import_optional

    with pytest.raises(ImportError, match=r"pip install 'dasktrain\[gpu\]'") as info:
        import_optional("dask_cuda_not_installed_anywhere", "gpu")
    assert isinstance(info.value, OptionalDependencyError)


@pytest.mark.gpu
def test_gpu_auto_starts_cuda_cluster():
    with dasktrain.connect(gpu="auto", dashboard_address="127.0.0.1:0") as c:
        assert type(c._dasktrain_cluster).__name__ == "LocalCUDACluster"
        assert len(c.scheduler_info()["workers"]) == dasktrain._compat.gpu_count()


UNGUARDED_CONNECT = """
import dasktrain

client = dasktrain.connect(n_workers=1, gpu=False, dashboard_address="127.0.0.1:0")
print("connected")
client.close()
"""


def test_a_script_without_a_main_guard_fails_at_once_naming_the_fix(tmp_path, run_script):
    # Regression: each spawned worker ran the script again and started a cluster of its own;
    # the script hung with no message (10 minutes seen).
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_CONNECT)
    rc, out, took = run_script(script, timeout=120)
    assert rc is not None, f"the script hung:\n{out[-2000:]}"
    assert rc != 0 and "connected" not in out
    assert "UnguardedScriptError" in out and str(script) in out
    assert 'if __name__ == "__main__":' in out and "ClusterConnectionError" in out
    assert took < 60, took


def test_the_same_script_with_a_main_guard_runs(tmp_path, run_script):
    script = tmp_path / "guarded.py"
    body = "\n".join("    " + line for line in UNGUARDED_CONNECT.strip().splitlines())
    script.write_text(f'if __name__ == "__main__":\n{body}\n')
    rc, out, _ = run_script(script, timeout=120)
    assert rc == 0 and "connected" in out and "UnguardedScriptError" not in out, out[-2000:]
