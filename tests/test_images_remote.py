"""read_images through fsspec against a real S3-compatible server (issue 15, item 6).

moto's server mode runs in a thread of this process, bound to 127.0.0.1 on a free port, and
s3fs talks HTTP to it: the same code path as a real S3 bucket (no mock of the file system or
of the client library). Before: ``read_images("s3://...")`` raised DatasetLayoutError, and S3
paths in a DataFrame became local paths.
"""

from __future__ import annotations

import fsspec
import moto.server as moto_server
import numpy as np
import pandas as pd
import pytest
import s3fs  # declared test dependencies: when missing these tests fail rather than skip

from dasktrain.datasets import make_xray_like
from dasktrain.exceptions import DatasetLayoutError, ImageReadError, ValidationError
from dasktrain.images import read_images


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
