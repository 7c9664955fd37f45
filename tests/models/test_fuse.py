from __future__ import annotations

import pytest
import torch
from torch import nn

from mitoscope.engine.config import ClassifierConfig, load_config
from mitoscope.models.fuse import fold_batchnorm
from mitoscope.models.registry import create_model


def _randomise_bn_stats(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def test_folds_every_batchnorm_of_the_recipe_classifier_with_the_same_outputs() -> None:
    torch.manual_seed(0)
    backbone = load_config("classifier-cpu", ClassifierConfig).model.kwargs["backbone"]
    model = create_model(
        "atypical_single", backbone=backbone, pretrained=False, hidden=[16], dropout=0.3
    ).eval()
    with torch.no_grad():
        _randomise_bn_stats(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded, n = fold_batchnorm(model, torch.zeros(1, 3, 64, 64))
    assert n == n_bn > 40
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x)["logits"], model(x)["logits"], rtol=1e-4, atol=1e-5)


class _InplaceBetween(nn.Module):
    """conv → in-place ReLU → batch norm: the batch norm receives the conv's tensor object, modified."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.act(self.conv(x)))


def test_a_pair_that_is_not_conv_then_batchnorm_leaves_the_model_unchanged() -> None:
    model = _InplaceBetween().eval()
    with torch.no_grad():
        _randomise_bn_stats(model)
    folded, n = fold_batchnorm(model, torch.zeros(1, 3, 8, 8))
    assert n == 0 and folded is model  # the check on random input caught the wrong fold


def test_batchnorm_without_a_conv_before_it_is_kept() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        _randomise_bn_stats(model)
    folded, n = fold_batchnorm(model, torch.zeros(1, 3, 8, 8))
    assert n == 1
    assert isinstance(folded[0], nn.BatchNorm2d) and isinstance(folded[2], nn.Identity)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_the_original_keeps_its_mode(training: bool) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train(training)
    folded, _ = fold_batchnorm(model, torch.zeros(1, 3, 8, 8))
    assert model.training is training and not folded.training


def test_classifier_folds_its_members_and_predicts_the_same() -> None:
    import numpy as np

    from mitoscope.engine.ensemble import Ensemble
    from mitoscope.inference.classify import Classifier
    from mitoscope.models.checkpoint import ModelContract

    torch.manual_seed(0)
    model = create_model(
        "atypical_single", backbone="tf_efficientnet_lite0", pretrained=False, hidden=[8]
    ).eval()
    with torch.no_grad():
        _randomise_bn_stats(model)
    contract = ModelContract("atypical_single", {}, "classification", input_size=64)
    patches = [np.random.default_rng(k).integers(0, 256, (64, 64, 3), dtype=np.uint8) for k in range(3)]
    fused = Classifier(Ensemble([model], [contract]), precision="fp32")
    plain = Classifier(Ensemble([model], [contract]), precision="fp32", fuse_batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.ensemble.models[0].modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.ensemble.models[0].modules())
    np.testing.assert_allclose(fused.predict_arrays(patches), plain.predict_arrays(patches), atol=1e-5)


def test_detector_folds_its_backbone_with_the_same_features() -> None:
    import copy

    from mitoscope.inference.detect import Detector
    from mitoscope.models.checkpoint import ModelContract

    torch.manual_seed(0)
    model = create_model("retinanet_multitask", backbone="test_resnet", fpn_channels=32, tile_size=64).eval()
    with torch.no_grad():
        _randomise_bn_stats(model)
    contract = ModelContract("retinanet_multitask", {}, "detection", input_size=64)
    folded = Detector(copy.deepcopy(model), contract).model
    plain = Detector(model, contract, fuse_batchnorm=False).model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.backbone.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.backbone.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(folded.backbone(x).values(), plain.backbone(x).values(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


class _SharedTwice(nn.Module):
    """One conv → batch-norm block applied to the input and to its centre crop (like a context branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x).mean(dim=(2, 3)) + self.block(x[:, :, 2:-2, 2:-2]).mean(dim=(2, 3))


def test_a_block_called_twice_is_folded_once() -> None:
    model = _SharedTwice().eval()
    with torch.no_grad():
        _randomise_bn_stats(model)
    folded, n = fold_batchnorm(model, torch.zeros(1, 3, 12, 12))
    assert n == 1 and isinstance(folded.block[1], nn.Identity)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
