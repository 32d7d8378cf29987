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
    pages = getattr(dashboard.template_variables, "_dasktrain_pages", None)
    if pages is None:
        original = dashboard.template_variables

        def template_variables(scheduler):
            out = original(scheduler)  # memoized per scheduler: add the link once
            if PAGE not in out["pages"]:
                out["pages"].insert(
                    out["pages"].index("info") if "info" in out["pages"] else len(out["pages"]),
                    PAGE,
                )
            return out

        template_variables._dasktrain_pages = True
        dashboard.template_variables = template_variables
    return True


def dask_setup(scheduler) -> None:
    """The preload's hook: collect dasktrain's events on this scheduler."""
    if PLUGIN_NAME not in scheduler.plugins:
        scheduler.add_plugin(LiveState(scheduler), name=PLUGIN_NAME)


# Imported as a preload: the scheduler's HTTP server is not started yet, the page goes in now.
register_page()
