"""The built-in architectures: an MLP and a small BatchNorm CNN."""

from __future__ import annotations

import torch
from torch import nn

from kdcore.models import MODELS, InputShape


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (batch, classes)


class CNN(nn.Module):
    def __init__(
        self,
        input_shape: InputShape,
        channels: list[int],
        hidden: int,
        num_classes: int,
        batchnorm: bool = True,
        dropout: float = 0.0,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        c_in, h, w = input_shape
        blocks: list[nn.Module] = []
        for c_out in channels:
            blocks.append(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=not batchnorm))
            if batchnorm:
                blocks.append(nn.BatchNorm2d(c_out))
            blocks.append(nn.ReLU(inplace=True))
            # pool only while the map is large enough; 8x8 inputs keep at least 2x2
            if min(h, w) >= 4:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * h * w, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (batch, classes)


@MODELS.register("mlp")
def build_mlp(spec, input_shape: InputShape, num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return MLP(c * h * w, list(spec.hidden), num_classes, spec.dropout)


@MODELS.register("cnn")
def build_cnn(spec, input_shape: InputShape, num_classes: int) -> nn.Module:
    return CNN(input_shape, list(spec.channels), spec.hidden, num_classes, spec.batchnorm, spec.dropout, spec.kernel)
