"""Contract tests for the multi-task RetinaNet detector (tiny timm backbones, small inputs, CPU)."""

from __future__ import annotations

import pytest
import torch

from mitoscope.models.registry import create_model, list_models

TINY = {"backbone": "test_resnet", "fpn_channels": 16, "aux_hidden": 8}


def _targets(n: int, *, with_box: bool = True) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(n):
        boxes = torch.tensor([[8.0, 10.0, 33.0, 35.0]]) if with_box and i % 2 == 0 else torch.zeros(0, 4)
        out.append(
            {
                "boxes": boxes,
                "labels": torch.ones(len(boxes), dtype=torch.int64),
                "tumor": torch.tensor(i % 3),
                "foreground": torch.tensor(float(len(boxes) > 0)),
            }
        )
    return out


def test_registered() -> None:
    assert "retinanet_multitask" in list_models()


@pytest.mark.parametrize(
    ("backbone", "size", "batch", "levels"),
    [
        ("test_resnet", 64, 1, (2, 3, 4)),
        ("test_resnet", 96, 2, (2, 3)),
        ("test_efficientnet", 64, 3, (2, 3, 4)),
        ("test_efficientnet", 80, 2, (3, 4)),  # not a multiple of 32: padded inside, boxes stay in the image
    ],
)
def test_shape_contract(backbone: str, size: int, batch: int, levels: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(
        "retinanet_multitask",
        backbone=backbone,
        fpn_channels=16,
        tile_size=size,
        mpp=1.0,
        feature_levels=levels,
        num_tumor_types=3,
        score_thresh=0.0,
        detections_per_img=20,
    )
    images = [torch.rand(3, size, size) for _ in range(batch)]
    model.train()
    losses = model(images, _targets(batch))
    assert set(losses) == {"loss_cls", "loss_box", "loss_tumor", "loss_foreground"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, list) and len(out) == batch
    for det in out:
        assert set(det) == {"boxes", "scores", "labels"}
        k = det["boxes"].shape[0]
        assert det["boxes"].shape == (k, 4) and det["scores"].shape == (k,) and det["labels"].shape == (k,)
        assert 0 < k <= 20
        assert bool((det["labels"] == 1).all())
        assert bool((det["boxes"] >= 0).all()) and bool((det["boxes"] <= size).all())


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = create_model("retinanet_multitask", **TINY, tile_size=64, mpp=1.0, num_tumor_types=3).train()
    losses = model([torch.rand(3, 64, 64) for _ in range(4)], _targets(4))
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    zero = [n for n, p in model.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) == 0.0]
    assert not [n for n in zero if n.startswith(("tumor_head", "foreground_head"))]


@pytest.mark.parametrize(
    ("aux_tumor", "aux_foreground", "expected"),
    [
        (False, False, {"loss_cls", "loss_box"}),
        (True, False, {"loss_cls", "loss_box", "loss_tumor"}),
        (False, True, {"loss_cls", "loss_box", "loss_foreground"}),
        (True, True, {"loss_cls", "loss_box", "loss_tumor", "loss_foreground"}),
    ],
)
def test_ablation_switches_remove_heads(aux_tumor: bool, aux_foreground: bool, expected: set[str]) -> None:
    model = create_model(
        "retinanet_multitask",
        **TINY,
        tile_size=64,
        mpp=1.0,
        aux_tumor=aux_tumor,
        aux_foreground=aux_foreground,
    ).train()
    assert (model.tumor_head is not None) == aux_tumor
    assert (model.foreground_head is not None) == aux_foreground
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert ("tumor_head" in names) == aux_tumor and ("foreground_head" in names) == aux_foreground
    losses = model([torch.rand(3, 64, 64)], _targets(1))
    assert set(losses) == expected


def test_anchors_follow_box_size_and_mpp() -> None:
    at_quarter = create_model("retinanet_multitask", **TINY, tile_size=64, mpp=0.25)
    at_half = create_model("retinanet_multitask", **TINY, tile_size=64, mpp=0.5, anchor_scales=(1.0,))
    assert at_quarter.anchor_generator.sizes[0] == (40.0, 50.0, 62.5)
    assert at_half.anchor_generator.sizes[0] == (25.0,)


def test_no_resizing_inside_the_model() -> None:
    model = create_model("retinanet_multitask", **TINY, tile_size=64, mpp=1.0).eval()
    images = [torch.rand(3, 100, 90)]  # larger than tile_size: must not be shrunk
    batch, _ = model.transform(images)
    assert batch.image_sizes == [(100, 90)]


def test_normalisation_follows_the_backbone() -> None:
    lite = create_model(
        "retinanet_multitask", backbone="tf_efficientnet_lite0", fpn_channels=16, tile_size=64
    )
    assert lite.transform.image_mean == [0.5, 0.5, 0.5]
    custom = create_model("retinanet_multitask", **TINY, tile_size=64, mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    assert custom.transform.image_mean == [0.1, 0.2, 0.3]


def test_unknown_tumour_is_ignored_and_empty_crops_train() -> None:
    model = create_model("retinanet_multitask", **TINY, tile_size=64, mpp=1.0).train()
    targets = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "tumor": torch.tensor(-1)}
    ]
    losses = model([torch.rand(3, 64, 64)], targets)
    assert float(losses["loss_tumor"].detach()) == 0.0
    assert torch.isfinite(losses["loss_cls"]) and torch.isfinite(losses["loss_foreground"])


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])},
            "labels must all be 1",
        ),
        ({"boxes": torch.tensor([[10.0, 0.0, 5.0, 10.0]]), "labels": torch.tensor([1])}, "degenerate box"),
        ({"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1, 1])}, "1 boxes but 2"),
    ],
)
def test_malformed_targets_raise(target: dict[str, torch.Tensor], message: str) -> None:
    model = create_model("retinanet_multitask", **TINY, tile_size=64, mpp=1.0).train()
    with pytest.raises(ValueError, match=message):
        model([torch.rand(3, 64, 64)], [target])


def test_training_mode_needs_targets() -> None:
    model = create_model("retinanet_multitask", **TINY, tile_size=64).train()
    with pytest.raises(ValueError, match="targets are required"):
        model([torch.rand(3, 64, 64)])


def test_predict_aux_shapes() -> None:
    model = create_model("retinanet_multitask", **TINY, tile_size=64, num_tumor_types=4).eval()
    aux = model.predict_aux([torch.rand(3, 64, 64), torch.rand(3, 64, 64)])
    assert aux["tumor_probs"].shape == (2, 4)
    assert torch.allclose(aux["tumor_probs"].sum(1), torch.ones(2))
    assert aux["foreground_prob"].shape == (2,)


def test_a_few_steps_reduce_the_detection_losses() -> None:
    """The detector can learn: a few Adam steps on one figure cut its detection losses clearly."""
    torch.manual_seed(0)
    model = create_model("retinanet_multitask", **TINY, tile_size=64, mpp=0.5, feature_levels=(2, 3)).train()
    image = torch.full((3, 64, 64), 0.9)
    image[:, 24:36, 30:42] = 0.1  # a dark "figure" centred at (36, 30)
    target = [{"boxes": torch.tensor([[23.5, 17.5, 48.5, 42.5]]), "labels": torch.tensor([1])}]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        opt.zero_grad()
        losses = model([image], target)
        history.append(float((losses["loss_cls"] + losses["loss_box"]).detach()))
        sum(losses.values()).backward()
        opt.step()
    assert min(history[-5:]) < 0.85 * history[0]
