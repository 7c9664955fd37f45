"""benchmarks/fused_detector.py: rule 33's fused passes (flipped views, several models)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

_SPEC = importlib.util.spec_from_file_location(
    "fused_detector", Path(__file__).resolve().parents[1] / "benchmarks" / "fused_detector.py"
)
assert _SPEC is not None and _SPEC.loader is not None
fused_detector = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fused_detector)


class BrightestPixel(nn.Module):
    """A detector that boxes the brightest pixel of the first channel (score 0.9) and, in the left half of
    the image only, the darkest one (score 0.5)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for im in images:
            width = im.shape[-1]
            points = [(int(im[0].argmax()), 0.9)]
            dark = int(im[0].argmin())
            if dark % width < width // 2:
                points.append((dark, 0.5))
            centres = [(i % width + 0.5, i // width + 0.5) for i, _ in points]  # pixel i spans [i, i + 1)
            boxes = [[x - 2.0, y - 2.0, x + 2.0, y + 2.0] for x, y in centres]
            out.append(
                {
                    "boxes": torch.tensor(boxes),
                    "scores": torch.tensor([s for _, s in points]),
                    "labels": torch.ones(len(points), dtype=torch.int64),
                }
            )
        return out


def _image() -> torch.Tensor:
    im = torch.full((3, 32, 32), 0.5)
    im[0, 10, 6] = 1.0  # brightest: seen by every view, at the same place once mapped back
    im[0, 20, 8] = 0.0  # darkest: in the left half, so its horizontal flip does not see it
    return im


def test_flipped_views_map_back_and_average_with_zero_for_a_missed_point() -> None:
    model = fused_detector.FusedDetector([BrightestPixel()], views=("identity", "hflip"), radius_px=3).eval()
    (out,) = model([_image()])
    centres = ((out["boxes"][:, :2] + out["boxes"][:, 2:]) / 2).tolist()
    assert centres[0] == pytest.approx([6.5, 10.5])
    assert out["scores"].tolist() == pytest.approx([0.9, 0.25])  # (0.5 + 0) / 2: one view missed it
    assert centres[1] == pytest.approx([8.5, 20.5])


def test_one_member_one_view_keeps_the_member_s_points() -> None:
    model = fused_detector.FusedDetector([BrightestPixel()], radius_px=3).eval()
    reference = BrightestPixel()([_image()])[0]
    (out,) = model([_image()])
    assert torch.allclose(out["boxes"], reference["boxes"])
    assert torch.allclose(out["scores"], reference["scores"])


def test_every_view_is_its_own_inverse() -> None:
    boxes = torch.tensor([[1.0, 2.0, 5.0, 9.0]])
    for view in fused_detector.VIEWS:
        again = fused_detector.unview_boxes(fused_detector.unview_boxes(boxes, view, 16, 12), view, 16, 12)
        assert torch.equal(again, boxes), view
        image = torch.arange(12.0 * 16).reshape(1, 12, 16)
        assert torch.equal(fused_detector.view_images(fused_detector.view_images(image, view), view), image)


def test_a_pass_s_points_within_the_radius_count_once() -> None:
    a = (np.array([[0.0, 0, 4, 4], [1, 0, 5, 4]]), np.array([0.8, 0.7]))  # two points on one figure
    boxes, scores = fused_detector.fuse_passes([a, (np.zeros((0, 4)), np.zeros(0))], radius=3)
    assert scores.tolist() == pytest.approx([0.4])
    assert boxes.shape == (1, 4)


def test_unknown_views_and_training_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown views"):
        fused_detector.FusedDetector([BrightestPixel()], views=("transpose",))
    with pytest.raises(RuntimeError, match="only predicts"):
        fused_detector.FusedDetector([BrightestPixel()]).train()([_image()])
