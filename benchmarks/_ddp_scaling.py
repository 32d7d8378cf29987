"""DDP scaling on few cores: 2 ranks / 1 rank samples/s for each communication variant.

Issue 14's row "DDP 2 ranks / 1 rank samples per second, resnet18 64 px, global batch 64"
with the options of :func:`dasktrain.ddp.prepare_model` / ``train_classifier`` (compression
hooks, bucket sizes, gradient views, accumulation under ``no_sync``), all interleaved in one
process (A B C ... A B C ...) so that machine drift hits every variant alike, plus a
per-step profile (forward, backward with and without the all-reduce, optimiser, the bare
all-reduce of the gradients) that says where a 2-rank step loses its time::

    nice -n -10 .venv/bin/python benchmarks/parity.py ddp --scaling-only
    nice -n -10 .venv/bin/python benchmarks/parity.py ddp --scaling-only --variants none,fp16
    nice -n -10 .venv/bin/python benchmarks/parity.py ddp --profile

Throughput is measured inside ``train_fn`` (``samples_per_s``), so the launch is excluded.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time

import cloudpickle

from benchmarks._common import interleaved, start_cluster, stop_cluster

# Rank processes cannot import the benchmark folder: send this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# name -> train_classifier options. The hooks, buckets, views and static graph act on the DDP
# wrapper only (one rank has none); accumulation also changes the one-rank run.
VARIANTS = {
    "none": {},
    "fp16": {"comm_hook": "fp16"},
    "bf16": {"comm_hook": "bf16"},
    "bucket5": {"bucket_cap_mb": 5},
    "bucket100": {"bucket_cap_mb": 100},
    "view": {"gradient_as_bucket_view": True},
    "static": {"static_graph": True},
    "fp16+view": {"comm_hook": "fp16", "gradient_as_bucket_view": True},
    "accum2": {"accumulation_steps": 2},
}
DEFAULT_VARIANTS = ("none", "fp16", "bf16", "bucket5", "bucket100", "view", "accum2")


def load():
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def parse_variants(text):
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return names if "none" in names else ["none", *names]


def scaling(client, X, y, kw, variants=DEFAULT_VARIANTS, repeat=3, local=False):
    """Print samples/s of 1 and 2 ranks per variant (interleaved medians) and the ratios.

    ``kw``: the common ``train_classifier`` arguments (model, epochs, batch_size, seed).
    ``local``: also the local twin (``run_local`` in this process, 1 torch thread).
    Returns ``{label: [samples/s, ...]}``.
    """
    from dasktrain import ddp
    from dasktrain.ddp.recipes import train_classifier

    sps = {}
    fns = {}

    def add(label, ranks, options):
        sps[label] = []

        def fn():
            res = ddp.run(train_classifier, X, y, client=client, workers=ranks, **kw, **options)
            sps[label].append(res[0]["samples_per_s"])
            # as it comes: a run cut short by a time limit still leaves its numbers
            print(f"    {label}: {sps[label][-1]:.1f} samples/s", flush=True)

        fns[label] = fn

    add("1 rank, none", 1, {})
    for name in variants:
        options = VARIANTS[name]
        if "accumulation_steps" in options:
            add(f"1 rank, {name}", 1, options)
        add(f"2 ranks, {name}", 2, options)
    if local:
        sps["local twin, 1 thread"] = []

        def twin():
            import torch

            torch.set_num_threads(1)
            res = ddp.run_local(train_classifier, X, y, **kw)
            sps["local twin, 1 thread"].append(res[0]["samples_per_s"])

        fns["local twin, 1 thread"] = twin
    # Warm-up: one plain 1-rank run (page cache, first imports on the workers).
    fns["1 rank, none"]()
    sps["1 rank, none"].clear()
    interleaved(fns, repeat=repeat, warmup=0)
    _print_scaling(sps, variants)
    return sps


def _print_scaling(sps, variants):
    med = {k: statistics.median(v) for k, v in sps.items()}
    for k, v in sps.items():
        runs = ", ".join(f"{x:.1f}" for x in v)
        print(f"  {k:24s} {med[k]:8.1f} samples/s  (median of {len(v)}: {runs})")
    base = med["1 rank, none"]
    print("  2 ranks / 1 rank (plain 1-rank run as the baseline; target >= 1.8x):")
    for name in variants:
        ratio = med[f"2 ranks, {name}"] / base
        same = f"1 rank, {name}"
        extra = ""
        if same in med and name != "none":
            extra = f"; / 1 rank with {name}: {med[f'2 ranks, {name}'] / med[same]:.2f}x"
        print(f"    {name:12s} {ratio:5.2f}x (efficiency {ratio / 2:.2f}){extra}")


# ----------------------------------------------------------------------------- the profile
def _step_profile(X, y, per_rank, steps, comm_hook=None):
    """Median seconds per phase of a resnet18 step on this rank (runs inside a rank)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from dasktrain.ddp.helpers import prepare_model, rank_info
    from dasktrain.ddp.recipes import _build_model

    info = rank_info()
    net = _build_model(
        "resnet18", n_features=0, in_channels=X.shape[1], num_classes=2, seed=0, hidden=0,
        pool="max",
    )  # fmt: skip
    # "independent": each rank trains its own copy, nothing exchanged: the machine's ceiling
    # for 2 processes side by side, whatever the communication.
    independent = comm_hook == "independent"
    net = net if independent else prepare_model(net, comm_hook=comm_hook)
    ddp = info.world_size > 1 and not independent
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xb, yb = torch.from_numpy(X[:per_rank]), torch.from_numpy(y[:per_rank])
    phases = {"forward": [], "backward": [], "backward, no all-reduce": [], "optimiser": []}
    # CPU seconds of the whole rank process against its main thread: the difference is what
    # gloo's and DDP's threads burnt (the all-reduce), which the load of a shared machine
    # changes much less than it changes wall times.
    cpu = {"step cpu": [], "step cpu, comm threads": [], "step cpu, no all-reduce": []}
    for i in range(2 * steps + 1):
        sync = i % 2 == 0  # alternate: with and without the all-reduce, same conditions
        if info.world_size > 1:
            dist.barrier()  # start each step together, as the all-reduce forces anyway
        p0, c0 = time.process_time(), time.thread_time()
        t0 = time.perf_counter()
        with contextlib.nullcontext() if sync or not ddp else net.no_sync():
            loss = F.cross_entropy(net(xb), yb)
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        p1, c1 = time.process_time(), time.thread_time()
        if i == 0:
            continue  # first step: allocations, DDP's bucket rebuild
        if sync or not ddp:
            cpu["step cpu"].append(p1 - p0)
            cpu["step cpu, comm threads"].append((p1 - p0) - (c1 - c0))
        if not sync or not ddp:
            cpu["step cpu, no all-reduce"].append(p1 - p0)
        phases["forward"].append(t1 - t0)
        phases["backward" if sync else "backward, no all-reduce"].append(t2 - t1)
        phases["optimiser"].append(t3 - t2)
    out = {k: statistics.median(v) for k, v in {**phases, **cpu}.items() if v}
    if ddp:
        out["bare all-reduce of the gradients"] = _bare_allreduce(net, comm_hook)
    out["threads"] = torch.get_num_threads()
    return out


def _bare_allreduce(net, comm_hook):
    """Median seconds of one all-reduce of all gradients (float32, or 16 bits for a hook)."""
    import torch
    import torch.distributed as dist

    dtype = {None: torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[comm_hook]
    t = torch.ones(sum(p.numel() for p in net.parameters()), dtype=dtype)
    times = []
    for _ in range(5):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def profile(client, X, y, batch_size=64, steps=4, comm_hooks=("independent", None, "fp16", "bf16")):
    """Print where a step goes: 1 rank with the global batch against 2 ranks with half each.

    Wall times per phase (median over ``steps`` steps with and ``steps`` without the
    all-reduce, alternated) and CPU seconds per step of the rank process and of its threads
    other than the main one (gloo's and DDP's: the all-reduce).
    """
    from dasktrain import ddp

    X = X.transpose(0, 3, 1, 2).copy()
    # 1 rank with half the batch: what a rank of the 2-rank run would cost alone (the
    # smaller batch and the whole optimiser step, without the other rank on the machine).
    runs = [("1 rank", 1, batch_size, None), ("1 rank, half batch", 1, batch_size // 2, None)]
    runs += [(f"2 ranks, hook {h}", 2, batch_size // 2, h) for h in comm_hooks]
    for label, ranks, per_rank, hook in runs:
        res = ddp.run(
            _step_profile, X, y, per_rank, steps, hook, client=client, workers=ranks, timeout=600
        )
        for rank, phases in sorted(res.items()):
            cells = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in phases.items() if k != "threads")
            print(f"  {label:18s} rank {rank} ({phases['threads']} thread): {cells}")


def main(repeat=3, model="resnet18", n=512, side=64, batch_size=64, epochs=2,
         variants=DEFAULT_VARIANTS, do_profile=False):  # fmt: skip
    from benchmarks.bench_ddp import _images

    print(f"{load()} (start)", flush=True)
    X, y = _images(n, side)
    cluster, client = start_cluster(n_workers=2, threads_per_worker=1)
    try:
        if do_profile:
            print(f"per-step profile, resnet18 {side}x{side}, global batch {batch_size}:")
            profile(client, X, y, batch_size)
        else:
            kw = dict(model=model, epochs=epochs, batch_size=batch_size, seed=0, timeout=600)
            print(
                f"scaling: {model}, {n} images {side}x{side}, {epochs} epochs, global batch "
                f"{batch_size}, 2 workers x 1 thread, {repeat} interleaved repeats"
            )
            scaling(client, X, y, kw, variants, repeat)
    finally:
        stop_cluster(cluster, client)
    print(f"{load()} (end)", flush=True)
