"""One comparison while it runs: the setups, the runs in their order, the records kept.

:func:`~dasktrain.harness.compare` checks the options and opens the setups; a
:class:`Comparison` then does the measuring: it prepares the inputs of each data size, warms up,
runs the timed repeats interleaved over the setups (A B C A B C, so that drift on the machine
hits every setup alike; :func:`~dasktrain.harness.run.timing.run_once` times each), keeps each
record as it finishes (in ``out/runs.jsonl`` too), and builds the :class:`Results`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..._compat import cpu_count, gpu_count
from ..._dask.events import recording
from ..measure.breakdown import performance_report, span_metrics
from ..measure.records import RunRecord
from ..report.output import RunLog
from ..report.shown import Results
from ..settings import RunContext, using
from ..workloads.inputs import Inputs
from .live import LiveGrid, kept_events
from .progress import Progress
from .setups import versions

if TYPE_CHECKING:
    from ..measure.machine import MachineWatch
    from ..workloads.builtin import Workload
    from .plan import Plan
    from .setups import Setup
from .timing import limited, run_once

__all__ = ["Comparison"]


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------------------------
# One comparison
# --------------------------------------------------------------------------------------------
class Comparison:
    """The state of one comparison while it runs: its setups, the records kept."""

    def __init__(
        self,
        specs: list[Workload],
        setups: list[Setup],
        plan: Plan,
        comparison: str,
        *,
        watch: MachineWatch,
        machine: dict[str, Any],
        terminal: TextIO | None = None,
    ) -> None:
        self.specs, self.setups, self.plan, self.id = specs, setups, plan, comparison
        self.watch, self.machine = watch, machine
        self.ctx = {
            s.name: RunContext(
                n_threads=s.threads, seed=plan.seed, options=plan.options, setup=s.name
            )
            for s in setups
        }
        self.log = RunLog(plan.out, comparison) if plan.out is not None else None
        self.records: list[dict[str, Any]] = []  # RunRecord.as_row() of every run
        self.sample_frames: list[Any] = []  # pandas DataFrames
        self.events: list[Any] = []
        # (workload, setup) -> the record of a run that cannot succeed later
        self.dead: dict[tuple[str, str], RunRecord] = {}
        self.run_id = 0
        n = len(specs) * len(setups)
        total = n * len(plan.size_list) * plan.repeat + (n if plan.warmup else 0)
        self.progress = Progress(plan.progress, total, file=terminal)
        self.live = LiveGrid(comparison, setups)  # the dashboard page's view
        self.setup = self._setup()
        if self.log is not None:
            self.log.write_setup(self.setup)

    def close(self) -> None:
        self.progress.close()
        if self.log is not None:
            self.log.close()

    @property
    def known(self):
        """Every cluster's workers by pid (afresh: a worker restarted after a timeout is new)."""
        return {p: a for s in self.setups for a, p in s.worker_pids.items() if p > 0}

    @property
    def local_threads(self):
        return next((s.threads for s in self.setups if s.engine == "local"), cpu_count())

    def _setup(self):
        p = self.plan
        dask = [s for s in self.setups if s.engine == "dask"]
        first = dask[0].client if dask else None
        return {
            "engines": list(p.engines),
            "setups": {s.name: s.describe() for s in self.setups},
            "workers": max((s.workers for s in dask), default=0),
            "threads": self.local_threads,
            "local_threads": self.local_threads,
            "gpus": gpu_count(),
            "devices": {s.name: s.devices for s in self.setups},
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "cpu_count": cpu_count(),
            "scheduler": first.scheduler.address if first is not None else None,
            "dashboard": first.dashboard_link if first is not None else None,
            "repeat": p.repeat,
            "warmup": bool(p.warmup),
            "sizes": p.sizes,
            "seed": p.seed,
            "options": p.options.given(),
            "timeout": p.timeout,
            "comparison": self.id,
            "runs_log": str(self.log.path) if self.log is not None else None,
            "started": _now(),
            "machine": self.machine,
        }

    # -- keeping what ran ------------------------------------------------------------------
    def _keep(self, rec: RunRecord, setup, size, repeat):
        rec.size, rec.repeat, rec.threads = size, repeat, setup.threads
        rec.devices = setup.devices
        rec.workers = setup.workers if setup.engine == "dask" else 0
        row = rec.as_row()
        self.records.append(row)
        if self.log is not None:
            self.log.write(row)  # at once: an interrupted comparison keeps its rows

    def _run(self, spec, inputs, setup, size, *, monitor, label):
        p, live = self.plan, self.live
        live.cell(spec, setup, size, label, state="running")
        rec, samples = run_once(
            *(spec, inputs, setup, self.ctx[setup.name]),
            interval=p.interval,
            monitor=monitor,
            timeout=p.timeout,
            size=size,
            known=self.known,
            label=label,
            machine=self.watch,
        )
        live.cell(spec, setup, size, label, state="done", seconds=rec.time, status=rec.status)
        return rec, samples

    # -- the steps -------------------------------------------------------------------------
    def _warm_up(self, spec, inputs, size):
        """One untimed run per setup (imports, JIT, worker caches); failures are remembered."""
        for s in self.setups:
            if (spec.name, s.name) in self.dead:
                continue
            rec, _ = self._run(spec, inputs, s, size, monitor=False, label="warm-up")
            self.progress.emit("warmup", rec, 0, size)
            if rec.status != "ok":
                self.dead[(spec.name, s.name)] = rec

    def _timed(self, spec, inputs, setup, size, rep):
        with recording() as seen:
            rec, samples = self._run(
                spec, inputs, setup, size, monitor=self.plan.monitor, label=f"run-{rep}"
            )
        self.run_id += 1
        rec.run = self.run_id
        self.events += kept_events(seen, self.run_id, spec.name, setup.name)
        self._keep(rec, setup, size, rep)
        if samples is not None and len(samples):
            self.sample_frames.append(
                samples.assign(
                    run=self.run_id,
                    workload=spec.name,
                    engine=setup.engine,
                    setup=setup.name,
                    size=size,
                    repeat=rep,
                )
            )
        self.progress.emit("run", rec, rep, size)
        return rec

    def _workload(self, spec, inputs, size, first):
        """Warm-up (at the first size), then the timed repeats interleaved over the setups."""
        # Data preparation (decoding, CNN features, splits) is not part of any timed run:
        # every setup starts from the same prepared inputs.
        with using(self.ctx[self.setups[0].name]), limited("local", self.local_threads):
            inputs.prepare(spec.needs)
        if self.plan.warmup and first:
            self._warm_up(spec, inputs, size)
        for rep in range(1, self.plan.repeat + 1):
            for s in self.setups:
                if (spec.name, s.name) in self.dead:
                    self.progress.skip()
                    continue
                rec = self._timed(spec, inputs, s, size, rep)
                if rec.status in ("unavailable", "timeout"):
                    # A timed-out run may still be busy: no more runs of it, at any size.
                    self.dead[(spec.name, s.name)] = rec
        self._keep_dead(spec, size)
        self.live.verdict(spec, self.records, self.setup, self.plan.cost)

    def _keep_dead(self, spec, size):
        """A setup that cannot run this workload keeps a row at every size, saying why."""
        for s in self.setups:
            rec = self.dead.get((spec.name, s.name))
            # A failed timed run is its own row at its size; a failed warm-up (never kept)
            # stands for its setup's row at every size.
            if rec is None or (not math.isnan(rec.run) and rec.size == size):
                continue
            copy = dataclasses.replace(rec, metrics={}, run=math.nan)
            if not math.isnan(rec.run):
                copy.note = None
                copy.add_note(f"not run at this size: {rec.status} at size {rec.size}")
            self._keep(copy, s, size, 0)

    def _data(self, data, tmp):
        """The user's data, or the built-in data set built in ``tmp``."""
        if data is not None:
            return data
        from ...datasets import make_xray_like

        return make_xray_like(
            tmp / "data",
            n_per_class=self.plan.n_per_class,
            size=self.plan.options.image_size,
            seed=self.plan.seed,
        )

    @contextlib.contextmanager
    def _performance_report(self, tmp):
        """Dask's performance report over the runs, as HTML in ``box["html"]`` afterwards; of
        the dask setup with the most workers."""
        dask = [s for s in self.setups if s.engine == "dask"]
        s = max(dask, key=lambda s: s.workers) if dask and self.plan.performance_report else None
        with performance_report(s.client if s is not None else None, tmp) as box:
            yield box

    def _fine_metrics(self):
        """Add the spans' CPU and waiting seconds to the records (read once, at the end)."""
        for s in self.setups:
            if s.engine != "dask":
                continue
            ids = [r["span_id"] for r in self.records if r.get("setup") == s.name]
            metrics = span_metrics(s.client, ids)
            for row in self.records:
                row.update(metrics.get(row.get("span_id"), {}))

    def run(self, data) -> Results:
        """Run every workload at every size on every setup; return the :class:`Results`."""
        import pandas as pd

        p = self.plan
        self.progress.start(self.setups)
        self.live.start(self.specs, self.setups, p)
        with tempfile.TemporaryDirectory(prefix="dasktrain-compare-") as folder:
            tmp = Path(folder)
            data = self._data(data, tmp)
            with self._performance_report(tmp) as perf:
                for i, size in enumerate(p.size_list):
                    inputs = Inputs(
                        data,
                        size=size,
                        workdir=tmp,
                        seed=p.seed,
                        options=p.options,
                        n_threads=self.local_threads,
                    )
                    for spec in self.specs:
                        self._workload(spec, inputs, size, first=(i == 0))
        self.live.end()
        self._fine_metrics()
        self.setup.update(finished=_now(), versions=versions())
        frames = self.sample_frames
        samples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return Results(
            self.records,
            samples=samples,
            setup=self.setup,
            performance_report=perf["html"],
            events=self.events,
            settings=p.cost,
        )
