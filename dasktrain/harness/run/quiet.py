"""Library noise off the terminal: what the libraries print, warn or log goes to a file.

A comparison runs scikit-learn, xgboost, torch and Dask, which warn (``ConvergenceWarning``,
"Sending large graph"), log (``distributed.sizeof ... failed``, port-in-use, "Worker process
still alive") and print (xgboost's tracker, ``Parameters: { "coll_cfg" } are not used``) in
this process and in the workers. With ``compare(log=path)`` all of it goes to ``path``; what
is about the user's data or setup stays on the terminal: dasktrain's own warnings
(:class:`~dasktrain.exceptions.DasktrainWarning`, e.g. skipped files) and log records of
level WARNING or more.

In this process the streams are redirected at the Python level (``sys.stdout``,
``sys.stderr``, the logging handlers, ``warnings.showwarning``); the workers of the clusters
the comparison starts itself get a worker plugin that points their file descriptors 1 and 2 at
the file, which also catches what C++ code writes there. The workers (and nannies) of a
cluster the caller passed in that write to this process's own terminal (a ``LocalCluster`` of
the user's script) are pointed at the file for the comparison only, and back afterwards.

One message is dropped everywhere during a comparison, log or not: distributed's "Sizeof
calculation for object of type 'dict' failed. Defaulting to -1 B". distributed writes it
when a message is nested deeper than ``dask.sizeof`` recurses (a worker's profile of a deep
stack, fetched for the performance report); -1 only means "serialise it off the event loop",
nothing is lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from ...exceptions import DasktrainWarning

__all__ = ["QuietOutput", "output_to_file", "children_output_to", "quiet_clusters"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s (pid %(process)d): %(message)s"


def _own(name):
    return name == "dasktrain" or name.startswith("dasktrain.")


class _OwnRecords(logging.Filter):
    """Lets dasktrain's own records through to the terminal, and nothing else."""

    def filter(self, record):
        return _own(record.name)


def _point_output_at(path):
    """Append this process's file descriptors 1 and 2 to ``path`` (runs in a worker)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


@contextlib.contextmanager
def children_output_to(path):
    """Inside the block, file descriptors 1 and 2 of this process point at ``path``, so a
    process started meanwhile (the Spark JVM, and the Python workers it starts later) writes
    there for its whole life; this process's own descriptors are restored on exit.
    ``path=None`` changes nothing."""
    if path is None:
        yield
        return
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        _point_output_at(path)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def output_to_file(path):
    """A :class:`distributed.WorkerPlugin` whose workers write their stdout and stderr (file
    descriptors 1 and 2, so C++ output too) to ``path``; processes they start later (DDP
    ranks) inherit it. Built on call, so that importing this module imports no distributed."""
    from distributed import WorkerPlugin

    class OutputToFile(WorkerPlugin):
        name = "dasktrain-output-to-file"
        idempotent = True

        def __init__(self, path):
            self.path = os.fspath(path)

        def setup(self, worker):
            _point_output_at(self.path)

    return OutputToFile(path)


class QuietOutput:
    """Within ``with``: library output of this process goes to ``path`` (see the module).

    Attributes
    ----------
    terminal : file
        The terminal's stdout as it was on entry: write what the user must see there.
    terminal_err : file
        The terminal's stderr as it was on entry.
    """

    def __init__(self, path) -> None:
        self.path = os.fspath(path)
        self.terminal, self.terminal_err = sys.stdout, sys.stderr
        self._undo = contextlib.ExitStack()

    def plugin(self):
        """The worker plugin for the clusters the comparison starts (:func:`output_to_file`)."""
        return output_to_file(self.path)

    def lines(self) -> int:
        """Lines written to the file so far."""
        try:
            with open(self.path, "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def __enter__(self) -> QuietOutput:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        stream = os.fdopen(os.open(self.path, flags, 0o644), "a", encoding="utf-8", buffering=1)
        self._undo.callback(stream.close)
        self.terminal, self.terminal_err = sys.stdout, sys.stderr
        self._route_logging(stream)
        self._route_warnings()
        self._undo.enter_context(contextlib.redirect_stdout(stream))
        self._undo.enter_context(contextlib.redirect_stderr(stream))
        return self

    def __exit__(self, *exc) -> None:
        self._undo.close()

    def _route_logging(self, stream):
        """Every record to the file; only dasktrain's own to the terminal's handlers."""
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        self._undo.callback(root.removeHandler, handler)
        own = _OwnRecords()
        others = [h for h in root.handlers if h is not handler]
        if not others:
            # No terminal handler (a script, not the CLI): dasktrain's warnings still show.
            terminal = logging.StreamHandler(self.terminal_err)
            terminal.setLevel(logging.WARNING)
            root.addHandler(terminal)
            self._undo.callback(root.removeHandler, terminal)
            others = [terminal]
        for h in others:
            h.addFilter(own)
            self._undo.callback(h.removeFilter, own)
        # Loggers with handlers of their own (distributed configures "distributed" so) send
        # their records to the file instead, for the time being.
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger) or not lg.handlers or _own(name):
                continue
            saved = (list(lg.handlers), lg.propagate)
            lg.handlers = []
            lg.propagate = True
            self._undo.callback(_restore, lg, *saved)

    def _route_warnings(self):
        """dasktrain's warnings to the terminal, every other warning to the file's log."""
        shown = warnings.showwarning
        terminal_err = self.terminal_err
        library = logging.getLogger("py.warnings")

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DasktrainWarning):
                text = warnings.formatwarning(message, category, filename, lineno, line)
                terminal_err.write(text)
                return
            text = warnings.formatwarning(message, category, filename, lineno, line)
            library.warning("%s", text.rstrip())

        warnings.showwarning = showwarning
        self._undo.callback(setattr, warnings, "showwarning", shown)


class _BenignSizeof(logging.Filter):
    """Drops distributed's "... failed. Defaulting to -1 B" (see the module docstring)."""

    def filter(self, record):
        return "Defaulting to -1 B" not in str(record.msg)


#: one instance per process, so that adding it twice adds it once
_BENIGN_SIZEOF = _BenignSizeof()
#: in a worker or nanny: its file descriptors 1 and 2 while a comparison borrows them
_BORROWED: list = []


def _sizeof_filter(on):
    log = logging.getLogger("distributed.sizeof")
    (log.addFilter if on else log.removeFilter)(_BENIGN_SIZEOF)


def _terminal():
    """What file descriptor 2 of this process is: ``(st_dev, st_ino)``."""
    st = os.fstat(2)
    return (st.st_dev, st.st_ino)


def _borrow(path, terminal, caller):
    """In a worker or nanny: point descriptors 1 and 2 at ``path`` when they write to the
    caller's ``terminal``, keeping the old ones for :func:`_give_back`. Never in the caller's
    own process (``caller``: its pid; a worker of ``processes=False`` lives there)."""
    if os.getpid() == caller:
        return
    with contextlib.suppress(OSError):
        if _terminal() == tuple(terminal):
            _BORROWED.append((os.dup(1), os.dup(2)))
            _point_output_at(path)


def _give_back():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    while _BORROWED:
        saved = _BORROWED.pop()
        for fd, target in zip(saved, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)


def _run_everywhere(client, fn, *args, scheduler=True):
    """``fn(*args)`` in every worker, nanny and (``scheduler``) the scheduler; a failure is no
    reason to stop a comparison (a worker without a nanny, a scheduler that refuses
    ``run_on_scheduler``)."""
    for kwargs in ({}, {"nanny": True}):
        with contextlib.suppress(Exception):
            client.run(fn, *args, **kwargs)
    if scheduler:
        with contextlib.suppress(Exception):
            client.run_on_scheduler(fn, *args)


@contextlib.contextmanager
def quiet_clusters(setups, quiet):
    """Within the block: the benign sizeof message dropped in this process and on every
    cluster of ``setups``, and with a :class:`QuietOutput` ``quiet``, the output of their
    workers in its file: through a plugin on the clusters started here, borrowed from the
    caller's clusters where it goes to this process's terminal (see the module)."""
    clients = [s.client for s in setups if s.engine == "dask" and s.client is not None]
    _sizeof_filter(True)
    for client in clients:
        _run_everywhere(client, _sizeof_filter, True)
    lent = []
    if quiet is not None:
        terminal = _terminal()
        for s in setups:
            if s.engine != "dask":  # a Spark session's output is set at its start
                continue
            with contextlib.suppress(Exception):  # noise is no reason to fail
                if s.started:
                    s.client.register_plugin(quiet.plugin())
                else:
                    args = (quiet.path, terminal, os.getpid())
                    _run_everywhere(s.client, _borrow, *args, scheduler=False)
                    lent.append(s.client)
    try:
        yield
    finally:
        for client in lent:
            _run_everywhere(client, _give_back, scheduler=False)
        for client in clients:
            _run_everywhere(client, _sizeof_filter, False)
        _sizeof_filter(False)


def _restore(logger, handlers, propagate):
    logger.handlers = handlers
    logger.propagate = propagate
