"""The resource monitor's own cost: CPU of its sampling thread, in % of one core.

The issue asks for less than 1 % of one core at the default 0.5 s interval. The monitor
measures its own sampling thread with ``time.thread_time()`` (CPU time of that thread alone),
so the number is exact for the sampler and free of the noise of other processes. The tree it
samples is realistic: the benchmark process plus a 2-worker LocalCluster (nannies in-process,
two worker processes, the resource tracker).

Run ``python -m benchmarks.bench_monitor`` for the table (medians of several repeats), or
``asv run --python=same --bench bench_monitor``.
"""

from __future__ import annotations

import statistics
import time

from benchmarks._common import size, start_cluster, stop_cluster

DURATION = size(3.0, 20.0)


def _overhead(interval, uss, client, duration=DURATION):
    from dasktrain.harness.measure.monitor import ResourceMonitor

    with ResourceMonitor(interval=interval, client=client, uss=uss) as mon:
        time.sleep(duration)
    s = mon.summary()
    return s["overhead_percent_of_core"], s["overhead_cpu_s"] / max(1, s["n_samples"]), s


class MonitorOverhead:
    """CPU cost of sampling the driver's process tree (a 2-worker LocalCluster) while idle."""

    params = ([0.5, 0.1], [10, True, False])
    param_names = ["interval", "uss"]
    timeout = 300

    def setup(self, interval, uss):
        self.cluster, self.client = start_cluster(n_workers=2, threads_per_worker=1)

    def teardown(self, interval, uss):
        stop_cluster(self.cluster, self.client)

    def track_overhead_percent_of_core(self, interval, uss):
        return _overhead(interval, uss, self.client)[0]

    track_overhead_percent_of_core.unit = "% of one core"

    def track_cpu_ms_per_sample(self, interval, uss):
        return 1e3 * _overhead(interval, uss, self.client)[1]

    track_cpu_ms_per_sample.unit = "ms"


def main(repeat=3):
    cluster, client = start_cluster(n_workers=2, threads_per_worker=1)
    try:
        _overhead(0.5, 10, client, duration=1.0)  # warm-up: imports, first role lookups
        print(
            f"ResourceMonitor overhead (tree: this process + 2-worker LocalCluster), "
            f"{DURATION:g} s per run, median of {repeat} runs"
        )
        print(
            f"{'interval':>8} {'uss':>5} {'% of one core':>14} {'ms CPU/sample':>14} {'samples':>8}"
        )
        for interval in (0.5, 0.1):
            for uss in (10, True, False):
                pct, per, n = [], [], []
                for _ in range(repeat):
                    p, ms, s = _overhead(interval, uss, client)
                    pct.append(p)
                    per.append(ms * 1e3)
                    n.append(s["n_samples"])
                print(
                    f"{interval:>8g} {str(uss):>5} {statistics.median(pct):>14.3f} "
                    f"{statistics.median(per):>14.3f} {statistics.median(n):>8g}"
                )
    finally:
        stop_cluster(cluster, client)


if __name__ == "__main__":
    main()
