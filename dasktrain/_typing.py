"""Names for annotations, for type checkers only (nothing here is imported at run time).

Modules write ``from __future__ import annotations`` and import these under ``TYPE_CHECKING``:
the annotations stay strings, so neither dask nor torch is imported to annotate.

Parameters take :data:`ArrayLike` (what the function turns into an array itself) and return
:data:`Array` (numpy in, numpy out; dask in, lazy dask out) or :data:`NDArray` (always numpy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol
    from typing import Self as Self

    import dask.array as da
    import dask.dataframe as dd
    import numpy as np
    import numpy.typing as npt
    from distributed import Client as Client

    #: a numpy array of any dtype and shape
    NDArray = npt.NDArray[Any]
    #: numpy in, numpy out; dask in, lazy dask out
    Array = NDArray | da.Array
    #: what a parameter takes as data: anything ``numpy.asarray`` takes (pandas included), a
    #: dask array, or a dask DataFrame / Series
    ArrayLike = npt.ArrayLike | da.Array | dd.DataFrame | dd.Series
    #: any scikit-learn-compatible estimator (duck-typed, as scikit-learn's own functions)
    Estimator = Any

    class HasImages(Protocol):
        """An :class:`~dasktrain.images.ImageSet`, or anything with images as ``.X``."""

        @property
        def X(self) -> Array: ...

    #: what the feature extractors take: an image array or an ImageSet-like object
    Images = ArrayLike | HasImages
    #: a local path or a URL (fsspec)
    PathLike = str | os.PathLike[str]
    #: what ``read_images`` reads: a folder, ``(path, label)`` pairs, or a pandas / dask
    #: DataFrame with ``path`` and ``label`` columns (pandas has no annotations: Any)
    ImageSource = PathLike | Sequence[tuple[PathLike, object]] | dd.DataFrame | Any
    #: fsspec's options for a URL (``storage_options``)
    StorageOptions = dict[str, Any]
    #: a random seed or generator, as scikit-learn's ``random_state``
    RandomState = int | np.random.RandomState | None

    #: ``workers=`` of the DDP launcher and RankPool: all workers, a count, or addresses
    Workers = int | list[str] | None
    #: ``port_range=``: the rendezvous ports allowed, ``(low, high)``
    PortRange = tuple[int, int]
    #: a train/test split of features and labels: ``(X_train, X_test, y_train, y_test)``
    Split = tuple[NDArray, NDArray, NDArray, NDArray]
    #: a workload of compare(): a built-in's name or ``fn(data, engine, client) -> dict``
    WorkloadSpec = str | Callable[..., dict[str, Any]]
