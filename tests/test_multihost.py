"""Every step across hosts gives what it gives on one host (the multi-host rig, tests/multihost.py).

The one-host reference is the session LocalCluster (2 workers x 1 thread); the rig has the
same shape over three "hosts": the client and the scheduler here, one worker in each of two
network namespaces. Same inputs and same partitions, so: decoded images and KMeans, XGBoost,
cross-validation and DDP results are identical, features within 1e-5.

Each step's time on one host and across hosts is recorded; set ``DASKTRAIN_MULTIHOST_TIMES`` to
a file name to get them as JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cloudpickle
import multihost as mh
import numpy as np
import pytest

pytest.importorskip("torch")

# Rank processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]
SIZE, N_PER_CLASS, CHUNK = 64, 40, 16
TIMES = {}


@contextlib.contextmanager
def timed(step, where):
    t0 = time.perf_counter()
    yield
    TIMES.setdefault(step, {})[where] = round(time.perf_counter() - t0, 3)


@pytest.fixture(scope="module", autouse=True)
def _write_times():
    yield
    path = os.environ.get("DASKTRAIN_MULTIHOST_TIMES")
    if path and TIMES:
        Path(path).write_text(json.dumps(TIMES, indent=2))


# ---------------------------------------------------------------- the rig and the data


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("multihost")


@pytest.fixture(scope="module")
def image_root(base):
    """X-ray-like images on a disk every host can see (tmp is shared by the namespaces)."""
    from dasktrain.datasets import make_xray_like

    return make_xray_like(base / "disk" / "xray", n_per_class=N_PER_CLASS, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def rig(base, image_root):
    """Scheduler + client here, one worker on each of two other hosts; ``base/disk`` is also
    mounted at ``rig.worker_only_path`` on the worker hosts only."""
    reason = mh.unavailable()
    if reason:
        mh.skip_or_fail(reason)
    rig = mh.Rig(base / "rig", n_workers=2, worker_only=base / "disk")
    try:
        rig.start()
        yield rig
    finally:
        rig.close()


@pytest.fixture(scope="module")
def rig_client(rig):
    with rig.client() as c:
        yield c


@pytest.fixture(scope="module")
def images(image_root):
    """The images decoded locally: the common input of the steps after reading."""
    from dasktrain.images import read_images

    ds = read_images(image_root, size=SIZE, engine="local")
    return ds.X, ds.y


@pytest.fixture(scope="module")
def features(images):
    """512 CNN features per image (local engine): the common input of the model steps."""
    from dasktrain.features import CNNFeatures

    X, y = images
    return CNNFeatures("resnet18", engine="local", n_threads=1).fit_transform(X), y


def _both(client, rig_client):
    return (("one host", client), ("across hosts", rig_client))


# ---------------------------------------------------------------- the rig itself


def _whoami():
    import socket

    import psutil

    name = socket.gethostname()
    return {
        "hostname": name,
        "resolves_to": socket.gethostbyname(name),
        "lo_up": psutil.net_if_stats()["lo"].isup,
        "interfaces": sorted(psutil.net_if_addrs()),
        "pid": os.getpid(),
    }


def test_the_rig_is_several_hosts(rig, rig_client):
    import psutil

    seen = rig_client.run(_whoami)
    hosts = {h.ip: h for h in rig.hosts[1:]}
    assert sorted(a.split("//")[1].rsplit(":", 1)[0] for a in seen) == sorted(hosts)
    for address, info in seen.items():
        host = hosts[address.split("//")[1].rsplit(":", 1)[0]]
        assert info["hostname"] == host.hostname != rig.hosts[0].hostname
        # Debian's /etc/hosts: the host name is a loopback address (what tripped gloo)
        assert info["resolves_to"] == "127.0.1.1"
        assert info["lo_up"]
        assert info["interfaces"] == sorted(["lo", host.ifname])
    # the workers are not in the client's process tree: psutil here cannot follow them
    tree = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not tree & {info["pid"] for info in seen.values()}
    # the scheduler listens on host 0's address only
    assert rig.scheduler_address.startswith(f"tcp://{rig.hosts[0].ip}:")


def test_the_rig_tears_everything_down_even_when_the_test_fails(base):
    reason = mh.unavailable()
    if reason:
        mh.skip_or_fail(reason)
    rig = mh.Rig(base / "teardown", n_workers=1)
    with pytest.raises(RuntimeError, match="a failing test"):
        with rig:
            names = [h.ns for h in rig.hosts[1:]]
            bridge, pids = rig.bridge, list(rig.processes.values())
            raise RuntimeError("a failing test")
    assert not set(names) & set(mh._netns_list())
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not re.search(rf"\b{bridge}(h\d+)?\b", links)
    assert not [p for p in pids if rig._group_alive(p)]
    assert not any(Path("/etc/netns", n).exists() for n in names)


def test_what_a_killed_test_run_left_is_removed_by_the_next(base):
    reason = mh.unavailable()
    if reason:
        mh.skip_or_fail(reason)
    code = textwrap.dedent(f"""
        import json, time, multihost
        rig = multihost.Rig({str(base / "killed")!r}, n_workers=1).start()
        names = [h.ns for h in rig.hosts[1:]]
        print(json.dumps([rig.bridge, names, list(rig.processes.values())]), flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, stdout=subprocess.PIPE, text=True
    )
    try:
        bridge, names, pids = json.loads(proc.stdout.readline())
    finally:
        proc.kill()  # the test run dies without any teardown
        proc.wait()
    assert set(names) <= set(mh._netns_list()) and all(mh.Rig._group_alive(p) for p in pids)
    mh.clean_stale()
    deadline = time.monotonic() + 30
    while any(mh.Rig._group_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if mh.Rig._group_alive(p)]
    assert not set(names) & set(mh._netns_list())
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not re.search(rf"\b{bridge}(h\d+)?\b", links)


def test_without_the_rights_the_rig_says_why_and_ci_fails(monkeypatch):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to try as an unprivileged user")
    # The unprivileged process must be able to read the rig's module: the clone may sit in a
    # folder only root can enter (`mktemp -d` makes them 0700, and so is root's home), so the
    # module is copied into a folder of its own that everyone can read.
    with tempfile.TemporaryDirectory(prefix="multihost-") as readable:
        os.chmod(readable, 0o755)
        shutil.copy(Path(mh.__file__), readable)
        code = f"import sys; sys.path.insert(0, {readable!r}); import multihost; "
        code += "print(multihost.unavailable())"
        proc = subprocess.run(
            [
                setpriv,
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
            ],
            cwd=readable,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert "needs root" in proc.stdout, proc.stderr
    monkeypatch.delenv(mh.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        mh.skip_or_fail("the rig needs root")
    monkeypatch.setenv(mh.REQUIRE_ENV, "require")
    with pytest.raises(pytest.fail.Exception, match="require but the rig needs root"):
        mh.skip_or_fail("the rig needs root")


# ---------------------------------------------------------------- every step across hosts


def test_read_images(client, rig_client, image_root):
    from dasktrain.images import read_images

    out = {}
    for where, c in _both(client, rig_client):
        with timed("read_images(engine='dask')", where), c.as_current():
            ds = read_images(image_root, size=SIZE, engine="dask", chunk_size=CHUNK)
            out[where] = ds.to_numpy(client=c)
    assert out["one host"].X.shape == (2 * N_PER_CLASS, SIZE, SIZE, 1)
    np.testing.assert_array_equal(out["one host"].X, out["across hosts"].X)
    np.testing.assert_array_equal(out["one host"].y, out["across hosts"].y)


def test_read_images_from_files_only_the_workers_have(client, rig, rig_client, image_root):
    from dasktrain.exceptions import DatasetLayoutError
    from dasktrain.images import read_images

    hidden = rig.worker_only_path / image_root.name
    assert not hidden.exists()  # not on the client's host
    with rig_client.as_current():
        with pytest.raises(DatasetLayoutError, match=r"files_on='workers'"):
            read_images(hidden, size=SIZE, engine="dask")
        with timed("read_images(files_on='workers')", "across hosts"):
            ds = read_images(hidden, size=SIZE, engine="dask", chunk_size=CHUNK, files_on="workers")
            there = ds.to_numpy(client=rig_client)
    assert all(p.startswith(str(hidden)) for p in there.paths)
    with client.as_current(), timed("read_images(files_on='workers')", "one host"):
        here = read_images(
            image_root, size=SIZE, engine="dask", chunk_size=CHUNK, files_on="workers"
        ).to_numpy(client=client)
    np.testing.assert_array_equal(here.X, there.X)
    np.testing.assert_array_equal(here.y, there.y)
    assert here.classes == there.classes


@pytest.mark.parametrize("kind", ["cnn", "hog"])
def test_features(client, rig_client, images, kind):
    import dask.array as da

    from dasktrain.features import CNNFeatures, HOGFeatures

    X, _ = images
    Xd = da.from_array(X, chunks=CHUNK)
    make = {
        "cnn": lambda: CNNFeatures("resnet18", engine="dask"),
        "hog": lambda: HOGFeatures(engine="dask"),
    }[kind]
    out = {}
    for where, c in _both(client, rig_client):
        with timed(f"{kind.upper()} features", where):
            out[where] = c.compute(make().fit(Xd).transform(Xd, client=c)).result()
    assert out["one host"].shape[1] >= 512
    np.testing.assert_allclose(out["one host"], out["across hosts"], atol=1e-5, rtol=0)


def test_kmeans(client, rig_client, features):
    import dask.array as da

    from dasktrain.models import KMeans

    F, _ = features
    out = {}
    for where, c in _both(client, rig_client):
        with timed("KMeans (k=8)", where):
            km = KMeans(8, random_state=0, client=c).fit(da.from_array(F, chunks=20))
            out[where] = (km.cluster_centers_, km.inertia_, c.compute(km.labels_).result())
    (c1, i1, l1), (c2, i2, l2) = out["one host"], out["across hosts"]
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(c1, c2)
    assert i1 == i2


def test_xgboost(client, rig_client, features):
    # Across hosts this failed until the tracker was bound to the scheduler's address:
    # xgboost.dask put it on the default route's address, unreachable from the workers.
    import dask.array as da

    from dasktrain.models import XGBClassifier

    F, y = features
    out = {}
    for where, c in _both(client, rig_client):
        with timed("XGBoost", where):
            m = XGBClassifier(n_estimators=10, max_depth=3, engine="dask", client=c)
            m.fit(da.from_array(F, chunks=20), da.from_array(y, chunks=20))
            out[where] = m.predict_proba(F)
    np.testing.assert_array_equal(out["one host"], out["across hosts"])


@pytest.mark.parametrize("name", ["LogisticRegression", "GaussianNB", "MLPClassifier"])
def test_cross_validate(client, rig_client, features, name):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dasktrain import models

    F, y = features
    kw = {
        "LogisticRegression": {"max_iter": 300},
        "GaussianNB": {},
        "MLPClassifier": {"hidden_layer_sizes": (32,), "max_iter": 60, "random_state": 0},
    }
    out = {}
    for where, c in _both(client, rig_client):
        est = make_pipeline(StandardScaler(), getattr(models, name)(engine="local", **kw[name]))
        with timed(f"{name} cross_validate", where):
            out[where] = models.cross_validate(est, F, y, cv=3, engine="dask", client=c)
    np.testing.assert_array_equal(out["one host"]["test_score"], out["across hosts"]["test_score"])


def _train_and_look(X, y, **kw):
    """train_classifier, plus where this rank's sockets listen and which interface gloo uses."""
    import psutil

    import dasktrain.ddp as ddp
    from dasktrain.ddp.recipes import train_classifier

    out = train_classifier(X, y, **kw)
    proc = psutil.Process()
    conns = (
        proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    )  # psutil < 6
    listening = sorted(
        {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    )
    return {
        "history": out["history"],
        "rank": ddp.rank_info().rank,
        "listening": listening,
        "ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
        "master": (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])),
    }


def test_ddp(client, rig, rig_client, images):
    # Across hosts this failed with "Gloo connectFullMesh failed ... remote=[127.0.0.1]":
    # gloo took the address of the host name (127.0.1.1 here, as on Debian).
    import dasktrain.ddp as ddp

    X, y = images
    kw = dict(
        X_val=X[::4], y_val=y[::4], model="smallcnn", epochs=2, batch_size=16, lr=0.01, seed=3
    )
    out = {}
    for where, c in _both(client, rig_client):
        with timed("ddp.run (smallcnn, 2 epochs, gloo)", where):
            out[where] = ddp.run(
                _train_and_look, X, y, client=c, timeout=180, port_range=(29500, 29599), **kw
            )
    one, across = out["one host"], out["across hosts"]
    assert [h["loss"] for h in one[0]["history"]] == [h["loss"] for h in across[0]["history"]]
    accuracy = [[h["accuracy"] for h in r[0]["history"]] for r in (one, across)]
    assert accuracy[0] == accuracy[1]
    by_ip = {h.ip: h for h in rig.hosts[1:]}
    rank0_ip = across.workers[0].split("//")[1].rsplit(":", 1)[0]
    for rank, value in across.items():
        ip = across.workers[rank].split("//")[1].rsplit(":", 1)[0]
        # each rank's interface is its own worker's (the two hosts name theirs differently)
        assert value["ifname"] == by_ip[ip].ifname
        assert value["master"][0] == rank0_ip
        # nothing listens on all interfaces or on loopback: only on this host's address
        assert {a for a, _ in value["listening"]} == {ip}, value["listening"]
    port = across[0]["master"][1]
    assert (rank0_ip, port) in across[0]["listening"]


def test_ddp_shards_are_read_on_each_host(client, rig, rig_client, image_root):
    # datasets=: each rank decodes its own chunks of a lazy ImageSet on its own host (the
    # feeder beside it); nothing of the images comes to the client. Lazy chunks are dealt by
    # the seed alone, so both clusters train on the same rows in the same steps.
    import dasktrain.ddp as ddp
    from dasktrain.ddp.recipes import train_classifier
    from dasktrain.images import read_images

    kw = dict(model="smallcnn", epochs=2, batch_size=16, lr=0.01, seed=3, window=2)
    out = {}
    for where, c in _both(client, rig_client):
        with c.as_current():
            imgs = read_images(image_root, size=SIZE, engine="dask", chunk_size=CHUNK, shuffle=1)
        with timed("ddp.run(datasets=) (smallcnn, 2 epochs, gloo)", where):
            out[where] = ddp.run(
                train_classifier,
                client=c,
                datasets={"train": imgs, "val": imgs},
                timeout=180,
                port_range=(29500, 29599),
                **kw,
            )
    one, across = out["one host"], out["across hosts"]
    assert len(one[0]["history"]) == 2
    for key in ("loss", "train_accuracy", "accuracy"):
        assert [h[key] for h in one[0]["history"]] == [h[key] for h in across[0]["history"]]
    hosts = {across.workers[r].split("//")[1].rsplit(":", 1)[0] for r in across}
    assert hosts == {h.ip for h in rig.hosts[1:]}  # one rank on each worker host


def _listening():
    import psutil

    proc = psutil.Process()
    conns = (
        proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
    )  # psutil < 6
    return sorted({(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN})


def _tf_train_and_look(X, y):
    """train_cnn under dasktrain.tf, plus TF_CONFIG and where this process listens."""
    from dasktrain.tf.recipes import train_cnn

    out = train_cnn(X, y, epochs=2, batch_size=16, lr=0.01, seed=3)
    config = json.loads(os.environ["TF_CONFIG"])
    return {"history": out["history"], "config": config, "listening": _listening()}


def test_tf_run(client, rig, rig_client, images):
    # TensorFlow's MultiWorkerMirroredStrategy across hosts: TF_CONFIG names each worker's
    # own address (from the rendezvous at MASTER_PORT), and training matches one host.
    pytest.importorskip("tensorflow")
    import dasktrain.tf as dtf

    X, y = images
    out = {}
    for where, c in _both(client, rig_client):
        with timed("tf.run (keras smallcnn, custom loop, 2 epochs)", where):
            out[where] = dtf.run(
                _tf_train_and_look, X, y, client=c, timeout=240, all_interfaces=True
            )
    one, across = out["one host"], out["across hosts"]
    np.testing.assert_allclose(
        [h["loss"] for h in one[0]["history"]],
        [h["loss"] for h in across[0]["history"]],
        rtol=1e-5,
    )
    ips = [across.workers[r].split("//")[1].rsplit(":", 1)[0] for r in sorted(across)]
    assert set(ips) == {h.ip for h in rig.hosts[1:]}
    for rank, value in across.items():
        workers = value["config"]["cluster"]["worker"]
        assert [w.rsplit(":", 1)[0] for w in workers] == ips
        assert value["config"]["task"] == {"type": "worker", "index": rank}
        # Ours listen on the worker's address only; TensorFlow's gRPC server (its port in
        # TF_CONFIG) listens on every interface: it takes no address (see the TF guide).
        tf_port = int(workers[rank].rsplit(":", 1)[1])
        others = {(a, p) for a, p in value["listening"] if a != ips[rank]}
        assert others <= {("::", tf_port), ("0.0.0.0", tf_port)}, value["listening"]


def test_keras_through_ddp(client, rig, rig_client, images):
    # A Keras model on the torch backend is a torch module: ddp.run across hosts as for torch.
    pytest.importorskip("keras")
    import dasktrain.ddp as ddp
    from dasktrain.ddp.recipes_keras import train_keras_classifier

    X, y = images
    kw = dict(X_val=X[::4], y_val=y[::4], epochs=2, batch_size=16, lr=0.01, seed=3)
    out = {}
    for where, c in _both(client, rig_client):
        with timed("ddp.run (keras smallcnn on torch, 2 epochs)", where):
            out[where] = ddp.run(train_keras_classifier, X, y, client=c, timeout=240, **kw)
    one, across = out["one host"], out["across hosts"]
    np.testing.assert_allclose(
        [h["loss"] for h in one[0]["history"]],
        [h["loss"] for h in across[0]["history"]],
        rtol=1e-5,
    )
    assert [h["accuracy"] for h in one[0]["history"]] == [
        h["accuracy"] for h in across[0]["history"]
    ]


def test_compare_says_the_remote_workers_are_measured_by_dask(rig, rig_client, features, tmp_path):
    import dasktrain
    from dasktrain.harness.report.page import write_report

    with timed("compare(['kmeans', 'logreg'], repeat=1)", "across hosts"):
        res = dasktrain.compare(
            ["kmeans", "logreg"],
            data=features,
            engines=("local", "dask"),
            repeat=1,
            client=rig_client,
            warmup=False,
            performance_report=False,
            interval=0.2,
        )
    assert set(res.runs.status) == {"ok"}, res.runs[["workload", "engine", "error"]]
    s = res.samples
    remote = s[s.source == "dask"]
    workers = set(rig_client.nthreads())
    # Every remote worker is heard, even in a run shorter than its monitor's interval (the
    # monitor takes a last sample on each at the end).
    assert set(remote.process) == workers
    assert set(remote.host) == {h.hostname for h in rig.hosts[1:]}
    # the machine's own processes stay psutil's, with this host's name
    assert set(s.loc[s.source == "psutil", "host"]) == {rig.hosts[0].hostname}
    html = write_report(res, tmp_path / "report.html").read_text()
    assert "measured by Dask" in html
    assert all(h.hostname in html for h in rig.hosts[1:])


def _tls_steps(c, image_root, y):
    """read_images -> HOG -> XGBoost, and an MLP under ddp.run, on the cluster of ``c``."""
    import dasktrain.ddp as ddp
    from dasktrain.features import HOGFeatures
    from dasktrain.images import read_images
    from dasktrain.models import XGBClassifier

    with c.as_current():
        ds = read_images(image_root, size=SIZE, engine="dask", chunk_size=CHUNK)
        F = HOGFeatures(engine="dask").fit_transform(ds.X)
        model = XGBClassifier(n_estimators=5, max_depth=3, engine="dask", client=c).fit(F, ds.y)
        X, F = ds.to_numpy(client=c).X, c.compute(F).result()
        proba = model.predict_proba(F)
        res = ddp.run(
            _train_and_look,
            X.reshape(len(X), -1),
            y,
            client=c,
            timeout=180,
            model="mlp",
            epochs=1,
            batch_size=16,
        )
    return X, F, proba, res[0]["history"][0]["loss"]


def test_tls_cluster_across_hosts(client, base, image_root, images):
    reason = mh.unavailable()
    if reason:
        mh.skip_or_fail(reason)
    step = "TLS: read_images + HOG + XGBoost + ddp.run (mlp)"
    with mh.Rig(base / "tls", n_workers=2, tls=True) as rig, rig.client() as tc:
        assert rig.scheduler_address.startswith("tls://")
        assert all(a.startswith("tls://") for a in tc.nthreads())
        with timed(step, "across hosts"):
            across = _tls_steps(tc, image_root, images[1])
    with timed(step, "one host"):
        one = _tls_steps(client, image_root, images[1])
    np.testing.assert_array_equal(one[0], across[0])
    np.testing.assert_allclose(one[1], across[1], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(one[2], across[2])
    assert one[3] == across[3]


# ---------------------------------------------------------------- files_on="workers" (no rig)


def test_files_on_workers_arguments(client, image_root, tmp_path):
    from dasktrain.exceptions import DatasetLayoutError, ValidationError
    from dasktrain.images import read_images

    with client.as_current():
        with pytest.raises(ValidationError, match="files_on='nowhere'"):
            read_images(image_root, files_on="nowhere", engine="dask")
        with pytest.raises(ValidationError, match="needs engine='dask'"):
            read_images(image_root, files_on="workers")
        with pytest.raises(ValidationError, match="absolute path"):
            read_images("xray", files_on="workers", engine="dask")
        missing = tmp_path / "nowhere"
        with pytest.raises(DatasetLayoutError, match=r"not a folder on 2 of 2 workers"):
            read_images(missing, files_on="workers", engine="dask")
    # the client's own check says what to do when the folder is elsewhere
    with pytest.raises(DatasetLayoutError, match=r"not a folder.*files_on='workers'"):
        read_images(missing, engine="local")


# ---------------------------------------------------------------- docs/deploying.rst


DOC_VALUES = {
    "scheduler": "10.0.0.1",
    "workers": ["10.0.0.2", "10.0.0.3"],
    "tls": {"ca": "ca.pem", "cert": "node.pem", "key": "node-key.pem"},
}
WALKTHROUGH_MARK = "# two machines: the client"


def _doc():
    return (ROOT / "docs" / "deploying.rst").read_text()


def test_the_walkthrough_shows_the_commands_the_rig_runs():
    text = " ".join(_doc().split())  # the page wraps long commands with "\"
    text = text.replace("\\ ", "")
    s = DOC_VALUES["scheduler"]
    wanted = [mh.scheduler_command(s), mh.scheduler_command(s, tls=DOC_VALUES["tls"])]
    for w in DOC_VALUES["workers"]:
        wanted.append(mh.worker_command(f"tcp://{s}:8786", w))
        wanted.append(mh.worker_command(f"tls://{s}:8786", w, tls=DOC_VALUES["tls"]))
    missing = [shlex.join(cmd) for cmd in wanted if shlex.join(cmd) not in text]
    assert not missing, "docs/deploying.rst does not show:\n" + "\n".join(missing)


def _walkthrough_code():
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", _doc())
    code = [textwrap.dedent(b) for b in blocks if WALKTHROUGH_MARK in b]
    assert len(code) == 1, "the walk-through's client code block is missing"
    return code[0]


def test_the_walkthrough_client_code_runs_against_the_rig(rig, image_root):
    code = _walkthrough_code()
    code = code.replace("tcp://10.0.0.1:8786", rig.scheduler_address)
    code = code.replace("/data/xray", str(rig.worker_only_path / image_root.name))
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    with timed("docs walk-through (client code)", "across hosts"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=400,
            env=env,
            cwd=rig.tmp,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "workers: 2" in proc.stdout and "final loss" in proc.stdout, proc.stdout
