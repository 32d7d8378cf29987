"""Backbones: shapes, seeding, torchvision-compatible state-dict keys, weights_only round trip."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dasktrain.exceptions import ValidationError  # noqa: E402
from dasktrain.features import _backbones  # noqa: E402


def _bn(prefix):
    return [
        f"{prefix}.{s}"
        for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]


def torchvision_resnet18_keys():
    """torchvision.models.resnet18().state_dict() keys, written out from its architecture."""
    keys = ["conv1.weight", *_bn("bn1")]
    for layer in (1, 2, 3, 4):
        for block in (0, 1):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight", *_bn(f"{p}.bn1"), f"{p}.conv2.weight", *_bn(f"{p}.bn2")]
            if block == 0 and layer > 1:
                keys += [f"{p}.downsample.0.weight", *_bn(f"{p}.downsample.1")]
    return keys + ["fc.weight", "fc.bias"]


def test_registry():
    assert _backbones.BACKBONES == ("vgg19", "resnet18", "resnet34", "smallcnn")
    assert [_backbones.get_backbone(n).feature_dim for n in _backbones.BACKBONES] == [
        512,
        512,
        512,
        64,
    ]
    with pytest.raises(ValidationError, match=r"'resnet50'.*'vgg19', 'resnet18'"):
        _backbones.build("resnet50")
    with pytest.raises(ValidationError, match="num_classes=0"):
        _backbones.build("smallcnn", num_classes=0)


def test_resnet18_keys_and_shapes_match_torchvision():
    sd = _backbones.build("resnet18", num_classes=1000).state_dict()
    expected = torchvision_resnet18_keys()
    assert len(expected) == 122
    assert list(sd) == expected
    assert tuple(sd["conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(sd["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd["layer4.1.conv2.weight"].shape) == (512, 512, 3, 3)
    assert tuple(sd["fc.weight"].shape) == (1000, 512)
    # The trunk is the same minus the head.
    trunk = _backbones.build("resnet18").state_dict()
    assert list(trunk) == expected[:-2]


def test_resnet34_and_vgg19_layout():
    sd = _backbones.build("resnet34").state_dict()
    blocks = {k.split(".")[0] + "." + k.split(".")[1] for k in sd if k.startswith("layer")}
    assert sorted(blocks) == sorted(
        f"layer{i}.{b}" for i, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for b in range(n)
    )
    vgg = _backbones.build("vgg19", num_classes=1000).state_dict()
    convs = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    expected = [f"features.{i}.{p}" for i in convs for p in ("weight", "bias")]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(vgg) == expected
    assert tuple(vgg["features.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(vgg["classifier.0.weight"].shape) == (4096, 512 * 7 * 7)
    assert tuple(vgg["classifier.6.weight"].shape) == (1000, 4096)


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_state_dict_round_trip_weights_only(tmp_path, name):
    model = _backbones.build(name, num_classes=4, seed=3)
    path = tmp_path / f"{name}.pth"
    torch.save(model.state_dict(), path)
    state = torch.load(path, weights_only=True)
    other = _backbones.build(name, num_classes=4, seed=4)
    assert not torch.equal(other.state_dict()[next(iter(state))], state[next(iter(state))])
    other.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), other.eval()(x), rtol=0, atol=0)


def test_shapes_seed_and_rng_untouched():
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = _backbones.build("smallcnn", seed=1).eval()
    after = torch.rand(3)
    assert torch.equal(before, after)  # building did not consume the global RNG
    b = _backbones.build("smallcnn", seed=1).eval()
    c = _backbones.build("smallcnn", seed=2).eval()
    with torch.no_grad():
        assert a(x).shape == (2, 64, 8, 8)
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))
        assert _backbones.build("resnet18", num_classes=5)(x).shape == (2, 5)
        gray = _backbones.build("smallcnn", in_channels=1, num_classes=2).eval()
        assert gray(x[:, :1]).shape == (2, 2)
    assert 10_000 < sum(p.numel() for p in a.parameters()) < 100_000
