"""Contract tests of the atypical-vs-normal classifiers (tiny timm backbones, 64×64, CPU)."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from mitoscope.models.checkpoint import ModelContract, load_model, save_checkpoint
from mitoscope.models.registry import create_model, list_models, model_accepts

N, SIZE = 3, 64

# (architecture, kwargs, expected training losses)
CASES = [
    ("atypical_single", dict(backbone="test_resnet"), {"loss_cls"}),
    ("atypical_single", dict(backbone="test_efficientnet", hidden=(16,)), {"loss_cls"}),
    (
        "atypical_multitask",
        dict(backbone="test_resnet", decoder_channels=(16, 8, 8)),
        {"loss_cls", "loss_seg", "loss_pix"},
    ),
    (
        "atypical_multitask",
        dict(backbone="test_efficientnet", decoder_channels=(8, 8, 8), pos_weight=3.0),
        {"loss_cls", "loss_seg", "loss_pix"},
    ),
    ("atypical_multitask", dict(backbone="test_resnet", aux_heads=False), {"loss_cls"}),
    ("atypical_experts", dict(backbone="test_resnet"), {"loss_experts", "loss_hard"}),
    (
        "atypical_experts",
        dict(backbone="test_resnet", n_experts=5, hardness_classes=4, input_mode="rgb_hed", in_chans=6),
        {"loss_experts", "loss_hard"},
    ),
    (
        "atypical_experts",
        dict(backbone="test_efficientnet", context_crop=40, hidden=32),
        {"loss_experts", "loss_hard"},
    ),
    ("atypical_single", dict(backbone="test_resnet", soft_labels=True), {"loss_cls"}),
    ("atypical_single", dict(backbone="test_resnet", soft_labels=True, mixup_alpha=0.2), {"loss_cls"}),
]
IDS = [f"{a}-{i}" for i, (a, _, _) in enumerate(CASES)]


def _targets(model: torch.nn.Module, n: int = N, size: int = SIZE) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    label = torch.tensor([0.0, 1.0, 1.0, 0.0])[:n]
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    t = {"label": label, "mask": mask}
    e = getattr(model, "n_experts", 3)
    experts = (torch.rand(n, e, generator=g) > 0.5).float()
    experts[0, -1] = -1
    t["experts"] = experts
    t["hard"] = torch.randint(0, getattr(model, "hardness_classes", 2), (n,), generator=g)
    return {k: v for k, v in t.items() if k in model.required_targets}


def _images(n: int = N, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_all_three_are_registered() -> None:
    assert {"atypical_single", "atypical_multitask", "atypical_experts"} <= set(list_models())


def test_builders_record_every_argument_and_reject_unknown_ones() -> None:
    model = create_model("atypical_multitask", backbone="test_resnet", decoder_channels=(8, 8, 8))
    recorded = model.build_kwargs
    assert (
        recorded["decoder_channels"] == [8, 8, 8] and recorded["pos_weight"] == 1.0
    )  # defaults recorded too
    assert recorded["pretrained"] is False
    rebuilt = create_model("atypical_multitask", **recorded)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    with pytest.raises(TypeError, match="dropuot"):
        create_model("atypical_single", backbone="test_resnet", dropuot=0.1)
    assert model_accepts("atypical_experts", "gamma") and not model_accepts("atypical_single", "gamma")
    assert model_accepts("atypical_single", "pos_weight") and not model_accepts("no_such_model", "pos_weight")


@pytest.mark.parametrize("arch,kwargs,losses", CASES, ids=IDS)
def test_eval_outputs(arch, kwargs, losses) -> None:
    model = create_model(arch, **kwargs).eval()
    with torch.no_grad():
        out = model(_images())
    assert out["logits"].shape == (N,) and out["prob"].shape == (N,)
    assert bool(((out["prob"] >= 0) & (out["prob"] <= 1)).all())
    torch.testing.assert_close(torch.sigmoid(out["logits"]), out["prob"], atol=1e-5, rtol=1e-4)
    if arch == "atypical_experts":
        assert out["prob_experts"].shape == (N, model.n_experts)
        torch.testing.assert_close(out["prob"], out["prob_experts"].mean(1))
        assert out["prob_hard"].shape == (N,)
        assert out["prob_hardness"].shape == (N, model.hardness_classes)
        torch.testing.assert_close(out["prob_hardness"].sum(1), torch.ones(N))


@pytest.mark.parametrize("arch,kwargs,losses", CASES, ids=IDS)
def test_training_losses_and_every_parameter_gets_a_gradient(arch, kwargs, losses) -> None:
    model = create_model(arch, **kwargs).train()
    # timm zero-initialises the last BN of each residual block, which blocks the gradient of that block's
    # other layers at step 0 (legitimately); give those BNs a non-zero scale for the check
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d) and module.weight is not None and not module.weight.any():
            torch.nn.init.ones_(module.weight)
    out = model(_images(), _targets(model))
    assert set(out) == losses
    for name, value in out.items():
        assert value.ndim == 0 and torch.isfinite(value), name
    sum(out.values()).backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, missing[:5]


@pytest.mark.parametrize("arch,kwargs,losses", CASES, ids=IDS)
def test_checkpoint_round_trip(tmp_path, arch, kwargs, losses) -> None:
    model = create_model(arch, **kwargs).eval()
    contract = ModelContract(
        arch, dict(model.build_kwargs), "classification", SIZE, mean=model.mean, std=model.std
    )
    path = save_checkpoint(tmp_path / "m.pt", model, contract)
    loaded, c2 = load_model(path)
    x = _images(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["prob"], model(x)["prob"])
    assert c2.mean == tuple(model.mean)


def test_required_targets() -> None:
    assert create_model("atypical_single", backbone="test_resnet").required_targets == {"label"}
    mt = create_model("atypical_multitask", backbone="test_resnet", decoder_channels=(8, 8, 8))
    assert mt.required_targets == {"label", "mask"}
    ex = create_model("atypical_experts", backbone="test_resnet")
    assert ex.required_targets == {"label", "experts", "hard"}


def test_without_aux_drops_decoders_and_keeps_predictions(tmp_path) -> None:
    from mitoscope.models.architectures.atypical_multitask import export_inference_model

    model = create_model("atypical_multitask", backbone="test_resnet", decoder_channels=(16, 8, 8))
    model.train()
    model(_images(), _targets(model))  # move BN statistics away from their init
    model.eval()
    small = export_inference_model(model)
    assert small.seg_decoder is None and small.pix_decoder is None and small.required_targets == {"label"}
    assert not any(k.startswith(("seg_decoder", "pix_decoder")) for k in small.state_dict())
    assert len(small.state_dict()) < len(model.state_dict())
    x = _images(seed=2)
    with torch.no_grad():
        torch.testing.assert_close(small(x)["prob"], model(x)["prob"])
    contract = ModelContract("atypical_multitask", small.build_kwargs, "classification", SIZE)
    assert contract.kwargs["aux_heads"] is False
    loaded, _ = load_model(save_checkpoint(tmp_path / "small.pt", small, contract))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["prob"], model(x)["prob"])
    # the original keeps its decoders
    assert model.seg_decoder is not None


def test_multitask_maps_and_pixel_target() -> None:
    model = create_model("atypical_multitask", backbone="test_resnet", decoder_channels=(8, 8, 8)).eval()
    with torch.no_grad():
        out = model(_images(), return_maps=True)
    assert out["seg_prob"].shape == (N, 1, SIZE, SIZE)
    assert out["pix_prob"].shape == (N, 3, SIZE, SIZE)
    torch.testing.assert_close(out["pix_prob"].sum(1), torch.ones(N, SIZE, SIZE))
    assert "seg_prob" not in model(_images())


def test_multitask_pos_weight_changes_the_classification_loss() -> None:
    losses = []
    for pw in (1.0, 4.0):
        torch.manual_seed(0)
        m = create_model("atypical_multitask", backbone="test_resnet", pos_weight=pw, aux_heads=False).train()
        m.head.layers[-1].bias.data.fill_(-2.0)  # predict "normal": the atypical samples carry the loss
        with torch.no_grad():
            losses.append(float(m(_images(), {"label": torch.tensor([0.0, 1.0, 1.0])})["loss_cls"]))
    assert losses[1] > losses[0]


@torch.no_grad()
def test_single_soft_labels_train_on_the_share_of_votes() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = create_model("atypical_single", backbone="test_resnet", soft_labels=True, dropout=0.0).train()
    model.backbone.eval()  # fixed BN statistics: identical forward passes
    assert model.required_targets == {"label", "experts"}
    x = _images()
    votes = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, -1.0], [-1.0, -1.0, -1.0]])
    t = {"label": torch.tensor([0.0, 1.0, 1.0]), "experts": votes}
    loss = float(model(x, t)["loss_cls"])
    model.eval()
    logits = model(x)["logits"]
    # 1 of 3, 2 of 2 voted atypical; no votes: the label
    assert loss == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, torch.tensor([1 / 3, 1.0, 1.0])))
    )
    assert loss != pytest.approx(float(F.binary_cross_entropy_with_logits(logits, t["label"])))


@torch.no_grad()
def test_single_mixup_trains_on_blended_images_and_targets() -> None:
    import torch.nn.functional as F

    from mitoscope.models.losses import mixup_batch

    torch.manual_seed(0)
    model = create_model("atypical_single", backbone="test_resnet", mixup_alpha=0.4, dropout=0.0).train()
    model.backbone.eval()  # fixed BN statistics: identical forward passes
    assert model.build_kwargs["mixup_alpha"] == 0.4
    x, t = _images(), {"label": torch.tensor([0.0, 1.0, 1.0])}
    torch.manual_seed(5)
    loss = float(model(x, t)["loss_cls"])
    torch.manual_seed(5)
    mixed, target = mixup_batch(x, t["label"], 0.4)
    assert bool(((target > 0) & (target < 1)).any())  # some blend of a 0 and a 1
    model.eval()
    assert loss == pytest.approx(float(F.binary_cross_entropy_with_logits(model(mixed)["logits"], target)))
    assert loss != pytest.approx(float(F.binary_cross_entropy_with_logits(model(x)["logits"], t["label"])))
    assert mixup_batch(x, t["label"], 0.0)[0] is x
    with pytest.raises(ValueError, match="mixup_alpha"):
        create_model("atypical_single", backbone="test_resnet", mixup_alpha=-1.0)


@torch.no_grad()
def test_experts_missing_votes_are_masked() -> None:
    torch.manual_seed(0)
    model = create_model("atypical_experts", backbone="test_resnet", dropout=0.0).train()
    model.backbone.eval()  # fixed BN statistics: identical forward passes
    x = _images()
    t = _targets(model)
    t["experts"][1, 0] = -1
    base = float(model(x, t)["loss_experts"])
    t2 = {k: v.clone() for k, v in t.items()}
    t2["experts"][1, 0] = float("nan")  # NaN is missing too
    assert float(model(x, t2)["loss_experts"]) == pytest.approx(base)
    t3 = {k: v.clone() for k, v in t.items()}
    t3["experts"][1, 0] = 1.0  # a real vote changes the loss
    assert float(model(x, t3)["loss_experts"]) != pytest.approx(base)


@torch.no_grad()
def test_experts_theta_weights_the_two_parts() -> None:
    x = _images()
    parts = {}
    for theta in (0.5, 1.0, 0.0):
        torch.manual_seed(0)
        model = create_model("atypical_experts", backbone="test_resnet", theta=theta, dropout=0.0).train()
        model.backbone.eval()
        parts[theta] = model(x, _targets(model))
    assert float(parts[0.0]["loss_experts"]) == 0.0 and float(parts[1.0]["loss_hard"]) == 0.0
    assert float(parts[0.5]["loss_experts"]) == pytest.approx(
        0.5 * float(parts[1.0]["loss_experts"]), rel=1e-5
    )
    assert float(parts[0.5]["loss_hard"]) == pytest.approx(0.5 * float(parts[0.0]["loss_hard"]), rel=1e-5)


@pytest.mark.parametrize(
    "arch,kwargs,targets,match",
    [
        ("atypical_single", {}, {}, "lack"),
        ("atypical_single", {}, {"label": torch.tensor([0.0, 2.0, 1.0])}, "0/1"),
        (
            "atypical_multitask",
            {"decoder_channels": (8, 8, 8)},
            {"label": torch.zeros(3), "mask": torch.zeros(3, 32, 32)},
            "mask",
        ),
        (
            "atypical_experts",
            {},
            {"label": torch.zeros(3), "experts": torch.zeros(3, 4), "hard": torch.zeros(3)},
            "experts",
        ),
        (
            "atypical_experts",
            {},
            {"label": torch.zeros(3), "experts": torch.full((3, 3), 2.0), "hard": torch.zeros(3)},
            "votes",
        ),
        (
            "atypical_experts",
            {},
            {"label": torch.zeros(3), "experts": torch.zeros(3, 3), "hard": torch.full((3,), 2)},
            "hard",
        ),
    ],
)
def test_malformed_targets_raise_clearly(arch, kwargs, targets, match) -> None:
    model = create_model(arch, backbone="test_resnet", **kwargs).train()
    with pytest.raises(ValueError, match=match):
        model(_images(), targets)


def test_malformed_images_and_kwargs_raise_clearly() -> None:
    model = create_model("atypical_single", backbone="test_resnet").eval()
    with pytest.raises(ValueError, match="channels"):
        model(torch.zeros(1, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.zeros(3, SIZE, SIZE))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(ValueError, match="targets"):
        model.train()(torch.zeros(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="input_mode"):
        create_model("atypical_experts", backbone="test_resnet", input_mode="hsv")
    with pytest.raises(ValueError, match="in_chans"):
        create_model("atypical_experts", backbone="test_resnet", in_chans=6)
    with pytest.raises(ValueError, match="hardness_classes"):
        create_model("atypical_experts", backbone="test_resnet", hardness_classes=3)
    with pytest.raises(ValueError, match="at least"):
        create_model("atypical_experts", backbone="test_resnet", context_crop=80).eval()(_images())


def test_rgb_hed_input_matches_numpy_hed() -> None:
    """The HED channels the model computes equal skimage's on the un-normalised image."""
    import numpy as np

    from mitoscope.data.stain import rgb_to_hed

    model = create_model("atypical_experts", backbone="test_resnet", input_mode="rgb_hed").eval()
    rgb = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mean, std = torch.tensor(model.mean).view(3, 1, 1), torch.tensor(model.std).view(3, 1, 1)
    x = ((torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std)[None]
    model.hed_norm = torch.nn.Identity()
    stacked = model._backbone_input(x)
    assert stacked.shape == (1, 6, SIZE, SIZE)
    np.testing.assert_allclose(stacked[0, 3:].permute(1, 2, 0).numpy(), rgb_to_hed(rgb), atol=2e-4)


MODULES = [
    "mitoscope.models.backbones",
    "mitoscope.models.losses",
    "mitoscope.models.heads",
    "mitoscope.models.decoders",
    "mitoscope.models.architectures.atypical_single",
    "mitoscope.models.architectures.atypical_multitask",
    "mitoscope.models.architectures.atypical_experts",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize(
    "arch,kwargs,losses", [CASES[0], CASES[2], CASES[5]], ids=["single", "multitask", "experts"]
)
def test_a_few_steps_reduce_the_loss(arch, kwargs, losses) -> None:
    """The summed training losses go down when fitting one fixed batch (the models can learn)."""
    torch.manual_seed(0)
    model = create_model(arch, **{**kwargs, "dropout": 0.0}).train()
    x = _images(n=4)
    t = _targets(model, n=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(15):
        loss = sum(model(x, t).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.7 * history[0], history
