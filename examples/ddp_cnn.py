"""Train the small CNN on X-ray-like images: 2 DDP ranks on Dask workers, then the local twin.

The images are read lazily (``read_images(engine="dask")``) and handed to the job as
``datasets=``: each rank decodes and trains on its own chunks on its own worker, and the
images never come to this process. The local twin (``run_local``) reads the same chunks here.
Both use the same seeds and the same global batch; the accuracy per epoch is printed side by
side. (Small arrays in memory can be passed instead: ``ddp.run(train_classifier, X, y,
X_val=..., y_val=...)``.)

    python examples/ddp_cnn.py                    # defaults finish in < 2 min on 2 cores
    python examples/ddp_cnn.py --epochs 5 --n-per-class 300
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

import dasktrain
from dasktrain import ddp
from dasktrain.datasets import make_xray_like
from dasktrain.ddp.recipes import train_classifier


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-class", type=int, default=120)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=64, help="images per chunk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="folder (default: a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = make_xray_like(
            args.data or Path(tmp) / "xray",
            n_per_class=args.n_per_class,
            size=args.size,
            seed=args.seed,
        )
        with dasktrain.connect(
            n_workers=args.ranks, threads_per_worker=1, dashboard_address="127.0.0.1:0"
        ) as client:
            run(args, root, client)


def run(args, root, client):
    # Lazy: listed and checked here, decoded on the workers chunk by chunk. shuffle=True puts
    # every class in every chunk (the folders list one class after the other).
    read = dict(size=(args.size, args.size), engine="dask", chunk_size=args.chunk_size)
    data = {
        "train": dasktrain.read_images(root / "train", shuffle=True, **read),
        "val": dasktrain.read_images(root / "test", **read),
    }
    print(data["train"])
    kw = dict(
        model="smallcnn",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    dist = ddp.run(train_classifier, client=client, datasets=data, **kw)[0]
    dist_wall = time.perf_counter() - t0

    # One thread, like each 1-thread Dask worker: the comparison is per core.
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    local = ddp.run_local(train_classifier, datasets=data, **kw)[0]
    local_wall = time.perf_counter() - t0

    print("accuracy per epoch (on the test images), same seeds and global batch:")
    print(
        f"{'epoch':>5} {'local acc':>10} {args.ranks}-rank acc   local loss  {args.ranks}-rank loss"
    )
    for a, b in zip(local["history"], dist["history"]):
        print(
            f"{a['epoch']:>5} {a['accuracy']:>10.3f} {b['accuracy']:>11.3f} "
            f"{a['loss']:>11.4f} {b['loss']:>12.4f}"
        )
    print(
        f"local twin : {local['samples_per_s']:8.1f} samples/s, train {local['train_time']:.1f} s,"
        f" wall {local_wall:.1f} s"
    )
    print(
        f"{args.ranks} DDP ranks: {dist['samples_per_s']:8.1f} samples/s, train "
        f"{dist['train_time']:.1f} s, wall {dist_wall:.1f} s (includes the launch)"
    )


if __name__ == "__main__":
    main()
