"""Our Gluon definitions of the CIFAR ResNets and the Wide ResNet have the published sizes."""
from __future__ import annotations

import mxnet as mx
import pytest

from training import models


def _count(name: str) -> int:
    net = models.get_model(name)
    net.initialize()
    out = net(mx.nd.zeros((1, 3, 32, 32)))
    assert out.shape == (1, 10)
    return sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")


@pytest.mark.parametrize(("name", "published"), [
    ("resnet20_v1", 0.27e6), ("resnet56_v1", 0.85e6), ("resnet110_v1", 1.7e6),
    ("resnet20_v2", 0.27e6), ("resnet110_v2", 1.7e6), ("wrn28_10", 36.5e6),
])
def test_parameter_counts_match_the_papers(name: str, published: float) -> None:
    assert _count(name) == pytest.approx(published, rel=0.03)


def test_depth_and_width_validation() -> None:
    assert isinstance(models.get_model("resnet8_v1", base_width=8), mx.gluon.HybridBlock)
    with pytest.raises(ValueError, match="6n\\+2"):
        models.get_model("resnet21_v1")
    with pytest.raises(ValueError, match="6n\\+4"):
        models.get_model("wrn27_10")
    with pytest.raises(ValueError, match="unknown model"):
        models.get_model("vgg16")


def test_hybridized_and_imperative_agree() -> None:
    net = models.get_model("resnet8_v2", base_width=8)
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    imperative = net(x).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    assert abs(net(x).asnumpy() - imperative).max() < 1e-4



def test_normalize_takes_three_channels() -> None:
    with pytest.raises(ValueError, match="3 channel means"):
        models.Normalize(mean=(0.5, 0.5))
