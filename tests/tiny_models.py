"""Models small enough for unit tests, registered once for every test module that imports them."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from mitoscope.models.registry import register_model

#: The registry name of :class:`TinyClassifier`.
TINY_CLASSIFIER = "tests_tiny_classifier"


class TinyClassifier(nn.Module):
    """A one-conv binary classifier. Not rotation invariant (a strided conv on the top-left), so TTA changes the
    result."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 5, stride=3)
        self.fc = nn.Linear(4 * 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = nn.functional.adaptive_avg_pool2d(self.conv(x), 2).flatten(1)
        logits = self.fc(f)[:, 0]
        return {"logits": logits, "prob": torch.sigmoid(logits)}


def tiny_classifier(seed: int) -> TinyClassifier:
    """A :class:`TinyClassifier` with weights drawn from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return TinyClassifier().eval()


with contextlib.suppress(ValueError):  # imported a second time (pytest's importlib mode)
    register_model(TINY_CLASSIFIER)(TinyClassifier)
