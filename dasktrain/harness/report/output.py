"""The output folder of a comparison: checked before anything runs, written safely.

Every file goes in beside its name and is renamed over it (never half written, never through a
symbolic link); ``runs.jsonl`` is appended to run by run so that an interrupted comparison keeps
what it measured. Nothing here deletes a file it did not create.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path

from ...exceptions import ValidationError

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_FILES", "check_output_dir", "write_atomic", "write_text", "RunLog", "read_runs"]

#: The files a comparison writes into its output folder (``compare(out=...)``, ``Results.save``).
OUTPUT_FILES = (
    "runs.jsonl",
    "comparisons.jsonl",
    "report.html",
    "results.csv",
    "results.json",
    "runs.csv",
    "samples.csv",
    "dask-performance-report.html",
    "events.jsonl",
    "dasktrain.log",
)


def _writable_folder(d, shown, name):
    """Create ``d`` when missing and prove a file can be made in it."""
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dasktrain-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValidationError(
            f"{name}={shown!r} cannot be written ({type(exc).__name__}: {exc}); choose a folder "
            "you can write to."
        ) from exc


def check_output_dir(directory: str | os.PathLike[str], *, name: str = "out") -> Path:
    """Make sure the comparison's files can be written into ``directory``; return it as a Path.

    Runs before anything is measured, so that a bad folder is reported at once rather than
    after a long comparison. The folder is created when missing.

    Parameters
    ----------
    directory : str or Path
    name : str
        The argument's name in messages (``"out"``, ``"--out"``, ``"directory"``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValidationError
        ``directory`` is empty, an existing file, cannot be created or written, or holds a
        symbolic link (or a folder) under one of the names in ``OUTPUT_FILES``: dasktrain never
        writes through a link.
    """
    if directory is None or not str(os.fspath(directory)).strip():
        raise ValidationError(f"{name}={directory!r} is empty; pass a folder, e.g. 'report/'.")
    d = Path(directory)
    shown = os.fspath(directory)
    if d.exists() and not d.is_dir():
        raise ValidationError(
            f"{name}={shown!r} is an existing file, not a folder; pass a folder for the report "
            "(created if missing), e.g. 'report/'."
        )
    _writable_folder(d, shown, name)
    links = [n for n in OUTPUT_FILES if (d / n).is_symlink()]
    if links:
        raise ValidationError(
            f"{name}={shown!r} holds symbolic link(s) {links!r} with the names of the files "
            "written there; dasktrain never writes through a link. Remove them or choose "
            "another folder."
        )
    folders = [n for n in OUTPUT_FILES if (d / n).exists() and not (d / n).is_file()]
    if folders:
        raise ValidationError(
            f"{name}={shown!r} holds {folders!r}, which are not files; move them or choose "
            "another folder."
        )
    return d


def write_atomic(path, write) -> None:
    """Call ``write(tmp_path)`` on a new file beside ``path``, then rename it over ``path``.

    The rename replaces the name itself (a link found there is replaced, never followed), and
    a reader never sees half a file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8 with :func:`write_atomic`."""

    def write(tmp):
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)

    write_atomic(path, write)


def _json_default(value):
    """numpy scalars as numbers (``np.int64`` is no int to json), anything else as text."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError):
            pass
    return str(value)


def _append_only(path):
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "a", encoding="utf-8")


class RunLog:
    """``runs.jsonl`` in the output folder: one JSON line per finished run, written at once.

    Lines are appended, each naming its comparison, so an interrupted comparison keeps the rows
    it had and an earlier comparison's rows in the same folder are never lost;
    :meth:`Results.from_runs <dasktrain.Results.from_runs>` reads them back. The comparison's
    setup (engines, setups and their cores, host...) goes on one line of ``comparisons.jsonl``
    beside it, so that what is read back is reported as fully as the original.

    Parameters
    ----------
    directory : Path
        A folder checked by :func:`check_output_dir`.
    comparison : str
        The comparison's id, written on every line.
    """

    def __init__(self, directory, comparison: str) -> None:
        self.path = Path(directory) / "runs.jsonl"
        self.comparison = comparison
        self._f = _append_only(self.path)

    def write_setup(self, setup: dict) -> None:
        """Append the comparison's ``setup`` to ``comparisons.jsonl`` beside ``runs.jsonl``."""
        line = json.dumps({"comparison": self.comparison, "setup": setup}, default=_json_default)
        with _append_only(self.path.with_name("comparisons.jsonl")) as f:
            f.write(line + "\n")

    def write(self, row: dict) -> None:
        """Append ``row`` (a flat run record) and flush it to disk."""
        line = json.dumps({"comparison": self.comparison, **row}, default=_json_default)
        self._f.write(line + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file (the lines written stay)."""
        self._f.close()


def read_runs(path, comparison=None) -> tuple[list, dict]:
    """The runs of one comparison from a ``runs.jsonl`` that :class:`RunLog` wrote, and its
    setup from ``comparisons.jsonl`` beside it: ``(rows, setup)``.

    Parameters
    ----------
    path : str or Path
        ``runs.jsonl``, or the output folder holding it.
    comparison : str, optional
        Which comparison; the last one in the file by default.

    Raises
    ------
    ValidationError
        No such file, or no rows of that comparison.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "runs.jsonl"
    rows = _read_jsonl(path)
    ids = list(dict.fromkeys(r.get("comparison") for r in rows))
    chosen = comparison if comparison is not None else (ids[-1] if ids else None)
    runs = [
        {k: v for k, v in r.items() if k != "comparison"}
        for r in rows
        if r.get("comparison") == chosen
    ]
    if not runs:
        raise ValidationError(
            f"{str(path)!r} holds no runs of comparison {chosen!r} (comparisons: {ids!r})."
        )
    saved = _saved_setup(path.with_name("comparisons.jsonl"), chosen)
    return runs, {**saved, "comparison": chosen, "runs_log": str(path)}


def _saved_setup(path, comparison):
    """The setup ``compare`` logged for ``comparison`` (``{}`` for logs written before it)."""
    if not path.is_file():
        return {}
    found = [r for r in _read_jsonl(path) if r.get("comparison") == comparison]
    return dict(found[-1].get("setup") or {}) if found else {}


def _read_jsonl(path):
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError(
            f"cannot read the runs of a comparison from {str(path)!r}: {exc}"
        ) from exc
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut short by an interruption
            logger.warning("skipped an incomplete line of %s", path)
    return rows
