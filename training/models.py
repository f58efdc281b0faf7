"""CIFAR ResNet v1/v2 (He et al. 2015/2016) and Wide ResNet (Zagoruyko & Komodakis 2016) as Gluon HybridBlocks.

Names: ``resnet{D}_v1`` / ``resnet{D}_v2`` with D = 6n + 2 (20, 56, 110; 8 is a tiny one for tests) and
``wrn{D}_{k}`` with D = 6n + 4 (``wrn28_10``). ``base_width`` scales the channel counts (16 in the papers).
Every network takes normalised NCHW float32 input of shape (N, 3, 32, 32) and returns logits. All shapes are given
up front (no deferred initialisation), so a network is complete after ``initialize()`` without a forward pass.
"""
from __future__ import annotations

import re

from mxnet.gluon import HybridBlock, nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel mean of the CIFAR-10 training images, on a 0..1 scale
CIFAR_STD = (0.2470, 0.2435, 0.2616)  # per-channel standard deviation, same scale


def _conv3x3(channels: int, stride: int, in_channels: int) -> nn.Conv2D:
    return nn.Conv2D(channels, kernel_size=3, strides=stride, padding=1, use_bias=False, in_channels=in_channels)


class BasicBlockV1(HybridBlock):
    """conv-BN-ReLU-conv-BN plus identity (or 1x1 projection), then ReLU."""

    def __init__(self, channels: int, stride: int, in_channels: int, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.body = nn.HybridSequential(prefix="")
            self.body.add(_conv3x3(channels, stride, in_channels), nn.BatchNorm(in_channels=channels),
                          nn.Activation("relu"), _conv3x3(channels, 1, channels), nn.BatchNorm(in_channels=channels))
            self.downsample = None
            if stride != 1 or in_channels != channels:
                self.downsample = nn.HybridSequential(prefix="")
                self.downsample.add(nn.Conv2D(channels, 1, strides=stride, use_bias=False, in_channels=in_channels),
                                    nn.BatchNorm(in_channels=channels))

    def hybrid_forward(self, F, x):
        residual = self.downsample(x) if self.downsample is not None else x
        return F.Activation(self.body(x) + residual, act_type="relu")


class BasicBlockV2(HybridBlock):
    """Pre-activation block: BN-ReLU-conv-BN-ReLU-(dropout)-conv plus identity (or 1x1 projection)."""

    def __init__(self, channels: int, stride: int, in_channels: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.bn1 = nn.BatchNorm(in_channels=in_channels)
            self.conv1 = _conv3x3(channels, stride, in_channels)
            self.bn2 = nn.BatchNorm(in_channels=channels)
            self.dropout = nn.Dropout(dropout) if dropout > 0 else None
            self.conv2 = _conv3x3(channels, 1, channels)
            self.downsample = None
            if stride != 1 or in_channels != channels:
                self.downsample = nn.Conv2D(channels, 1, strides=stride, use_bias=False, in_channels=in_channels)

    def hybrid_forward(self, F, x):
        pre = F.Activation(self.bn1(x), act_type="relu")
        residual = self.downsample(pre) if self.downsample is not None else x
        out = F.Activation(self.bn2(self.conv1(pre)), act_type="relu")
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv2(out) + residual


class CifarResNet(HybridBlock):
    """Three stages of ``blocks_per_stage`` blocks at widths (1, 2, 4) x ``stage_width``, then GAP and a dense layer."""

    def __init__(self, version: int, blocks_per_stage: int, stem_width: int, stage_width: int, classes: int = 10,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        block = BasicBlockV1 if version == 1 else BasicBlockV2
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(_conv3x3(stem_width, 1, 3))
            if version == 1:
                self.features.add(nn.BatchNorm(in_channels=stem_width), nn.Activation("relu"))
            in_channels = stem_width
            for stage, mult in enumerate((1, 2, 4)):
                channels = stage_width * mult
                for i in range(blocks_per_stage):
                    stride = 2 if stage > 0 and i == 0 else 1
                    extra = {"dropout": dropout} if version == 2 else {}
                    self.features.add(block(channels, stride, in_channels, prefix=f"stage{stage + 1}_{i}_", **extra))
                    in_channels = channels
            if version == 2:
                self.features.add(nn.BatchNorm(in_channels=in_channels), nn.Activation("relu"))
            self.features.add(nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


class Normalize(HybridBlock):
    """(x / 255 - mean) / std on NCHW input: baked into exported models so that they take raw 0..255 pixels."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs):
        super().__init__(**kwargs)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"Normalize: expected 3 channel means and 3 stds, got {len(mean)} and {len(std)}")
        self._scale = [1.0 / (255.0 * s) for s in std]
        self._shift = [-mean[c] / std[c] for c in range(3)]

    def hybrid_forward(self, F, x):
        channels = F.split(x, num_outputs=3, axis=1)
        parts = [channels[c] * self._scale[c] + self._shift[c] for c in range(3)]
        return F.concat(*parts, dim=1)


class Deployable(HybridBlock):
    """What gets exported: Normalize, then the trained network. Input: raw pixels, float32 NCHW, 0..255."""

    def __init__(self, net: HybridBlock, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.normalize = Normalize()
        self.net = net

    def hybrid_forward(self, F, x):
        return self.net(self.normalize(x))


def model_names() -> list[str]:
    """The names advertised in --help (any depth of the right form also works)."""
    return ["resnet20_v1", "resnet56_v1", "resnet110_v1", "resnet20_v2", "resnet56_v2", "resnet110_v2", "wrn28_10"]


def get_model(name: str, classes: int = 10, base_width: int = 16, dropout: float = 0.0) -> CifarResNet:
    """Build a network by name; raises ValueError naming the accepted forms."""
    if match := re.fullmatch(r"resnet(\d+)_v([12])", name):
        depth, version = int(match.group(1)), int(match.group(2))
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"model {name!r}: CIFAR ResNet depth must be 6n+2 (8, 20, 56, 110), got {depth}")
        return CifarResNet(version, (depth - 2) // 6, base_width, base_width, classes, dropout, prefix=f"{name}_")
    if match := re.fullmatch(r"wrn(\d+)_(\d+)", name):
        depth, widen = int(match.group(1)), int(match.group(2))
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"model {name!r}: Wide ResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}")
        return CifarResNet(2, (depth - 4) // 6, base_width, base_width * widen, classes, dropout, prefix=f"{name}_")
    raise ValueError(f"unknown model {name!r}: use resnet<6n+2>_v1, resnet<6n+2>_v2 or wrn<6n+4>_<k> "
                     f"(for example {', '.join(model_names())})")
