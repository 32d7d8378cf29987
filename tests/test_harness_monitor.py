"""ResourceMonitor against the real session LocalCluster (processes, 2 workers x 1 thread)."""

from __future__ import annotations

import math
import os
import time

import pytest

from dasktrain.exceptions import ValidationError
from dasktrain.harness.measure.monitor import ResourceMonitor, infer_role, read_rapl


def _spin(seconds):
    t0 = time.perf_counter()
    x = 0
    while time.perf_counter() - t0 < seconds:
        x += 1
    return x


def _worker_pids(client):
    return client.run(os.getpid)


def test_monitor_sees_the_local_cluster_workers(client):
    pids = _worker_pids(client)
    with ResourceMonitor(interval=0.1, client=client) as mon:
        t0 = time.time()
        client.gather(client.map(_spin, [1.0, 1.0], pure=False))
        t1 = time.time()
    df = mon.samples
    workers = df[df.role == "worker"]
    # Exactly the cluster's worker processes, named by their addresses.
    assert set(workers.pid) == set(pids.values())
    assert set(workers.process) == set(pids)
    assert (df.role == "driver").any() and (df.role == "system").any()
    # The samples span the run: one at its start and one at its end.
    assert mon.start_time <= t0 and mon.end_time >= t1
    assert df.time.min() <= t0 + 0.3 and df.time.max() >= t1  # slack: a loaded machine
    assert mon.duration == pytest.approx(mon.end_time - mon.start_time)
    assert df.elapsed.max() == pytest.approx(df.time.max() - mon.start_time)
    # Both workers were seen busy while they spun (the shared 2-core machine is noisy, so
    # the bound is loose: an idle worker reads ~0-5 %).
    busiest = workers.groupby("process").cpu_percent.max()
    assert (busiest > 25).all(), busiest
    s = mon.summary()
    assert s["n_workers"] == 2
    assert s["n_samples"] >= 8
    assert s["cpu_percent_max"] > 50
    assert s["peak_rss_bytes"] >= workers.rss.max()
    assert s["duration_s"] >= t1 - t0


def test_roles_inferred_without_a_client(client):
    """Without the scheduler's pid list, the multiprocessing children of the driver are workers."""
    pids = set(_worker_pids(client).values())
    with ResourceMonitor(interval=0.05) as mon:
        time.sleep(0.2)
    df = mon.samples
    assert pids <= set(df.loc[df.role == "worker", "pid"])
    assert set(df.loc[df.role == "driver", "pid"]) == {os.getpid()}


def test_worker_monitor_histories(client):
    """worker_monitors=True collects each worker's own SystemMonitor (as for a remote cluster)."""
    with ResourceMonitor(interval=0.1, client=client, worker_monitors=True) as mon:
        client.gather(client.map(_spin, [0.8, 0.8], pure=False))
    df = mon.samples
    remote = df[df.source == "dask"]
    assert set(remote.process) == set(_worker_pids(client))
    assert remote.rss.gt(0).all()
    assert remote.time.between(mon.start_time - 1, mon.end_time + 1).all()
    # Local workers are measured once (psutil), not double-counted with their monitors.
    assert mon.summary()["n_workers"] == 2


def test_a_run_shorter_than_the_worker_monitor_interval_hears_from_every_worker(client):
    # A worker's SystemMonitor samples every 0.5 s on its own clock; a short run (a KMeans fit
    # whose passes skip the scheduler) could end before some worker sampled, and that worker
    # then vanished from the run's samples (seen as a flaky multi-host test in CI).
    for _ in range(3):
        with ResourceMonitor(interval=0.05, client=client, worker_monitors=True) as mon:
            pass
        remote = mon.samples[lambda d: d.source == "dask"]
        assert set(remote.process) == set(_worker_pids(client))
        assert remote.time.between(mon.start_time, mon.end_time + 1).all()


def test_summary_can_leave_the_idle_cluster_out(client):
    # The local engine is charged for the driver's tree only (the review found its peak
    # memory and CPU inflated by the idle workers of the cluster beside it).
    with ResourceMonitor(interval=0.05, client=client) as mon:
        time.sleep(0.3)
    df = mon.samples
    everything = mon.summary()
    local_only = mon.summary(exclude_roles=("worker", "nanny", "scheduler"))
    driver_peak = df[df.role == "driver"].groupby("time").rss.sum().max()
    assert local_only["peak_rss_bytes"] >= driver_peak
    worker_rss = df[df.role == "worker"].groupby("time").rss.sum().min()
    assert local_only["peak_rss_bytes"] <= everything["peak_rss_bytes"] - worker_rss + 1


def test_energy_is_measured_or_flagged():
    with ResourceMonitor(interval=0.05) as mon:
        _spin(0.1)
    s = mon.summary()
    if read_rapl():
        assert s["energy_measured"] and s["cpu_energy_j"] >= 0
    else:
        assert not s["energy_measured"]
        assert math.isnan(s["cpu_energy_j"]) and math.isnan(s["energy_j"])
        assert "not measured" in s["energy_note"]


def test_summary_and_overhead_fields():
    with ResourceMonitor(interval=0.05, uss=False) as mon:
        time.sleep(0.3)
    s = mon.summary()
    assert math.isnan(s["peak_uss_bytes"])
    assert 0 <= s["overhead_cpu_s"] < s["duration_s"]
    assert s["overhead_percent_of_core"] == pytest.approx(
        100 * s["overhead_cpu_s"] / s["duration_s"]
    )
    assert list(mon.samples.columns)[:3] == ["time", "elapsed", "source"]


@pytest.mark.parametrize(
    "cmd, kw, role",
    [
        (["python", "x.py"], {"pid": 1, "root_pid": 1}, "driver"),
        (["python", "-m", "distributed.cli.dask_scheduler"], {}, "scheduler"),
        (["dask", "scheduler", "--port", "8786"], {}, "scheduler"),
        (["dask", "worker", "tcp://h:8786"], {}, "nanny"),
        (["dask", "worker", "tcp://h:8786", "--no-nanny"], {}, "worker"),
        (
            ["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"],
            {"parent_role": "driver"},
            "worker",
        ),
        (
            ["python", "-c", "from multiprocessing.resource_tracker import main;main(5)"],
            {"parent_role": "driver"},
            "other",
        ),
        (["python", "-m", "dasktrain.ddp._rank"], {"parent_role": "worker"}, "worker"),
        (["bash"], {"pid": 7, "worker_pids": {7: "tcp://a"}}, "worker"),
        (["vim"], {}, "other"),
    ],
)
def test_infer_role(cmd, kw, role):
    assert infer_role(cmd, **kw) == role


@pytest.mark.parametrize("interval", [0, -1, "fast"])
def test_bad_interval(interval):
    with pytest.raises(ValidationError, match="interval"):
        ResourceMonitor(interval=interval).start()


def test_uss_every_nth_sample():
    with ResourceMonitor(interval=0.02, uss=3) as mon:
        time.sleep(0.3)
    driver = mon.samples.query("role == 'driver'").reset_index(drop=True)
    has = driver.uss.notna()
    assert has.iloc[0] and has.sum() >= 2 and not has.all()
    assert (driver.uss[has] > 0).all() and (driver.uss[has] <= driver.rss[has]).all()
    with pytest.raises(ValidationError, match="uss"):
        ResourceMonitor(uss=-2).start()


def test_other_programs_cpu_is_measured_apart_from_the_run(cpu_burner):
    # A program outside this process tree (reparented to init, as another user's job would
    # be) spins one core while the run sleeps: the machine was busy, the run was not, and the
    # summary says so (timings taken beside it are pessimistic).
    with ResourceMonitor(interval=0.1) as mon:
        time.sleep(1.5)
    s = mon.summary()
    assert cpu_burner not in set(mon.samples.pid)  # not part of the run's tree
    assert s["others_cpu_percent_mean"] >= 50, s  # about one core (100) spent elsewhere
    assert s["cpu_percent_mean"] < 50, s  # the run itself slept
