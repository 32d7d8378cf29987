"""One restart policy for every step that starts again after a failure on the cluster.

Three steps survive a lost worker by doing their work again: the DDP job (the whole group,
``ddp.run(max_restarts=)``), the XGBoost fit (on the live workers, from its last checkpoint,
``XGBClassifier(max_restarts=)``) and :func:`~.scatter.map_scattered` (each piece sent again,
``distributed.scheduler.allowed-failures`` times at most). They share one vocabulary, kept
here: the **attempt** (0 for the first try), the **failures** (what failed, one message per
failed attempt, in order) and what each restart **resumed** from (a checkpoint, a round, or
None: from the start). Each step writes its own messages and decides what a restart does;
this class keeps the count and says whether one is left.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["Restarts"]


class Restarts:
    """The attempts of one step: how many restarts it may make, what failed, what resumed.

    Parameters
    ----------
    what : str
        The step, for the log ("the DDP job 3f2a...", "XGBClassifier.fit", "piece 4 of the
        images").
    max_restarts : int
        Restarts allowed after the first attempt (0: a failure is final).
    log : logging.Logger, optional
        Where a restart is told (the step's own logger, so a user who listens to it still
        hears of restarts); this module's by default.

    Attributes
    ----------
    attempt : int
        The attempt running now, 0 for the first.
    failures : list of str
        One message per failed attempt, in order (the last is the final one when no restart
        was left).
    resumed : list
        What each restart resumed from, one entry per restart (None: from the start).
    """

    def __init__(self, what: str, max_restarts: int, log: logging.Logger | None = None) -> None:
        self.what = what
        self.max_restarts = max_restarts
        self.log = log or logger
        self.attempt = 0
        self.failures: list[str] = []
        self.resumed: list[Any] = []

    @property
    def attempts(self) -> int:
        """Attempts made so far, the running one included."""
        return self.attempt + 1

    @property
    def restarts(self) -> int:
        """Restarts made so far."""
        return self.attempt

    def failed(self, message: str, *, resume: Any = None, final: bool = False) -> bool:
        """Record that the current attempt failed; True when the step starts again.

        Parameters
        ----------
        message : str
            What failed (kept in :attr:`failures`, and logged when a restart follows).
        resume : optional
            What the restart resumes from (kept in :attr:`resumed`).
        final : bool
            The step cannot start again whatever the budget (its time is up, a restart
            could not help).

        Returns
        -------
        bool
            True: the attempt count moved on and the caller starts again. False: no
            restart is left (or ``final``); the caller raises its error.
        """
        self.failures.append(message)
        if final or self.attempt >= self.max_restarts:
            return False
        self.attempt += 1
        self.resumed.append(resume)
        self.log.warning(
            "%s failed: %s; restart %d of %d", self.what, message, self.attempt, self.max_restarts
        )
        return True
