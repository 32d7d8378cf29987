"""Names for return annotations, for type checkers only (nothing here is imported at run time).

Modules write ``from __future__ import annotations`` and import these under ``TYPE_CHECKING``:
the annotations stay strings, so neither dask nor torch is imported to annotate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self as Self

    import dask.array as da
    import numpy as np

    #: numpy in, numpy out; dask in, lazy dask out
    Array = np.ndarray | da.Array
