"""Model builders. Each is called as `builder(input_shape=..., num_classes=..., **config)`.

Bring your own model: `model._target_=mypkg.Net` names any callable that accepts the keyword
arguments `input_shape` (a tuple, one example's shape) and `num_classes` (an int), plus the keys of
its config, and returns an `nn.Module` mapping a batch of inputs to class logits.
"""

from __future__ import annotations

import math

from torch import nn

from src.errors import ConfigError


def mlp(
    input_shape: tuple[int, ...], num_classes: int, width: int = 128, depth: int = 2
) -> nn.Module:
    """`depth` hidden layers of `width` units with ReLU, on the flattened input."""
    if width < 1 or depth < 0:
        raise ConfigError(f"model: mlp needs width >= 1 and depth >= 0, got {width=} {depth=}")
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def cnn(input_shape: tuple[int, ...], num_classes: int, channels: int = 32) -> nn.Module:
    """Stride-2 conv blocks until the signal is about 4-7 long (1-3 blocks), doubling the channels,
    then a linear classifier on the flattened features. 1-D convolutions for (L,) or (C, L)
    inputs, 2-D for (C, H, W)."""
    if len(input_shape) == 1:
        input_shape = (1, *input_shape)
    if len(input_shape) not in (2, 3):
        raise ConfigError(f"model: cnn needs (L,), (C, L) or (C, H, W) inputs, got {input_shape}")
    conv, batch_norm = (
        (nn.Conv1d, nn.BatchNorm1d) if len(input_shape) == 2 else (nn.Conv2d, nn.BatchNorm2d)
    )
    in_channels, *spatial = input_shape
    blocks = max(1, min(3, int(math.log2(max(1, min(spatial) // 4)))))
    # Any batch layout with the right number of features -> (N, C, L) or (N, C, H, W).
    layers: list[nn.Module] = [nn.Flatten(), nn.Unflatten(1, tuple(input_shape))]
    for _ in range(blocks):
        layers += [
            conv(in_channels, channels, 3, stride=2, padding=1),
            batch_norm(channels),
            nn.ReLU(),
        ]
        in_channels, channels = channels, channels * 2
        spatial = [(s + 1) // 2 for s in spatial]
    layers += [nn.Flatten(), nn.Linear(in_channels * math.prod(spatial), num_classes)]
    return nn.Sequential(*layers)


def resnet18(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 from random init. Below 64 px the stem is CIFAR-style (3x3 stride-1
    conv, no max-pool), as the ImageNet stem would shrink a 32 px image to 1 px."""
    from torchvision.models import resnet18 as tv_resnet18

    if len(input_shape) != 3:
        raise ConfigError(f"model: resnet18 needs image inputs (C, H, W), got {input_shape}")
    channels, height, width = input_shape
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if min(height, width) < 64:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
