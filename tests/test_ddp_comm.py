"""DDP's communication options on real gloo ranks: compression hooks, buckets, accumulation.

Every option must train, the compression hooks must really compress (and stay close to the
float32 run), and gradient accumulation must give the updates of one big batch, on the local
twin and on 2 ranks. No speed is asserted here: benchmarks/bench_ddp.py measures it.
"""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np
import pytest

import dasktrain.ddp as ddp
from dasktrain.exceptions import ValidationError

torch = pytest.importorskip("torch")

from dasktrain.ddp.recipes import train_classifier  # noqa: E402

# Rank processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# float32 steps that fp16 (10 mantissa bits) and bf16 (7 bits) round differently: rank 0's
# gradient is G0, rank 1's is ones, and each hook divides by the world size before sending.
G0 = [1 + 2**-8, 1 + 2**-12]
EXPECTED = {
    None: [1 + 2**-9, 1 + 2**-13],  # the exact float32 mean
    "fp16": [1 + 2**-9, 1.0],  # 0.5 + 2**-13 is below fp16's spacing at 0.5 (2**-11)
    "bf16": [1.0, 1.0],  # bf16's spacing at 0.5 is 2**-8: both extras vanish
}


# ---------------------------------------------------------------- train functions (by value)


def _reduced_gradient(comm_hook):
    """The all-reduced gradient of ``w . x`` with x = G0 on rank 0 and ones on rank 1."""
    info = ddp.rank_info()
    net = torch.nn.Linear(2, 1, bias=False)
    net = ddp.prepare_model(net, comm_hook=comm_hook)
    x = torch.tensor([G0 if info.rank == 0 else [1.0, 1.0]], dtype=torch.float32)
    net(x).sum().backward()
    return ddp.unwrap_model(net).weight.grad[0].tolist()


def _reduced_gradients():
    # One job for the three cases: a launch costs more than the test itself.
    return {hook: _reduced_gradient(hook) for hook in EXPECTED}


def _counting_hook(state, bucket):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    state["calls"] += 1
    return default_hooks.allreduce_hook(None, bucket)


def _accumulate(steps, X, y, batch):
    """Weights after 3 SGD steps with ``steps`` micro-batches each, and all-reduces counted."""
    torch.manual_seed(0)
    net = ddp.prepare_model(torch.nn.Sequential(torch.nn.Linear(X.shape[1], 3)))
    state = {"calls": 0}
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        net.register_comm_hook(state, _counting_hook)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loader = ddp.prepare_loader((X, y), batch, shuffle=False)
    for i, (xb, yb) in enumerate(loader):
        if i == 3:
            break
        opt.zero_grad()
        for weight, xm, ym in ddp.micro_batches(net, xb, yb, steps=steps):
            (torch.nn.functional.cross_entropy(net(xm), ym) * weight).backward()
        opt.step()
    weights = [p.detach().numpy().copy() for p in ddp.unwrap_model(net).parameters()]
    return weights, state["calls"]


def _accumulate_both(X, y, batch):
    return {steps: _accumulate(steps, X, y, batch) for steps in (1, 4)}


# ----------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def blobs():
    from dasktrain.testing import make_blobs

    X, y = make_blobs(n_samples=384, n_features=16, centers=3, random_state=1)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    X = rng.random((96, 16, 16, 1), dtype=np.float32)
    y = (X[:, :8].mean(axis=(1, 2, 3)) > X[:, 8:].mean(axis=(1, 2, 3))).astype(int)
    return X, y


MLP = dict(model="mlp", epochs=3, batch_size=32, lr=0.01, seed=4)


@pytest.fixture(scope="module")
def plain_two_ranks(blobs, client):
    """The reference: 2 ranks, float32 all-reduce, DDP's defaults."""
    X, y = blobs
    return ddp.run(train_classifier, X, y, client=client, timeout=120, **MLP)[0]


# ---------------------------------------------------------------------------------- tests


def test_comm_hook_compresses_the_allreduce(client):
    res = ddp.run(_reduced_gradients, client=client, timeout=60)
    assert res[0] == res[1] == EXPECTED


def test_comm_hook_is_a_no_op_on_one_rank():
    # No process group, nothing to compress: the local twin keeps its own gradient.
    assert ddp.run_local(_reduced_gradient, "fp16")[0] == pytest.approx(G0, abs=0)


@pytest.mark.parametrize(
    "options, rel",
    [
        ({"comm_hook": "fp16"}, 1e-2),
        ({"comm_hook": "bf16"}, 5e-2),
        ({"bucket_cap_mb": 0.001}, 1e-5),  # 250 floats a bucket: several all-reduces a step
        ({"gradient_as_bucket_view": True, "static_graph": True, "bucket_cap_mb": 100}, 1e-5),
        ({"accumulation_steps": 2, "comm_hook": "fp16", "gradient_as_bucket_view": True}, 1e-2),
    ],
    ids=str,
)
def test_each_option_trains_like_the_plain_run(client, blobs, plain_two_ranks, options, rel):
    X, y = blobs
    res = ddp.run(train_classifier, X, y, client=client, timeout=120, **MLP, **options)
    hist, ref = res[0]["history"], plain_two_ranks["history"]
    assert res[0]["history"] == res[1]["history"] or _same_but_time(res[0], res[1])
    assert hist[-1]["accuracy"] >= 0.95, hist
    for a, b in zip(hist, ref):
        assert a["loss"] == pytest.approx(b["loss"], rel=rel, abs=1e-4)


def _same_but_time(a, b):
    strip = [{k: v for k, v in h.items() if k != "epoch_time"} for h in a["history"]]
    return strip == [{k: v for k, v in h.items() if k != "epoch_time"} for h in b["history"]]


def test_micro_batches_accumulate_one_allreduce_per_step(client, blobs):
    X, y = blobs
    ranks = ddp.run(_accumulate_both, X, y, 32, client=client, timeout=120)
    local = ddp.run_local(_accumulate_both, X, y, 32)[0]
    for res in (ranks[0], ranks[1], local):
        (w1, calls1), (w4, calls4) = res[1], res[4]
        for a, b in zip(w1, w4):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        # no_sync: the 3 micro-batches before the last do not all-reduce
        assert calls4 == calls1
    assert ranks[0][1][1] >= 3  # 3 steps, at least one bucket each
    # 2 ranks with a global batch of 32 take the local twin's steps
    for a, b in zip(ranks[0][4][0], local[4][0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_accumulation_steps_gives_the_updates_of_one_big_batch(client, images, tmp_path):
    # smallcnn: convolutions and GroupNorm (per sample, so micro-batches see the same numbers)
    X, y = images
    kw = dict(MLP, model="smallcnn", epochs=2, batch_size=16)
    torch.set_num_threads(1)
    weights = {}
    for label, steps in (("one", 1), ("acc", 4)):
        folder = tmp_path / f"local-{label}"
        ddp.run_local(train_classifier, X, y, checkpoint_dir=folder, accumulation_steps=steps, **kw)
        weights[f"local-{label}"] = _checkpointed(folder)
        folder = tmp_path / f"ranks-{label}"
        ddp.run(
            train_classifier,
            X,
            y,
            client=client,
            timeout=120,
            checkpoint_dir=folder,
            accumulation_steps=steps,
            **kw,
        )
        weights[f"ranks-{label}"] = _checkpointed(folder)
    for where in ("local", "ranks"):
        one, acc = weights[f"{where}-one"], weights[f"{where}-acc"]
        assert one.keys() == acc.keys()
        for key in one:
            np.testing.assert_allclose(acc[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)


def _checkpointed(folder):
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    return {k: v.numpy() for k, v in state["model"].items()}


def test_micro_batches_split_uneven_batches():
    x = torch.arange(5.0)
    parts = list(ddp.micro_batches(torch.nn.Linear(1, 1), x, x * 2, steps=2))
    assert [w for w, *_ in parts] == [0.6, 0.4]
    assert [p[1].tolist() for p in parts] == [[0.0, 1.0, 2.0], [3.0, 4.0]]
    assert [p[2].tolist() for p in parts] == [[0.0, 2.0, 4.0], [6.0, 8.0]]
    # fewer samples than steps: one sample per micro-batch, the weights still sum to 1
    assert [w for w, _ in ddp.micro_batches(None, torch.ones(2), steps=4)] == [0.5, 0.5]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"comm_hook": "int8"}, "comm_hook='int8' must be None or one of"),
        ({"comm_hook": "FP16"}, "comm_hook='FP16'"),
        ({"bucket_cap_mb": 0}, "bucket_cap_mb=0 must be a number > 0"),
        ({"bucket_cap_mb": -5}, "bucket_cap_mb=-5"),
        ({"bucket_cap_mb": "25"}, "bucket_cap_mb='25'"),
        ({"bucket_cap_mb": True}, "bucket_cap_mb=True"),
        ({"bucket_cap_mb": float("nan")}, "bucket_cap_mb=nan"),
        ({"gradient_as_bucket_view": "false"}, "gradient_as_bucket_view='false' must be True"),
        ({"static_graph": 1}, "static_graph=1 must be True or False"),
        ({"accumulation_steps": 0}, "accumulation_steps=0 must be an integer >= 1"),
        ({"accumulation_steps": 2.5}, "accumulation_steps=2.5"),
        ({"accumulation_steps": True}, "accumulation_steps=True"),
        ({"accumulation_steps": 2, "static_graph": True}, "pytorch/pytorch#143580"),
    ],
    ids=str,
)
def test_bad_communication_options_are_rejected(kw, match):
    X = np.zeros((8, 4), np.float32)
    y = np.arange(8) % 2
    with pytest.raises(ValidationError, match=match.replace("(", r"\(").replace("[", r"\[")):
        train_classifier(X, y, model="mlp", epochs=1, **kw)


def test_prepare_model_rejects_bad_options_on_one_rank_too():
    # Checked before the world size matters: a typo fails in the local twin, not on a cluster.
    with pytest.raises(ValidationError, match="comm_hook='fp32'"):
        ddp.run_local(ddp.prepare_model, torch.nn.Linear(2, 2), comm_hook="fp32")
    with pytest.raises(ValidationError, match="bucket_cap_mb=-1"):
        ddp.run_local(ddp.prepare_model, torch.nn.Linear(2, 2), bucket_cap_mb=-1)


def test_micro_batches_rejects_bad_input():
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValidationError, match="accumulation_steps=0"):
        list(ddp.micro_batches(net, torch.ones(4, 2), steps=0))
    with pytest.raises(ValidationError, match=r"lengths \[4, 3\]"):
        list(ddp.micro_batches(net, torch.ones(4, 2), torch.ones(3), steps=2))
    with pytest.raises(ValidationError, match="at least one tensor"):
        list(ddp.micro_batches(net, steps=2))
