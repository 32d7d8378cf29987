"""Train a Keras CNN on X-ray-like images on 2 Dask workers, then in its local twin.

Two ways, one per run (Keras fixes its backend once per process, so the twins of the two
cannot share one):

* ``--path keras``: the Keras model on the torch backend is a ``torch.nn.Module``, trained by
  the DDP launcher (``ddp.run(train_keras_classifier, datasets=...)``): each rank decodes and
  trains on its own chunks of lazily read images. The twin is ``ddp.run_local`` in this
  process (``KERAS_BACKEND=torch`` is set below, before Keras is imported).
* ``--path tf``: TensorFlow itself, ``dasktrain.tf.run(train_cnn, X, y)``: one process per
  worker under ``MultiWorkerMirroredStrategy`` with a custom ``strategy.run`` loop. The twin
  is ``dasktrain.tf.run_local`` in this process (Keras on TensorFlow).

Same seeds and the same global batch on both engines; the accuracy per epoch is printed side
by side.

    python examples/keras_tf.py                  # --path keras; < 2 min on 2 cores
    python examples/keras_tf.py --path tf
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import dasktrain
from dasktrain.datasets import make_xray_like


def _keras(args, root, client):
    from dasktrain import ddp
    from dasktrain.ddp.recipes_keras import train_keras_classifier

    kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    # Lazy: decoded on the workers chunk by chunk; shuffle=True puts both classes in every chunk.
    read = dict(size=args.size, color="gray", engine="dask", chunk_size=64)
    datasets = {
        "train": dasktrain.read_images(root / "train", shuffle=True, **read),
        "val": dasktrain.read_images(root / "test", **read),
    }
    t0 = time.perf_counter()
    res = ddp.run(train_keras_classifier, client=client, datasets=datasets, timeout=600, **kw)
    t1 = time.perf_counter()
    import torch

    torch.set_num_threads(1)  # like each 1-thread worker: the comparison is per core
    twin = ddp.run_local(train_keras_classifier, datasets=datasets, **kw)
    return res, twin, t1 - t0, time.perf_counter() - t1


def _tf(args, root, client):
    import dasktrain.tf as dtf
    from dasktrain.tf.recipes import train_cnn

    train = dasktrain.read_images(root / "train", size=args.size, color="gray", engine="local")
    test = dasktrain.read_images(root / "test", size=args.size, color="gray", engine="local")
    kw = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    kw.update(X_val=test.X, y_val=test.y)
    t0 = time.perf_counter()
    # TensorFlow's server listens on every interface of the workers' hosts: asked for here.
    res = dtf.run(
        train_cnn, train.X, train.y, client=client, timeout=600, all_interfaces=True, **kw
    )
    t1 = time.perf_counter()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)  # per core, as each worker
    twin = dtf.run_local(train_cnn, train.X, train.y, **kw)
    return res, twin, t1 - t0, time.perf_counter() - t1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", choices=("keras", "tf"), default="keras")
    parser.add_argument("--n-per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Before anything imports Keras: its backend is fixed at the first import.
    os.environ["KERAS_BACKEND"] = "torch" if args.path == "keras" else "tensorflow"

    with tempfile.TemporaryDirectory() as tmp:
        root = make_xray_like(
            Path(tmp) / "xray", n_per_class=args.n_per_class, size=args.size, seed=args.seed
        )
        with dasktrain.connect(
            n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0"
        ) as client:
            run = _keras if args.path == "keras" else _tf
            res, twin, t_run, t_twin = run(args, root, client)
    ranks = [h["accuracy"] for h in res[0]["history"]]
    local = [h["accuracy"] for h in twin[0]["history"]]
    print(f"path: {args.path}   2 ranks: {t_run:.1f} s   twin: {t_twin:.1f} s")
    print("epoch  2-rank acc  twin acc")
    for epoch, (a, b) in enumerate(zip(ranks, local)):
        print(f"{epoch:5d}  {a:10.3f}  {b:8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
