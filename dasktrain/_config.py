"""Library defaults, registered with :mod:`dask.config` under the ``dasktrain`` namespace.

Users change them like any Dask setting, for example
``dask.config.set({"dasktrain.images.chunk-size": 512})`` or a YAML file in ``~/.config/dask``.
Every key is read by the code: a function argument whose default is None takes the setting
(``read_images(chunk_size=None)``, ``ddp.run(timeout=None, port_range=None)``). Estimator
parameters keep explicit defaults instead (``CNNFeatures(batch_size=64)``): scikit-learn's
``get_params`` and ``clone`` must show the value that runs.
"""

from typing import Any

import dask.config

DEFAULTS = {
    "dasktrain": {
        # Loopback unless the user asks otherwise: dashboards are not for the whole network.
        "dashboard-address": "127.0.0.1:8787",
        "connect-timeout": "10s",
        "images": {
            # Files per task of read_images(engine="dask") (its chunk_size=None), and images
            # per piece when a feature extractor sends numpy to the cluster.
            "chunk-size": 256,
            # How long one remote listing or one remote file read (fsspec's async stores: s3,
            # gs, http(s), az) may take before it raises RemoteTimeoutError naming the URL; a
            # stalled server hung read_images for minutes. Read where the call runs: the
            # workers read their own Dask configuration. None: no limit.
            "remote-timeout": "60s",
        },
        "monitor": {"interval": 0.5},
        "metrics": {"silhouette-sample-size": 10_000},
        # port-range None: let the OS pick a free port (bind to port 0); or a [low, high] range.
        # timeout: seconds of dasktrain.ddp.run(timeout=None), restarts included.
        "ddp": {"port-range": None, "timeout": 600},
        # dasktrain.tf.run(all_interfaces=None): TensorFlow's gRPC server listens on every
        # interface of each worker's host (it takes a port, not an address); dasktrain does
        # that only when asked (True) on a network the user trusts.
        "tf": {"all-interfaces": False},
        # A blocking call whose tasks wait on workers paused for memory raises
        # WorkersPausedError after this long (dasktrain._dask.paused); restart: restart the
        # paused workers once instead (their data is lost and recomputed where it can be).
        "paused-workers": {"grace": "30s", "restart": False},
        # Iterative passes (KMeans) over direct client-worker connections instead of one
        # scheduler round trip each (dasktrain._dask.direct); False: always through tasks.
        "direct-passes": True,
        # compare(): wait this long before the first run for a busy machine (other programs
        # using more than half a core) to calm down; then refuse it unless allow-busy, which
        # measures anyway and gives verdicts from busy runs (dasktrain.harness.measure.machine).
        "compare": {"quiet-wait": "60s", "allow-busy": False},
        # glibc's allocator (dasktrain/_malloc.py says why; nothing changes on other libcs).
        "malloc": {
            # The workers connect() starts and every DDP rank: one arena and large
            # temporaries kept in the heap (no page faults per batch), with ReleaseMemory
            # handing freed memory back. False: the Dask configuration decides
            # (its nanny's MALLOC_TRIM_THRESHOLD_=65536).
            "workers": True,
            # The local engine's network work in this process: thresholds raised while it
            # runs, glibc's grown defaults and freed memory handed back afterwards.
            "local": True,
            # Allocations below this stay in the heap.
            "threshold": "1GiB",
            # A worker hands its freed memory back past this fraction of its memory limit
            # (and below 0.9 of Dask's target/spill/pause fractions), and when idle this long.
            "release-at": 0.5,
            "release-idle": "1s",
        },
    }
}

dask.config.update_defaults(DEFAULTS)


def get(key: str, default: Any = None) -> Any:
    """Return the dasktrain setting ``key`` (dotted, without the ``dasktrain.`` prefix)."""
    return dask.config.get(f"dasktrain.{key}", default=default)
