"""read_images through fsspec against a real S3-compatible server (issue 15, item 6).

moto's server mode runs in a thread of this process, bound to 127.0.0.1 on a free port, and
s3fs talks HTTP to it: the same code path as a real S3 bucket (no mock of the file system or
of the client library). Before: ``read_images("s3://...")`` raised DatasetLayoutError, and S3
paths in a DataFrame became local paths.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import http.server
import os
import re
import threading
import time

import fsspec
import moto.server as moto_server
import numpy as np
import pandas as pd
import pytest
import s3fs  # declared test dependencies: when missing these tests fail rather than skip

from dasktrain.datasets import make_xray_like
from dasktrain.exceptions import DatasetLayoutError, ImageReadError, ValidationError
from dasktrain.images import read_images

#: The first bytes a remote header check asks for (dasktrain.images._remote.HEADER_BYTES).
HEADER_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """``(storage_options, local root, bucket url)``: a moto S3 server holding an image set."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "key": "testing",
        "secret": "testing",
        "endpoint_url": f"http://{host}:{port}",
        "use_listings_cache": False,
    }
    root = make_xray_like(tmp_path_factory.mktemp("xray"), n_per_class=12, size=40, seed=1)
    import boto3

    boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket="images")
    fs = s3fs.S3FileSystem(**options)
    fs.put(str(root / "train"), "images/xray/train", recursive=True)
    fs.pipe("images/xray/train/NORMAL/broken.png", b"not a png at all")
    one = next((root / "train" / "NORMAL").iterdir())
    fs.pipe("images/loose/a.png", one.read_bytes())
    try:
        yield options, root, "s3://images/xray/train"
    finally:
        server.stop()


def _local(root, **kw):
    return read_images(root / "train", size=32, color="gray", errors="skip", **kw)


def test_s3_folder_equals_the_local_folder(s3):
    options, root, url = s3
    with pytest.warns(Warning, match="1"):  # the broken file is skipped and reported
        remote = read_images(url, size=32, errors="skip", storage_options=options)
    local = read_images(root / "train", size=32)
    assert remote.classes == local.classes == ["NORMAL", "PNEUMONIA"]
    assert all(p.startswith("s3://images/xray/train/") for p in remote.paths)
    assert [p.rsplit("/", 2)[-2:] for p in remote.paths] == [p.split("/")[-2:] for p in local.paths]
    np.testing.assert_array_equal(remote.X, local.X)
    np.testing.assert_array_equal(remote.y, local.y)
    assert [p for p, _ in remote.skipped] == ["s3://images/xray/train/NORMAL/broken.png"]


def test_s3_on_the_dask_engine_headers_probed_on_the_workers(s3, as_default):
    from distributed import get_task_stream

    options, root, url = s3
    local = read_images(root / "train", size=32)
    with get_task_stream(client=as_default) as ts:
        with pytest.raises(ImageReadError, match="broken.png"):
            read_images(url, size=32, engine="dask", storage_options=options, chunk_size=8)
    assert any(t["key"].startswith("probe-images") for t in ts.data), "probed on the client"
    with pytest.warns(Warning):
        remote = read_images(
            url, size=32, engine="dask", storage_options=options, chunk_size=8, errors="skip"
        )
    assert remote.X.chunks[0] == (8, 8, len(local.y) - 16)
    np.testing.assert_array_equal(remote.X.compute(), local.X)  # decoded on the workers


def test_s3_paths_in_a_dataframe_stay_urls(s3):
    options, root, url = s3
    local = read_images(root / "train", size=32)
    urls = [url + "/" + "/".join(p.split("/")[-2:]) for p in local.paths]
    df = pd.DataFrame({"path": urls, "label": [local.classes[i] for i in local.y]})
    remote = read_images(df, size=32, storage_options=options)
    assert remote.paths == urls
    np.testing.assert_array_equal(remote.X, local.X)


def test_remote_errors_name_the_url(s3):
    options, _, url = s3
    with pytest.raises(DatasetLayoutError, match="s3://images/nothing-here.*not a folder"):
        read_images("s3://images/nothing-here", storage_options=options)
    with pytest.raises(DatasetLayoutError, match="lie directly in.*a.png"):
        read_images("s3://images/loose", storage_options=options)
    with pytest.raises(ValidationError, match="storage_options="):
        read_images(url, storage_options="anon")


def test_memory_filesystem(tmp_path):
    root = make_xray_like(tmp_path / "x", n_per_class=4, size=24, seed=2)
    fs = fsspec.filesystem("memory")
    fs.put(str(root / "train"), "/dt-test/train", recursive=True)
    try:
        remote = read_images("memory://dt-test/train", size=16)
        local = read_images(root / "train", size=16)
        np.testing.assert_array_equal(remote.X, local.X)
    finally:
        fs.rm("/dt-test", recursive=True)


@pytest.mark.parametrize("files_on", ["client", "workers"])
def test_memory_filesystem_on_workers_of_other_processes_says_why(tmp_path, files_on, as_default):
    # Issue 26, item 7: 12 FileNotFoundErrors from the workers, none saying that memory://
    # lives in the process that wrote it.
    root = make_xray_like(tmp_path / "x", n_per_class=4, size=24, seed=2)
    fs = fsspec.filesystem("memory")
    fs.put(str(root / "train"), "/dt-proc/train", recursive=True)
    try:
        with pytest.raises(ValidationError, match="memory filesystem, which lives in this process"):
            read_images("memory://dt-proc/train", size=16, engine="dask", files_on=files_on)
    finally:
        fs.rm("/dt-proc", recursive=True)


# --------------------------------------------------------------------------- over http
# Regressions (issue 27, item 7): the header check read whole files (a 300 MB non-image in
# memory:// added 305 MB); every file was fetched twice (60 images over http: 120 GETs and 180
# HEADs); a stalled HTTP server hung read_images for over 130 s while listing. Real servers:
# http.server in a thread of this process, counting what it is asked.


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, records every request, answers ``Range: bytes=a-b`` (as S3 and any
    web server do; http.server does not), and holds requests for ``stall_on`` paths."""

    def log_message(self, *args):
        pass

    def _hit(self, method):
        self.server.hits.append((method, self.path, self.headers.get("Range")))
        if any(self.path.endswith(s) for s in self.server.stall_on):
            self.server.release.wait(120)  # a server that accepted and never answers
            return True
        return False

    def do_HEAD(self):
        if not self._hit("HEAD"):
            super().do_HEAD()

    def do_GET(self):
        if self._hit("GET"):
            return
        rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        path = self.translate_path(self.path)
        if rng is None or not os.path.isfile(path):
            return super().do_GET()
        with open(path, "rb") as f:
            data = f.read()
        start, end = int(rng[1]), min(int(rng[2] or len(data) - 1), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(data[start : end + 1])


@contextlib.contextmanager
def _http_server(root, stall_on=()):
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    server.hits, server.stall_on, server.release = [], tuple(stall_on), threading.Event()
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def _requests(server, suffix=".png"):
    """``{(method, ranged): count}`` of the requests for image files."""
    return collections.Counter((m, r is not None) for m, p, r in server.hits if p.endswith(suffix))


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = make_xray_like(tmp_path_factory.mktemp("web"), n_per_class=40, size=40, seed=4)
    return root  # train/ holds 60 images


def test_http_folder_fetches_each_file_once_and_probes_headers_with_ranges(http_root):
    local = read_images(http_root / "train", size=32)
    assert len(local.paths) == 60
    with _http_server(http_root) as (server, base):
        remote = read_images(f"{base}/train", size=32)
    np.testing.assert_array_equal(remote.X, local.X)
    n = _requests(server)
    assert n[("GET", False)] == 60, n  # each file's content once
    assert n[("GET", True)] <= 60 and n[("HEAD", False)] == 0, n  # headers by ranged reads
    assert all(r == f"bytes=0-{HEADER_BYTES - 1}" for m, _, r in server.hits if r), server.hits


def test_http_on_the_dask_engine_fetches_each_file_once(http_root, as_default):
    local = read_images(http_root / "train", size=32)
    with _http_server(http_root) as (server, base):
        remote = read_images(f"{base}/train", size=32, engine="dask", chunk_size=16)
        np.testing.assert_array_equal(remote.X.compute(), local.X)
    n = _requests(server)
    assert n[("GET", False)] == 60, n
    assert n[("GET", True)] <= 60, n
    assert n[("HEAD", False)] <= 60, n  # the version (ETag, Last-Modified) of each file


def test_a_jpeg_whose_header_is_past_the_first_bytes_is_read(tmp_path):
    # A large ICC profile (Pillow splits it into APP2 segments) puts the JPEG's frame header
    # past the ranged read: the file is then read whole, once, and decoded like on disk.
    from PIL import Image

    root = make_xray_like(tmp_path / "x", n_per_class=4, size=24, seed=2)
    folder = root / "train" / "NORMAL"
    Image.open(next(folder.iterdir())).convert("L").save(
        folder / "big_header.jpg", icc_profile=b"\0" * (3 * HEADER_BYTES)
    )
    local = read_images(root / "train", size=16)
    with _http_server(root) as (server, base):
        remote = read_images(f"{base}/train", size=16)
    np.testing.assert_array_equal(remote.X, local.X)
    assert any(p.endswith("big_header.jpg") for p in remote.paths)
    assert _requests(server, ".jpg") == {("GET", True): 1, ("GET", False): 2}  # probe, decode


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_stalled_http_listing_times_out_naming_the_url(http_root, engine, as_default):
    import dask

    from dasktrain.exceptions import RemoteTimeoutError

    with _http_server(http_root, stall_on=("/train", "/train/")) as (_, base):
        t0 = time.perf_counter()
        with dask.config.set({"dasktrain.images.remote-timeout": "2s"}):
            with pytest.raises(RemoteTimeoutError, match=rf"{base}/train.*2 s.*remote-timeout"):
                read_images(f"{base}/train", engine=engine)
        assert time.perf_counter() - t0 < 10


def test_stalled_http_file_read_times_out_naming_the_file(http_root):
    import dask

    from dasktrain.exceptions import RemoteTimeoutError

    with _http_server(http_root, stall_on=("normal_0012.png",)) as (_, base):
        t0 = time.perf_counter()
        with dask.config.set({"dasktrain.images.remote-timeout": "2s"}):
            with pytest.raises(RemoteTimeoutError, match=r"normal_0012\.png.*2 s"):
                read_images(f"{base}/train", errors="skip")  # a stall is not a bad file
        assert time.perf_counter() - t0 < 10


def test_big_non_image_in_memory_is_not_read_whole(tmp_path):
    import tracemalloc

    root = make_xray_like(tmp_path / "x", n_per_class=4, size=24, seed=2)
    fs = fsspec.filesystem("memory")
    fs.put(str(root / "train"), "/dt-big/train", recursive=True)
    with fs.open("/dt-big/train/NORMAL/huge.png", "wb") as f:  # as fs.put writes files
        for _ in range(300):
            f.write(b"\0" * 2**20)  # 300 MB, not an image
    try:
        tracemalloc.start()
        with pytest.warns(Warning, match="1 unreadable"):
            remote = read_images("memory://dt-big/train", size=16, errors="skip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        fs.rm("/dt-big", recursive=True)
    assert [p.rsplit("/", 2)[-2:] for p, _ in remote.skipped] == [["NORMAL", "huge.png"]]
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB allocated while reading"
