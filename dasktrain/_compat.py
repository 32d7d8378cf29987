"""Optional imports and hardware probes.

Heavy or optional packages (torch, tensorflow, dask-cuda, nvidia-ml-py) are imported only
where they are used, through :func:`import_optional`, so that ``import dasktrain`` stays light
and a missing package says which extra to install.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any

from .exceptions import OptionalDependencyError, UnguardedScriptError

# Which extra provides which importable module.
_EXTRAS = {
    "xgboost": "xgboost",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "dask_cuda": "gpu",
    "pynvml": "gpu",
    "asv": "bench",
}

logger = logging.getLogger(__name__)

# What the message of a missing package adds after "pip install 'dasktrain[extra]'".
_HINTS = {
    "xgboost": (
        ", or on a machine without an NVIDIA GPU pip install 'dasktrain[xgboost-cpu]' (the same "
        "XGBoost without CUDA: no nvidia-nccl-cu12, about 470 MB less). Never both"
    ),
}

# What TensorFlow's C++ code writes to stderr while it is imported, in every process (each Dask
# worker too): information about the build, not warnings about the user's work.
_IMPORT_BANNERS = {
    "tensorflow": re.compile(
        r"absl::InitializeLog\(\) is called|oneDNN custom operations are on|cpu_feature_guard"
        r"|^To enable the following instructions|Unable to register cu(DNN|FFT|BLAS) factory"
        r"|computation placer already registered|could not find cuda drivers"
    ),
}
_IMPORT_LOCK = threading.Lock()


@contextlib.contextmanager
def _stderr_without(banners):
    """File descriptor 2 into a temporary file for the block (C++ code writes there directly);
    then every line of it is written back to stderr except those ``banners`` matches, which
    are logged at DEBUG. The other threads' output of those seconds is delayed, never lost."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [line for line in lines if not banners.search(line)]
            if len(kept) < len(lines):
                logger.debug("import banners: %s", "".join(set(lines) - set(kept)).strip())
            if kept:
                os.write(2, "".join(kept).encode())


def _import(name):
    banners = _IMPORT_BANNERS.get(_EXTRAS.get(name.split(".")[0]) or name.split(".")[0])
    if banners is None or name in sys.modules:
        return importlib.import_module(name)
    with _IMPORT_LOCK, _stderr_without(banners):
        return importlib.import_module(name)


def import_optional(name: str, extra: str | None = None) -> Any:
    """Import an optional module or raise an ImportError that names the extra to install.

    Parameters
    ----------
    name : str
        Importable module name, e.g. ``"torch"``.
    extra : str, optional
        The dasktrain extra that installs it; looked up from ``name`` when omitted.

    Returns
    -------
    module

    Raises
    ------
    OptionalDependencyError
        A subclass of ImportError whose message names ``pip install 'dasktrain[extra]'``.
    """
    try:
        return _import(name)
    except ImportError as exc:
        extra = extra or _EXTRAS.get(name.split(".")[0], "all")
        raise OptionalDependencyError(
            f"{name!r} is required for this feature but could not be imported ({exc}). "
            f"Install it with: pip install 'dasktrain[{extra}]'{_HINTS.get(extra, '')}."
        ) from exc


def gpu_count() -> int:
    """Number of NVIDIA GPUs this process may use, without importing torch or dask_cuda.

    The devices the machine has (:func:`_machine_gpu_count`), limited by
    ``CUDA_VISIBLE_DEVICES`` when it is set (``""`` or ``"-1"`` hide every GPU).
    """
    import os

    n = _machine_gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return n
    ids = [v for v in visible.split(",") if v.strip() not in ("", "-1")]
    return min(n, len(ids))


@functools.lru_cache(maxsize=1)
def _machine_gpu_count() -> int:
    """Number of NVIDIA GPUs on the machine (probed once per process).

    Uses NVML when nvidia-ml-py is installed, otherwise ``nvidia-smi -L``; returns 0 when
    neither finds a device. (``import dask_cuda`` fails on machines without CUDA, so this
    probe must come first.)
    """
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    if "torch" in sys.modules:
        try:
            return int(sys.modules["torch"].cuda.device_count())
        except Exception:
            pass
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def has_gpu():
    """True when at least one NVIDIA GPU is visible."""
    return gpu_count() > 0


def cpu_count() -> int:
    """CPUs this process may run on (respects affinity / containers where the OS reports it)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def check_not_bootstrapping(what: str) -> None:
    """Raise at once when called while multiprocessing is still starting this process.

    A process started with spawn or forkserver (Dask's nannies, process pools) runs the
    parent's main script again, as the module ``__mp_main__``, before it does its own work;
    ``current_process()._inheriting`` is True meanwhile. A script that calls ``what`` at its
    top level, without ``if __name__ == "__main__":``, would start a cluster or a pool of its
    own in every such process, and wait on them forever.

    Raises
    ------
    UnguardedScriptError
        Naming the script and the fix.
    """
    import multiprocessing.process

    if not getattr(multiprocessing.process.current_process(), "_inheriting", False):
        return
    main = sys.modules.get("__mp_main__") or sys.modules.get("__main__")
    script = getattr(main, "__file__", None) or "the main script"
    raise UnguardedScriptError(
        f"{what} was called while multiprocessing was starting a new process (pid "
        f"{os.getpid()}), which runs {script!r} again: that script calls {what} outside an "
        '`if __name__ == "__main__":` block, so every worker process would start its own and '
        "the script would hang. Put the script's code under "
        '`if __name__ == "__main__":` (functions and imports may stay above it).'
    )
