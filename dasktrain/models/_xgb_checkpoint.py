"""The xgboost callback that writes a checkpoint every N rounds (imports xgboost: load lazily).

It lives in its own importable module so that ``xgboost.dask`` workers unpickle it by reference.
Only rank 0 writes (every rank holds the same booster), atomically: a temporary file in the same
folder is renamed over the final name, so a reader never sees half a model.
"""

from __future__ import annotations

import glob
import os
import re

from xgboost import collective
from xgboost.callback import TrainingCallback

__all__ = ["CheckpointCallback", "checkpoint_path", "latest_checkpoint"]

_NAME = "xgb-{tag}-{rounds:06d}.ubj"


def checkpoint_path(directory, tag, rounds):
    """Path of the checkpoint after ``rounds`` boosting rounds of the fit tagged ``tag``."""
    return os.path.join(os.fspath(directory), _NAME.format(tag=tag, rounds=rounds))


def latest_checkpoint(directory, tag):
    """``(path, rounds)`` of the newest checkpoint of the fit ``tag``, or ``(None, 0)``."""
    pattern = re.compile(rf"xgb-{re.escape(tag)}-(\d+)\.ubj$")
    best = (None, 0)
    for path in glob.glob(os.path.join(glob.escape(os.fspath(directory)), f"xgb-{tag}-*.ubj")):
        m = pattern.search(os.path.basename(path))
        if m and int(m.group(1)) > best[1]:
            best = (path, int(m.group(1)))
    return best


class CheckpointCallback(TrainingCallback):
    """Save the booster every ``every`` rounds to ``directory`` (rank 0 only).

    Parameters
    ----------
    directory : str
        Must be reachable by the worker that runs rank 0 and by the client (a shared file
        system on a multi-host cluster).
    tag : str
        Names the files of one fit, so a restart never resumes from another fit's model.
    every : int
    """

    def __init__(self, directory, tag, every):
        self.directory = os.fspath(directory)
        self.tag = tag
        self.every = int(every)
        super().__init__()

    def after_iteration(self, model, epoch, evals_log):
        rounds = model.num_boosted_rounds()
        if rounds % self.every == 0 and collective.get_rank() == 0:
            final = checkpoint_path(self.directory, self.tag, rounds)
            tmp = f"{final[:-4]}.tmp-{os.getpid()}.ubj"
            model.save_model(tmp)
            os.replace(tmp, final)
        return False
