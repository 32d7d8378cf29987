"""Remote images through fsspec: ``s3://``, ``gs://``, ``http(s)://``, ``memory://`` ...

A path with a protocol other than ``file`` is remote. Its folder is listed with the
filesystem's ``find``. A header check asks for the first :data:`HEADER_BYTES` of a file only (a
ranged read), and decoding reads the file whole with one request (``cat_file``: no ``HEAD``
first), so each file's content is fetched once per read; a 300 MB non-image cost 300 MB of
memory and a full download just to be refused. Every listing and read of fsspec's async
filesystems (s3, gs, http(s), az) has a time limit, the ``dasktrain.images.remote-timeout``
setting: a stalled server raises :class:`~dasktrain.exceptions.RemoteTimeoutError` naming the
URL instead of hanging (aiohttp waits 5 minutes per request by default). The
``storage_options`` of the call (keys, an endpoint) go to ``fsspec.core.url_to_fs`` on the
client and, with the tasks, on the workers. Local paths never come here: they keep the
regular-file checks of ``_decode``.
"""

from __future__ import annotations

import io
import posixpath
from typing import Any, TypeGuard

from .. import _config
from ..exceptions import RemoteTimeoutError, ValidationError

__all__ = [
    "HEADER_BYTES",
    "is_remote",
    "remote_fs",
    "read_remote",
    "open_remote",
    "remote_head",
    "remote_stamp",
    "walk_remote",
    "check_workers_see",
]

#: Bytes a remote header check reads: every header Pillow parses fits, bar JPEGs with large
#: metadata before their frame header, which are then read whole (see ``_decode``).
HEADER_BYTES = 64 * 1024


def is_remote(path: object) -> TypeGuard[str]:
    """True for a string with a protocol other than ``file://`` / ``local://``."""
    if not isinstance(path, str) or "://" not in path:
        return False
    return path.split("://", 1)[0].lower() not in ("file", "local")


def check_workers_see(path, client):
    """Raise before any work when ``path`` is in fsspec's memory filesystem and ``client``'s
    workers are other processes: ``memory://`` lives in the process that wrote it, so they
    would find no file (one FileNotFoundError per file, and no word of why)."""
    if not isinstance(path, str) or not path.lower().startswith("memory://"):
        return
    import os

    here = os.getpid()
    if all(pid == here for pid in client.run(os.getpid).values()):
        return  # a cluster of threads in this process (LocalCluster(processes=False))
    raise ValidationError(
        f"{path!r} is in fsspec's memory filesystem, which lives in this process only; the "
        "Dask workers are other processes and see none of its files. Read it with "
        "engine='local' (the dask steps then send the images to the workers), or put the "
        "files where the workers can read them (s3://, gs://, a shared folder)."
    )


def remote_fs(path, storage_options=None):
    """``(filesystem, path without protocol)`` for ``path``."""
    from fsspec.core import url_to_fs

    return url_to_fs(path, **(storage_options or {}))


def _timeout():
    """Seconds of the ``dasktrain.images.remote-timeout`` setting, or None (no limit)."""
    from dask.utils import parse_timedelta

    value = _config.get("images.remote-timeout", "60s")
    return parse_timedelta(value, default="s") if value not in (None, False, 0) else None


def _call(fs, url, what, method, *args, **kwargs):
    """``fs.method(*args, **kwargs)`` within the time limit; a timeout raises
    :class:`RemoteTimeoutError` naming ``url`` and ``what`` was being done.

    fsspec's async filesystems take ``timeout=`` on every blocking call and cancel the request
    when it is over; the others (``memory://``) are called as they are.
    """
    from fsspec.asyn import AsyncFileSystem
    from fsspec.exceptions import FSTimeoutError

    timeout = _timeout()
    if timeout is not None and isinstance(fs, AsyncFileSystem):
        kwargs["timeout"] = timeout
    try:
        return getattr(fs, method)(*args, **kwargs)
    except FSTimeoutError as exc:
        raise RemoteTimeoutError(
            f"{url!r} did not answer within {timeout:g} s while {what} (the "
            "dasktrain.images.remote-timeout setting): the server is stalled or too slow. "
            "Check that it answers, or raise the limit, e.g. dask.config.set("
            "{'dasktrain.images.remote-timeout': '300s'}) (on the workers too for the dask "
            "engine)."
        ) from exc


def read_remote(path, storage_options=None, *, start=None, end=None):
    """The bytes of ``path`` (``[start:end]`` with a ranged read), in one request."""
    fs, p = remote_fs(path, storage_options)
    what = "reading it" if start is None and end is None else "reading its header"
    return _call(fs, path, what, "cat_file", p, start=start, end=end)


def remote_head(path, storage_options=None):
    """The first :data:`HEADER_BYTES` of ``path`` (fewer for a smaller file)."""
    return read_remote(path, storage_options, start=0, end=HEADER_BYTES)


def open_remote(path, storage_options=None):
    """The whole file as a seekable in-memory binary file, named after ``path``."""
    buf = io.BytesIO(read_remote(path, storage_options))
    buf.name = path  # Pillow's messages name the file
    return buf


def remote_stamp(path, storage_options=None):
    """A version of the file (ETag, mtime or size), None when it cannot be read: a rewritten
    file must not reuse a result cached on the cluster. A stalled server raises."""
    try:
        fs, p = remote_fs(path, storage_options)
        info = _call(fs, path, "reading its version", "info", p)
    except RemoteTimeoutError:
        raise
    except Exception:  # noqa: BLE001 - unreadable files are reported by the header check
        return None
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "md5Hash"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return f"size={info.get('size')}"


def walk_remote(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[list[str], list[str], list[str]] | None:
    """``(urls, labels, loose)``: the files under ``url`` (class = parent folder name, at any
    depth) and the names of those lying directly in ``url`` (no class folder); None when
    ``url`` is not a folder."""
    fs, root = remote_fs(url, storage_options)
    root = root.rstrip("/")
    if not _call(fs, url, "listing it", "isdir", root):
        return None
    urls: list[str] = []
    labels: list[str] = []
    loose: list[str] = []
    for p in sorted(_call(fs, url, "listing it", "find", root, withdirs=False)):
        rel = p[len(root) :].lstrip("/")
        parts = rel.split("/")
        if any(part.startswith(".") for part in parts):
            continue  # hidden files and folders (.git, .ipynb_checkpoints) never hold data
        if len(parts) == 1:
            loose.append(rel)
            continue
        urls.append(fs.unstrip_protocol(p))
        labels.append(posixpath.basename(posixpath.dirname(p)))
    return urls, labels, loose
