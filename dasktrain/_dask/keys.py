"""Task keys a person can read on the dashboard: ``<name>-<uuid>-<i>``.

Below every module of this package that submits tasks (:mod:`.blocks`, :mod:`.direct`,
:mod:`.scatter`), so that none of them imports another for its keys.
"""

from __future__ import annotations

import uuid

__all__ = ["task_keys"]


def task_keys(name: str, n: int) -> list[str]:
    """``n`` fresh task keys ``<name>-<uuid>-<i>``: readable, and never shared by two calls.

    The dashboard then says ``kmeans-lloyd``, ``metrics-pair-counts`` or ``cv-fold`` rather
    than the name of the function a task runs.
    """
    token = uuid.uuid4().hex
    return [f"{name}-{token}-{i}" for i in range(n)]
