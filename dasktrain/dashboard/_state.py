"""What the ``/dasktrain`` page shows, kept on the scheduler from the events as they arrive.

:class:`LiveState` is a scheduler plugin: ``log_event`` is called by the scheduler for every
event any client or worker logs, so the state is up to date the moment an event lands and
nothing is asked of the workers. It keeps bounded stores (the latest comparison, the last DDP
jobs, the last fits, a minute of feature chunks) and a ``version`` that grows with every
change, so the page redraws only when something happened.
"""

from __future__ import annotations

import collections
import time

from distributed.diagnostics.plugin import SchedulerPlugin

from .._dask.events import DDP_TOPIC_PREFIX, TOPIC

__all__ = ["LiveState", "PLUGIN_NAME"]

#: The name the plugin is registered under (``scheduler.plugins[PLUGIN_NAME]``).
PLUGIN_NAME = "dasktrain-live"

_JOBS, _FITS, _POINTS, _FEATURES_S, _ERRORS = 5, 20, 2000, 60.0, 50


class LiveState(SchedulerPlugin):
    """The dasktrain events seen by this scheduler, ready to draw.

    Attributes
    ----------
    comparison : dict
        The latest comparison: ``id``, ``cells`` (``(workload, setup, size, repeat)`` ->
        ``{"state", "seconds", "status"}``, in grid order), ``verdicts`` (workload ->
        ``{"outcome", "verdict"}``), ``state``.
    jobs : OrderedDict
        DDP job id -> ``{"attempt", "state", "ranks": {rank: {...}}, "errors": [...]}``.
    fits : OrderedDict
        Fit id -> ``{"estimator", "metric", "path", "points": [(iteration, value, ms, path)]}``
        (a KMeans pass goes through the scheduler when its direct group broke).
    features : deque
        ``(time, worker, images, seconds)`` of the feature chunks of the last minute.
    version : int
        Grows by one with every event taken in.
    """

    name = PLUGIN_NAME

    def __init__(self, scheduler=None):
        self.scheduler = scheduler
        self.comparison = {"id": None, "cells": {}, "verdicts": {}, "state": None}
        self.jobs = collections.OrderedDict()
        self.fits = collections.OrderedDict()
        self.features = collections.deque()
        self.version = 0
        self.last_event = None  # (kind, arrival time): how fresh the page is

    # -- the scheduler's hooks -------------------------------------------------------------
    def log_event(self, topic, msg):
        if not isinstance(msg, dict):
            return
        if topic == TOPIC:
            handler = getattr(self, "_on_" + str(msg.get("kind", "")).replace("-", "_"), None)
            if handler is None:
                return
            handler(msg)
        elif topic.startswith(DDP_TOPIC_PREFIX):
            self._on_ddp_metrics(topic.removeprefix(DDP_TOPIC_PREFIX), msg)
        else:
            return
        self.version += 1
        self.last_event = (msg.get("kind", "ddp-metrics"), time.time())

    # -- comparisons -----------------------------------------------------------------------
    def _on_compare(self, msg):
        c = self.comparison
        if msg.get("state") == "start" or msg.get("comparison") != c["id"]:
            c.update(id=msg.get("comparison"), cells={}, verdicts={})
            for cell in msg.get("cells") or []:
                c["cells"][tuple(cell)] = {"state": "pending", "seconds": None, "status": ""}
        c["state"] = msg.get("state")

    def _on_cell(self, msg):
        if msg.get("comparison") != self.comparison["id"]:
            return
        key = (msg["workload"], msg["setup"], msg["size"], msg["repeat"])
        cell = self.comparison["cells"].setdefault(key, {})
        cell.update(
            state=msg.get("state"), seconds=msg.get("seconds"), status=msg.get("status") or ""
        )

    def _on_verdict(self, msg):
        if msg.get("comparison") == self.comparison["id"]:
            self.comparison["verdicts"][msg["workload"]] = {
                "outcome": msg.get("outcome"),
                "verdict": msg.get("verdict"),
            }

    # -- DDP -------------------------------------------------------------------------------
    def _job(self, job):
        if job not in self.jobs:
            self.jobs[job] = {"attempt": 0, "state": "start", "ranks": {}, "errors": []}
            while len(self.jobs) > _JOBS:
                self.jobs.popitem(last=False)
        return self.jobs[job]

    def _rank(self, job, rank):
        j = self._job(job)
        return j["ranks"].setdefault(
            int(rank),
            {"worker": "", "pid": None, "lines": [], "last": {}, "series": [], "shards": {}},
        )

    def _on_ddp(self, msg):
        j = self._job(msg["job"])
        j["attempt"], j["state"] = msg.get("attempt", 0), msg.get("state")
        if msg.get("state") == "start":
            for rank, worker in (msg.get("ranks") or {}).items():
                self._rank(msg["job"], rank)["worker"] = worker
        if msg.get("error"):
            j["errors"] = (j["errors"] + [(msg["time"], msg["state"], msg["error"])])[-_ERRORS:]

    def _on_ddp_rank(self, msg):
        r = self._rank(msg["job"], msg["rank"])
        r.update(pid=msg.get("pid"), lines=msg.get("lines") or [], worker=msg.get("worker", ""))
        r["shards"] = msg.get("shards") or {}

    def _on_ddp_metrics(self, job, msg):
        if "rank" not in msg:
            return
        r = self._rank(job, msg["rank"])
        if msg.get("worker"):
            r["worker"] = msg["worker"]
        r["last"] = {k: v for k, v in msg.items() if k not in ("worker", "rank")}
        r["series"] = (r["series"] + [r["last"]])[-_POINTS:]

    # -- fits and features -----------------------------------------------------------------
    def _on_fit(self, msg):
        fit = self.fits.get(msg["fit"])
        if fit is None:
            fit = self.fits[msg["fit"]] = {"points": []}
            while len(self.fits) > _FITS:
                self.fits.popitem(last=False)
        fit.update(estimator=msg.get("estimator"), metric=msg.get("metric"), path=msg.get("path"))
        fit["points"].append((msg.get("iteration"), msg.get("value"), msg.get("ms"), fit["path"]))
        del fit["points"][:-_POINTS]

    def _on_features(self, msg):
        self.features.append(
            (msg["time"], msg.get("worker", ""), msg.get("images", 0), msg.get("seconds", 0.0))
        )
        while self.features and self.features[0][0] < msg["time"] - _FEATURES_S:
            self.features.popleft()
