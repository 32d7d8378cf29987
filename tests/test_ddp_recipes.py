"""ddp.recipes.train_classifier: the demo's CNN learns the X-ray-like images, on both engines."""

from __future__ import annotations

import numpy as np
import pytest

from dasktrain.exceptions import ValidationError

torch = pytest.importorskip("torch")

from dasktrain import ddp  # noqa: E402
from dasktrain.ddp.recipes import train_classifier  # noqa: E402

# The recipe of the ddp_cnn workload (harness/workloads/ddp.py): keep them in step.
RECIPE = dict(model="smallcnn", epochs=12, batch_size=16, lr=1e-2, seed=0)


@pytest.fixture(scope="module")
def xray(tmp_path_factory):
    """The demo's training images (64 x 64 gray, 300 per class), split 3:1 as ddp_cnn does."""
    from sklearn.model_selection import train_test_split

    from dasktrain.datasets import make_xray_like
    from dasktrain.images import read_images

    root = make_xray_like(tmp_path_factory.mktemp("x") / "x", n_per_class=400, size=64, seed=0)
    iset = read_images(root / "train", size=64, color="gray", engine="local")
    X, y = np.asarray(iset.X), np.asarray(iset.y)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def test_smallcnn_learns_the_demo_images(xray):
    # Regression: the demo's ddp_cnn ended at accuracy 0.5 (chance) on both engines: raw
    # pixels, an averaged head and a constant rate did not learn in the demo's epochs.
    Xtr, Xte, ytr, yte = xray
    torch.set_num_threads(1)
    out = ddp.run_local(train_classifier, Xtr, ytr, X_val=Xte, y_val=yte, **RECIPE)[0]
    acc = [h["accuracy"] for h in out["history"]]
    assert len(acc) == RECIPE["epochs"] and acc[-1] >= 0.85, acc


def test_the_recipe_is_the_ddp_cnn_workload_s():
    from dasktrain.harness.settings import WorkloadOptions

    opts = WorkloadOptions()
    assert (opts.ddp_model, opts.epochs, opts.ddp_batch_size, opts.ddp_lr) == (
        RECIPE["model"],
        RECIPE["epochs"],
        RECIPE["batch_size"],
        RECIPE["lr"],
    )


@pytest.mark.parametrize("seed", [24, 26])
def test_the_recipe_learns_whatever_the_seed(xray, seed):
    # Regression: at 8 epochs these seeds ended at 0.847 and 0.82 (2 in 40), and a 2-rank
    # run from shards at 0.76 in CI: the one-cycle warm-up left too few steps to settle.
    Xtr, Xte, ytr, yte = xray
    torch.set_num_threads(1)
    kw = {**RECIPE, "seed": seed}
    out = ddp.run_local(train_classifier, Xtr, ytr, X_val=Xte, y_val=yte, **kw)[0]
    acc = [h["accuracy"] for h in out["history"]]
    assert acc[-1] >= 0.85, acc


def test_smallcnn_learns_on_two_ranks(xray, client):
    Xtr, Xte, ytr, yte = xray
    res = ddp.run(
        train_classifier, Xtr, ytr, X_val=Xte, y_val=yte, client=client, timeout=240, **RECIPE
    )
    acc = [h["accuracy"] for h in res[0]["history"]]
    assert acc[-1] >= 0.85, acc
    assert res[0]["history"][-1]["accuracy"] == res[1]["history"][-1]["accuracy"]


@pytest.mark.parametrize(
    "kw", [{"normalize": "global"}, {"pool": "sum"}, {"schedule": "cosine"}], ids=str
)
def test_bad_recipe_options_name_the_choices(kw):
    X = np.zeros((8, 16, 16, 1), np.float32)
    y = np.arange(8) % 2
    name, value = next(iter(kw.items()))
    with pytest.raises(ValidationError, match=f"{name}={value!r} must be one of"):
        train_classifier(X, y, model="smallcnn", epochs=1, **kw)


def test_image_standardisation_ignores_exposure():
    from dasktrain.ddp._recipe_data import _standardize_tensor, standardize

    rng = np.random.default_rng(0)
    X = rng.random((4, 8, 8, 1), dtype=np.float32)
    Z = standardize(X)
    np.testing.assert_allclose(standardize(0.5 * X + 0.2), Z, atol=1e-4)
    np.testing.assert_allclose(Z.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    # a shard's batches are standardised as they arrive: the same numbers as the arrays
    np.testing.assert_allclose(_standardize_tensor(torch.from_numpy(X)).numpy(), Z, atol=1e-6)


@pytest.fixture(scope="module")
def xray_on_cluster(xray, client):
    """The same split persisted on the session cluster in 8 chunks, as ddp_cnn's dask engine."""
    from dasktrain._dask import to_cluster

    Xtr, Xte, ytr, yte = xray
    Xtr, ytr, Xte, yte = to_cluster(client, Xtr, ytr, Xte, yte, n_blocks=8)
    return {"train": (Xtr, ytr), "val": (Xte, yte)}


def test_smallcnn_learns_from_shards_on_two_ranks_and_in_the_twin(xray_on_cluster, client):
    res = ddp.run(
        train_classifier,
        client=client,
        datasets=xray_on_cluster,
        num_classes=2,
        timeout=300,
        **RECIPE,
    )
    acc = [h["accuracy"] for h in res[0]["history"]]
    assert acc[-1] >= 0.85, acc
    for key in ("accuracy", "loss", "val_loss"):  # reduced over all ranks: the same on each
        assert [h[key] for h in res[0]["history"]] == [h[key] for h in res[1]["history"]]
    assert res[0]["global_batch_size"] == RECIPE["batch_size"]
    torch.set_num_threads(1)
    twin = ddp.run_local(train_classifier, datasets=xray_on_cluster, num_classes=2, **RECIPE)[0]
    assert [h["accuracy"] for h in twin["history"]][-1] >= 0.85


def test_shards_need_num_classes_unless_an_imageset():
    import dask.array as da

    X = da.zeros((8, 4), chunks=4)
    y = da.zeros(8, chunks=4, dtype=int)
    with pytest.raises(ValidationError, match="needs num_classes="):
        ddp.run_local(train_classifier, datasets={"train": (X, y)}, model="mlp", epochs=1)
    with pytest.raises(ValidationError, match="needs images"):
        ddp.run_local(train_classifier, datasets={"train": (X, y)}, num_classes=2, epochs=1)
    with pytest.raises(ValidationError, match="dataset 'train'"):
        ddp.run_local(train_classifier, datasets={"val": (X, y)}, model="mlp", epochs=1)
