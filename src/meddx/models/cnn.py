"""Small CNNs for low-resolution medical images (MedMNIST-size, 28-64 px).

``cnn-small`` is a 4-block VGG-style network (about 0.3 M parameters): on a
2-core CPU it trains on BreastMNIST in seconds, which makes it the default for
the demo and the tests. Larger backbones come from timm (``resnet18`` etc.).
"""

from __future__ import annotations

from typing import Any

from meddx.models._builders import register_model


def _block(cin: int, cout: int) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _small_cnn(num_classes: int, in_chans: int, width: int = 32, dropout: float = 0.2, crop: bool = False) -> Any:
    from collections import OrderedDict

    from torch import nn

    class SmallCNN(nn.Module):
        """Conv blocks with pooling, global average pooling, dropout, linear head."""

        def __init__(self) -> None:
            super().__init__()
            layers = [_block(in_chans, width), nn.MaxPool2d(2), _block(width, width * 2), nn.MaxPool2d(2),
                      _block(width * 2, width * 4), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            named = [(str(i), layer) for i, layer in enumerate(layers)]
            if crop:  # named, not numbered: the weights keep cnn-small's keys (pretrained backbones fit)
                from meddx.preprocess.foreground import ForegroundCrop

                named.insert(0, ("crop", ForegroundCrop()))
            self.features = nn.Sequential(OrderedDict(named))
            self.num_features = width * 4
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))

        def forward_features(self, x: Any) -> Any:
            return self.features(x)

        def forward(self, x: Any) -> Any:
            return self.head(self.features(x))

    return SmallCNN()


@register_model("cnn-small")
def cnn_small(num_classes: int, in_chans: int = 1, **kwargs: Any) -> Any:
    dropout = kwargs.get("drop_rate", kwargs.get("dropout", 0.2))
    return _small_cnn(num_classes, in_chans, width=kwargs.get("width", 32), dropout=dropout)


@register_model("cnn-small-crop")
def cnn_small_crop(num_classes: int, in_chans: int = 1, **kwargs: Any) -> Any:
    """cnn-small behind :class:`meddx.preprocess.foreground.ForegroundCrop` (crop to the head, standardise):
    the small-data recipe's network for images on a dark background such as brain MRI."""
    dropout = kwargs.get("drop_rate", kwargs.get("dropout", 0.2))
    return _small_cnn(num_classes, in_chans, width=kwargs.get("width", 32), dropout=dropout, crop=True)


@register_model("cnn-tiny-crop")
def cnn_tiny_crop(num_classes: int, in_chans: int = 1, **kwargs: Any) -> Any:
    """An 8-channel cnn-small-crop for unit tests."""
    return _small_cnn(num_classes, in_chans, width=8, dropout=kwargs.get("drop_rate", 0.0), crop=True)


@register_model("cnn-tiny")
def cnn_tiny(num_classes: int, in_chans: int = 1, **kwargs: Any) -> Any:
    """A 8-channel variant for unit tests (trains in well under a second)."""
    return _small_cnn(num_classes, in_chans, width=8, dropout=kwargs.get("drop_rate", 0.0))
