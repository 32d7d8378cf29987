"""Names for return annotations, for type checkers only (nothing here is imported at run time).

Modules write ``from __future__ import annotations`` and import these under ``TYPE_CHECKING``:
the annotations stay strings, so neither dask nor torch is imported to annotate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any
    from typing import Self as Self

    import dask.array as da
    import numpy as np

    #: numpy in, numpy out; dask in, lazy dask out
    Array = np.ndarray | da.Array

    #: ``workers=`` of the DDP launcher and RankPool: all workers, a count, or addresses
    Workers = int | list[str] | None
    #: ``port_range=``: the rendezvous ports allowed, ``(low, high)``
    PortRange = tuple[int, int]
    #: a train/test split of features and labels: ``(X_train, X_test, y_train, y_test)``
    Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    #: a workload of compare(): a built-in's name or ``fn(data, engine, client) -> dict``
    WorkloadSpec = str | Callable[..., dict[str, Any]]
