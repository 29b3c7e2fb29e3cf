"""Tiny models of the kinds real code is made of, each a LightningModule that trains on the 8×8 digits.

Written here (no torchvision): a residual block with a downsample branch, a depthwise-separable
block with squeeze-excitation, a transformer encoder, an LSTM over embeddings, lazy modules, a
model whose activations, pooling and dropout are functional calls, and parameters held by
containers. Each trains a step on a CPU in well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F


class ZooModel(L.LightningModule):
    """Trains ``forward(images) -> logits`` with cross-entropy and SGD."""

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.log("val_loss", F.cross_entropy(self(images), labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class ResidualBlock(nn.Module):
    """A basic residual block whose shortcut is downsampled (1×1 convolution, stride 2) to the block's output."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=2, dilation=2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = nn.Sequential(
            nn.Conv2d(channels, out_channels, 1, stride=2, bias=False), nn.BatchNorm2d(out_channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResidualNet(ZooModel):
    """The head is registered first and runs last: registration order is not execution order."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = ResidualBlock(8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class SeparableNet(ZooModel):
    """A depthwise-separable block with squeeze-excitation, group normalization and parametrized activations."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.LeakyReLU(0.2))
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.norm = nn.GroupNorm(4, 16)
        self.act = nn.ELU(alpha=0.5)
        self.se = SqueezeExcitation(16, 4)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 32), nn.GELU("tanh"))
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.pointwise(self.depthwise(self.stem(x)))))
        return self.classifier(self.head(self.se(x)))


class TransformerNet(ZooModel):
    """The image's 8 rows as 8 tokens, a class token (a parameter of the model itself) and one encoder layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(16)
        self.classifier = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.squeeze(1))
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.classifier(self.norm(self.encoder(tokens)[:, 0]))


class RecurrentNet(ZooModel):
    """Pixel intensities (0 to 16) as a sequence of 64 tokens, embedded and read by a bidirectional LSTM."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(17, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True, bidirectional=True, dropout=0.1)
        self.classifier = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = (x.flatten(1) * 16).round().long()
        outputs, _ = self.lstm(self.embedding(tokens))
        return self.classifier(outputs[:, -1])


class LazyNet(ZooModel):
    """Input sizes inferred at the first call: its parameters do not exist before then."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.LazyConv2d(8, 3, padding=1), nn.LazyBatchNorm2d(), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.LazyLinear(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FunctionalNet(ZooModel):
    """Only the layers with parameters are modules: activations, pooling, flattening and dropout are calls."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.leaky_relu(self.conv2(x), negative_slope=0.1), kernel_size=2, stride=2)
        x = F.dropout(torch.flatten(x, 1), p=0.3, training=self.training)
        return self.fc(x)


class Scaled(nn.Module):
    """A container with parameters of its own besides its child's: a learned scale and shift."""

    def __init__(self, features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, out_features)
        self.scale = nn.Parameter(torch.ones(1))
        self.shift = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale + self.shift


class ContainerParamsNet(ZooModel):
    """Parameters held by containers: the model's own temperature (frozen), and a block's scale and shift."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.body = Scaled(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1)) / self.temperature


#: Every model of the zoo, by the run name its test records it under.
ZOO: dict[str, type[ZooModel]] = {
    "residual": ResidualNet,
    "separable": SeparableNet,
    "transformer": TransformerNet,
    "recurrent": RecurrentNet,
    "lazy": LazyNet,
    "functional": FunctionalNet,
    "containers": ContainerParamsNet,
}
