"""Inference-time folding of batch norms into the convolutions that feed them.

In eval mode a batch norm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution with rescaled
weights and a bias. Folding removes a full pass over every activation map per batch norm — and, under CPU bf16
autocast, the float32 round trip that batch norm makes — which speeds up an EfficientNet-Lite forward about 1.5×
on a CPU (``benchmarks/classify_speed.py``, ``forward_unfused``). Pairs are found from the actual data flow of
one forward pass (the tensor a convolution returns is the one the batch norm receives), and the folded model is
checked against the original on random input; on any mismatch the original is returned unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


def _bn_remainder(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What is left of ``bn`` once its affine map is folded away, or ``None`` when it cannot be folded."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if type(bn).__name__ == "BatchNormAct2d" and isinstance(drop, nn.Module) and isinstance(act, nn.Module):
        return nn.Sequential(drop, act)  # timm's batch norm + activation
    return None


def _conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """``(conv, bn)`` pairs where ``bn`` receives exactly the tensor ``conv`` returned, in one forward pass."""
    produced: dict[int, tuple[torch.Tensor, nn.Conv2d]] = {}  # id(output) -> (output kept alive, conv)
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def after_conv(conv: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced[id(output)] = (output, conv)  # type: ignore[assignment]

    def before_bn(bn: nn.Module, inputs: Any) -> None:
        hit = produced.get(id(inputs[0])) if inputs else None
        if hit is not None and hit[0] is inputs[0]:
            pairs.append((hit[1], bn))  # type: ignore[arg-type]

    hooks = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    # a module called more than once (a shared backbone) is seen once per call: keep each pair once, and only
    # pairs whose conv always feeds that batch norm and whose batch norm always follows that conv
    partners: dict[int, set[int]] = {}
    for conv, bn in pairs:
        partners.setdefault(id(conv), set()).add(id(bn))
        partners.setdefault(id(bn), set()).add(id(conv))
    unique = {(id(c), id(b)): (c, b) for c, b in pairs if len(partners[id(c)]) == len(partners[id(b)]) == 1}
    return list(unique.values())


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out.float()]
    if isinstance(out, dict):
        return [v.float() for k, v in sorted(out.items()) if isinstance(v, torch.Tensor)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _outputs(v)]
    return []


def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of ``model`` (in eval mode) with every conv → batch-norm pair folded, and how many were folded.

    Args:
        model: any module; it is not modified.
        example: one input batch (its size and device are used; values do not matter).

    Returns:
        ``(folded copy, n_pairs)``, or ``(model, 0)`` when nothing could be folded or the folded copy's outputs
        differ from the original's on random input.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> net[1].running_mean.fill_(0.3); net[1].running_var.fill_(2.0)  # doctest: +ELLIPSIS
        tensor(...)...
        >>> folded, n = fold_batchnorm(net, torch.zeros(1, 3, 8, 8))
        >>> n, type(folded[1]).__name__
        (1, 'Identity')
        >>> x = torch.randn(2, 3, 8, 8)
        >>> bool(torch.allclose(folded(x), net(x), atol=1e-5))
        True
    """
    was_training = model.training
    model.eval()
    candidate = copy.deepcopy(model).eval()
    pairs = [(c, b) for c, b in _conv_bn_pairs(candidate, example) if _bn_remainder(b) is not None]
    if not pairs or any(b.running_mean is None or b.running_var is None for _, b in pairs):
        model.train(was_training)
        return model, 0
    parents = {
        id(child): (parent, name) for parent in candidate.modules() for name, child in parent.named_children()
    }
    with torch.no_grad():
        for conv, bn in pairs:
            assert bn.running_mean is not None and bn.running_var is not None  # checked above
            weight, bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            conv.weight, conv.bias = weight, bias
            parent, name = parents[id(bn)]
            setattr(parent, name, _bn_remainder(bn))
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(example.shape, generator=generator).to(example.device, example.dtype)
    with torch.no_grad():
        before, after = _outputs(model(probe)), _outputs(candidate(probe))
    model.train(was_training)
    same = len(before) == len(after) > 0 and all(
        a.shape == b.shape and torch.allclose(a, b, rtol=1e-3, atol=1e-4)
        for a, b in zip(before, after, strict=True)
    )
    return (candidate, len(pairs)) if same else (model, 0)
