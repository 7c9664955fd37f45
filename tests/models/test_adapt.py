from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mitoscope.engine.ensemble import Ensemble
from mitoscope.inference.classify import Classifier
from mitoscope.io.catalog import make_catalog
from mitoscope.models.adapt import adapt_batchnorm
from mitoscope.models.checkpoint import ModelContract
from mitoscope.models.registry import create_model


def _conv_bn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5)).eval()


def test_statistics_become_those_of_the_new_domain_and_weights_stay() -> None:
    model = _conv_bn()
    weights = {
        k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "batches" not in k
    }
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 3, 8, 8, generator=gen) * 2.0 + 3.0 for _ in range(4)]
    seen = adapt_batchnorm(model, batches)
    assert seen == 64 and not model.training
    with torch.no_grad():
        conv_out = [model[0](b) for b in batches]
    expected_mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in conv_out]).mean(0)
    expected_var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in conv_out]).mean(0)
    torch.testing.assert_close(model[1].running_mean, expected_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[1].running_var, expected_var, rtol=1e-4, atol=1e-5)
    assert model[1].momentum == 0.1  # restored
    for k, v in weights.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_adapted_outputs_are_normalised_on_the_new_domain() -> None:
    model = _conv_bn()
    shifted = [torch.randn(32, 3, 8, 8) + 5.0 for _ in range(3)]
    adapt_batchnorm(model, shifted)
    with torch.no_grad():
        pre_act = model[1](model[0](torch.cat(shifted)))
    assert pre_act.mean(dim=(0, 2, 3)).abs().max() < 0.05  # centred, up to the bias (zero here)


def test_frozen_stages_keep_their_pretrained_statistics_unless_asked() -> None:
    torch.manual_seed(0)
    model = create_model(
        "atypical_single", backbone="test_resnet", pretrained=False, hidden=[8], frozen_stages=2
    ).eval()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    frozen = [m for m in norms if not any(p.requires_grad for p in m.parameters())]
    trained = [m for m in norms if m not in frozen]
    assert frozen and trained
    before = {id(m): m.running_mean.clone() for m in norms}
    batches = [torch.randn(8, 3, 64, 64) + 2.0 for _ in range(4)]
    adapt_batchnorm(model, batches)
    assert all(torch.equal(before[id(m)], m.running_mean) for m in frozen)
    assert all(not torch.equal(before[id(m)], m.running_mean) for m in trained)
    adapt_batchnorm(model, batches, include_frozen=True)
    assert all(not torch.equal(before[id(m)], m.running_mean) for m in frozen)
    # training afterwards still keeps the frozen stages in eval mode (their hook is untouched)
    model.train()
    frozen_mean = frozen[0].running_mean.clone()
    model(torch.randn(4, 3, 64, 64), {"label": torch.zeros(4)})
    assert torch.equal(frozen_mean, frozen[0].running_mean)


def test_too_few_patches_raise_and_leave_the_statistics() -> None:
    model = _conv_bn()
    before = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="at least 32 patches"):
        adapt_batchnorm(model, [torch.randn(8, 3, 8, 8) + 4.0, torch.randn(1, 3, 8, 8)])
    assert torch.equal(before, model[1].running_mean)
    with pytest.raises(ValueError, match="no batch norms"):
        adapt_batchnorm(nn.Conv2d(3, 1, 1), [torch.zeros(64, 3, 2, 2)])


def _lite0_classifier(fuse: bool, members: int = 1) -> Classifier:
    models, contracts = [], []
    for _ in range(members):
        torch.manual_seed(0)
        models.append(
            create_model(
                "atypical_single", backbone="tf_efficientnet_lite0", pretrained=False, hidden=[8]
            ).eval()
        )
        contracts.append(ModelContract("atypical_single", {}, "classification", input_size=64))
    return Classifier(Ensemble(models, contracts), precision="fp32", fuse_batchnorm=fuse)


def test_classifier_adapts_on_a_catalog_then_folds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    patches = [np.clip(rng.normal(200, 20, (64, 64, 3)), 0, 255).astype(np.uint8) for _ in range(40)]
    files = []
    for i, p in enumerate(patches):
        files.append(str(tmp_path / f"p{i}.png"))
        Image.fromarray(p).save(files[-1])
    catalog = make_catalog({"image": f} for f in files)

    with pytest.raises(RuntimeError, match="already folded"):
        _lite0_classifier(fuse=True).adapt_batchnorm(catalog)

    plain = _lite0_classifier(fuse=False).predict_arrays(patches)
    clf = _lite0_classifier(fuse=False)
    assert clf.adapt_batchnorm(catalog, batch_size=16, max_patches=36, fold=False) == 36
    assert any(isinstance(m, nn.BatchNorm2d) for m in clf.ensemble.models[0].modules())
    adapted = clf.predict_arrays(patches)
    clf.fold_batchnorm()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in clf.ensemble.models[0].modules())
    np.testing.assert_allclose(clf.predict_arrays(patches), adapted, atol=1e-5)
    assert np.abs(adapted - plain).max() > 1e-3
    with pytest.raises(ValueError, match="at least 32 patches"):
        _lite0_classifier(fuse=False).adapt_batchnorm(catalog, max_patches=20)
    pair = _lite0_classifier(fuse=False, members=2)  # both members adapt on the same patches
    pair.adapt_batchnorm(catalog, batch_size=16, max_patches=36)
    member_probs = pair.predict_arrays_full(patches).member_probs
    np.testing.assert_allclose(member_probs[:, 0], adapted, atol=1e-5)
    np.testing.assert_allclose(member_probs[:, 1], adapted, atol=1e-5)
