"""Train an MLP on features extracted from X-ray-like images: local twin vs 2 DDP ranks.

Features are HOG descriptors (``dasktrain.HOGFeatures``), standardised with the training
statistics; then the same ``train_classifier(model="mlp")`` runs in this process and on two
Dask workers with the same seeds and global batch. Accuracy per epoch is printed side by side.

    python examples/ddp_mlp_features.py           # defaults finish in < 2 min on 2 cores
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dasktrain
from dasktrain import ddp
from dasktrain.datasets import make_xray_like
from dasktrain.ddp.recipes import train_classifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=150)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = make_xray_like(
            Path(tmp) / "xray", n_per_class=args.n_per_class, size=args.size, seed=args.seed
        )
        train = dasktrain.read_images(root / "train", size=(args.size, args.size))
        test = dasktrain.read_images(root / "test", size=(args.size, args.size))
    hog = dasktrain.HOGFeatures()
    F_train = np.asarray(hog.fit(train.X).transform(train.X), dtype=np.float32)
    F_test = np.asarray(hog.transform(test.X), dtype=np.float32)
    mean, std = F_train.mean(0), F_train.std(0) + 1e-6
    F_train, F_test = (F_train - mean) / std, (F_test - mean) / std
    print(f"features: train {F_train.shape}, test {F_test.shape}")
    kw = dict(
        X_val=F_test,
        y_val=test.y,
        model="mlp",
        hidden=args.hidden,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )

    torch.set_num_threads(1)  # like each 1-thread Dask worker
    t0 = time.perf_counter()
    local = ddp.run_local(train_classifier, F_train, train.y, **kw)[0]
    local_wall = time.perf_counter() - t0
    with dasktrain.connect(
        n_workers=args.ranks, threads_per_worker=1, dashboard_address="127.0.0.1:0"
    ) as client:
        t0 = time.perf_counter()
        dist = ddp.run(train_classifier, F_train, train.y, client=client, **kw)[0]
        dist_wall = time.perf_counter() - t0

    print("accuracy per epoch (on the test images), same seeds and global batch:")
    print(f"{'epoch':>5} {'local acc':>10} {args.ranks}-rank acc")
    for a, b in zip(local["history"], dist["history"]):
        print(f"{a['epoch']:>5} {a['accuracy']:>10.3f} {b['accuracy']:>11.3f}")
    print(f"local twin : train {local['train_time']:.2f} s, wall {local_wall:.1f} s")
    print(
        f"{args.ranks} DDP ranks: train {dist['train_time']:.2f} s, wall {dist_wall:.1f} s "
        "(a small MLP is communication-bound: DDP is not worth it here, by design)"
    )


if __name__ == "__main__":
    main()
