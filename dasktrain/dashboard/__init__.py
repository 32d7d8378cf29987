"""The ``/dasktrain`` page of the Dask dashboard: a scheduler preload.

Start a scheduler with it and its dashboard gets a *dasktrain* page beside Status, Workers and
Tasks::

    dask scheduler --preload dasktrain.dashboard

Clusters started by :func:`dasktrain.connect` have it already. The page shows, live (redrawn
every half second from the events the library sends, see ``dasktrain._dask.events``; nothing
is polled from the workers): the comparison under way (its grid of runs and the verdicts as
soon as a workload is measured), every DDP job's ranks (host, worker, pid, their reported
metrics against step or epoch, restarts and failures, the last log lines), the iterative fits
(KMeans passes, XGBoost rounds) and the feature extraction's images/s per worker beside the
workers' state (a worker paused for memory in red, with its memory against its limit).

How it plugs in: a preload module is imported while the scheduler is built, before its HTTP
server starts, so importing this module adds the page to distributed's dashboard
(``distributed.dashboard.scheduler.applications``) and to its list of pages; ``dask_setup``
then registers the :class:`~._state.LiveState` plugin that collects the events. Without the
preload nothing changes: the library works the same, and :func:`dasktrain.dashboard_link`
says how to turn the page on.
"""

from __future__ import annotations

import logging

from ._state import PLUGIN_NAME, LiveState

__all__ = ["PAGE", "PLUGIN_NAME", "LiveState", "dask_setup", "register_page"]

logger = logging.getLogger(__name__)

#: The page's path on the dashboard.
PAGE = "dasktrain"


def register_page() -> bool:
    """Add ``/dasktrain`` to the dashboard of schedulers built from now on in this process.

    Returns False (and logs why) when distributed's dashboard cannot be extended (bokeh
    missing, or a distributed whose dashboard module changed shape).
    """
    try:
        from distributed.dashboard import scheduler as dashboard
    except ImportError as exc:  # no bokeh: no dashboard at all
        logger.info("no dasktrain page: distributed's dashboard is unavailable (%s)", exc)
        return False
    if not hasattr(dashboard, "applications") or not hasattr(dashboard, "template_variables"):
        logger.warning("no dasktrain page: this distributed's dashboard has no page registry")
        return False
    from ._page import live_doc

    dashboard.applications["/" + PAGE] = live_doc
    if dashboard.template_variables is not _listed.get("wrapper"):
        _listed["wrapper"] = dashboard.template_variables = _with_page(dashboard.template_variables)
    return True


# The dashboard's template_variables once wrapped (a second import must not wrap it again).
_listed: dict = {}


def _with_page(template_variables):
    """distributed's ``template_variables(scheduler)`` (memoized per scheduler; its ``pages``
    are the links at the top of every page) with this page's link before "info"."""

    def with_page(scheduler):
        out = template_variables(scheduler)
        pages = out["pages"]
        if PAGE not in pages:
            pages.insert(pages.index("info") if "info" in pages else len(pages), PAGE)
        return out

    return with_page


def dask_setup(scheduler) -> None:
    """The preload's hook: collect dasktrain's events on this scheduler."""
    if PLUGIN_NAME not in scheduler.plugins:
        scheduler.add_plugin(LiveState(scheduler), name=PLUGIN_NAME)


# Imported as a preload: the scheduler's HTTP server is not started yet, the page goes in now.
register_page()
