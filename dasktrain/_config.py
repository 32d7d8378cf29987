"""Library defaults, registered with :mod:`dask.config` under the ``dasktrain`` namespace.

Users change them like any Dask setting, for example
``dask.config.set({"dasktrain.images.chunk-size": 512})`` or a YAML file in ``~/.config/dask``.
"""

import dask.config

DEFAULTS = {
    "dasktrain": {
        # Loopback unless the user asks otherwise: dashboards are not for the whole network.
        "dashboard-address": "127.0.0.1:8787",
        "connect-timeout": "10s",
        "images": {"chunk-size": 256},
        "features": {"batch-size": 64},
        "monitor": {"interval": 0.5},
        "metrics": {"silhouette-sample-size": 10_000},
        # None: let the OS pick a free port (bind to port 0); or a [low, high] range.
        "ddp": {"port-range": None, "timeout": 600},
    }
}

dask.config.update_defaults(DEFAULTS)


def get(key, default=None):
    """Return the dasktrain setting ``key`` (dotted, without the ``dasktrain.`` prefix)."""
    return dask.config.get(f"dasktrain.{key}", default=default)
