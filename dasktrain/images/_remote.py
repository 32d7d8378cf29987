"""Remote images through fsspec: ``s3://``, ``gs://``, ``http(s)://``, ``memory://`` ...

A path with a protocol other than ``file`` is remote. Its folder is listed with the
filesystem's ``find``, and each file is read whole into memory before Pillow opens it (images
are small, and a remote file's seek is a request). The ``storage_options`` of the call (keys,
an endpoint) go to ``fsspec.core.url_to_fs`` on the client and, with the tasks, on the
workers. Local paths never come here: they keep the regular-file checks of ``_decode``.
"""

from __future__ import annotations

import io
import posixpath

__all__ = ["is_remote", "remote_fs", "open_remote", "remote_stamp", "walk_remote"]


def is_remote(path):
    """True for a string with a protocol other than ``file://`` / ``local://``."""
    if not isinstance(path, str) or "://" not in path:
        return False
    return path.split("://", 1)[0].lower() not in ("file", "local")


def remote_fs(path, storage_options=None):
    """``(filesystem, path without protocol)`` for ``path``."""
    from fsspec.core import url_to_fs

    return url_to_fs(path, **(storage_options or {}))


def open_remote(path, storage_options=None):
    """The whole file as a seekable in-memory binary file, named after ``path``."""
    fs, p = remote_fs(path, storage_options)
    with fs.open(p, "rb") as f:
        data = f.read()
    buf = io.BytesIO(data)
    buf.name = path  # Pillow's messages name the file
    return buf


def remote_stamp(path, storage_options=None):
    """A version of the file (ETag, mtime or size), None when it cannot be read: a rewritten
    file must not reuse a result cached on the cluster."""
    try:
        fs, p = remote_fs(path, storage_options)
        info = fs.info(p)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the header check
        return None
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "md5Hash"):
        if info.get(key) is not None:
            return f"{key}={info[key]}"
    return f"size={info.get('size')}"


def walk_remote(url, storage_options=None):
    """``(urls, labels, loose)``: the files under ``url`` (class = parent folder name, at any
    depth) and the names of those lying directly in ``url`` (no class folder)."""
    fs, root = remote_fs(url, storage_options)
    root = root.rstrip("/")
    if not fs.isdir(root):
        return None
    urls, labels, loose = [], [], []
    for p in sorted(fs.find(root, withdirs=False)):
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
