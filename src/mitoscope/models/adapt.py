"""Test-time adaptation of batch-norm statistics to a new domain (AdaBN, Li et al. 2018).

A model trained on one lab's slides normalises its feature maps with the running means and variances of that
lab's images. Patches from another scanner or stain shift those statistics, and with them the model's scores
and the threshold that was chosen in domain. AdaBN re-estimates the statistics on unlabelled images of the new
domain (no labels, no gradient, weights unchanged), as ``torch.optim.swa_utils.update_bn`` does for weight
averages. Only statistics that came from the training data are replaced by default: the batch norms of frozen
stages (:func:`mitoscope.models.backbones.freeze_stages`) normalise with their pretrained ImageNet statistics
in training as well, and the layers after them learned on features normalised that way
(``include_frozen=True`` re-estimates those too). Run it before :func:`mitoscope.models.fuse.fold_batchnorm`,
which bakes the statistics into the convolutions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from mitoscope.models.backbones import in_frozen_stage

MIN_PATCHES = 32


def _batch_norms(model: nn.Module, include_frozen: bool) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and (include_frozen or not in_frozen_stage(m))
    ]


def _use_batch_statistics(module: nn.Module, _args: Any) -> None:
    module.training = True


@torch.no_grad()
def adapt_batchnorm(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    include_frozen: bool = False,
    min_patches: int = MIN_PATCHES,
) -> int:
    """Replace the running statistics of the batch norms in ``model`` by those of ``batches``.

    The model runs in eval mode (dropout off) except its batch norms, which normalise with each batch's own
    statistics and accumulate an equal-weight average of them (``momentum=None``), so later layers see inputs
    normalised the way they will be at inference. Batches of one patch are skipped (no variance). The model is
    left in eval mode.

    Args:
        model: the model (its outputs are ignored; anything ``model(batch)`` accepts).
        batches: float input tensors ``(N, C, H, W)`` on the model's device, preferably in random order (a
            batch of one class only shifts the statistics of the deeper layers).
        include_frozen: also re-estimate the batch norms of frozen stages (by default they keep their
            pretrained statistics, as in training).
        min_patches: fewer patches than this raise ``ValueError`` (too few to estimate the statistics).

    Returns:
        The number of patches the statistics were estimated from.

    Raises:
        ValueError: the model has no batch norms to adapt, or the batches hold fewer than ``min_patches``
            patches. On any error the statistics are left as they were.

    Examples:
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
        >>> adapt_batchnorm(m, [torch.full((8, 3, 4, 4), 2.0) + torch.randn(8, 3, 4, 4)] * 4)
        32
        >>> m.training, bool(m[1].running_mean.abs().sum() > 0)
        (False, True)
    """
    norms = _batch_norms(model, include_frozen)
    if not norms:
        raise ValueError("the model has no batch norms with running statistics to adapt")
    saved = [(bn.running_mean, bn.running_var, bn.num_batches_tracked) for bn in norms]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:  # fresh buffers: the saved ones stay intact until the new ones are complete
        bn.running_mean = torch.zeros_like(bn.running_mean)  # type: ignore[arg-type]
        bn.running_var = torch.ones_like(bn.running_var)  # type: ignore[arg-type]
        bn.num_batches_tracked = torch.zeros_like(bn.num_batches_tracked)  # type: ignore[arg-type]
        bn.momentum = None
    # registered after any hook that keeps a frozen stage in eval mode, so this one has the last word
    hooks = [bn.register_forward_pre_hook(_use_batch_statistics) for bn in norms]
    model.eval()
    seen = 0
    try:
        for batch in batches:
            if batch.shape[0] < 2:
                continue
            model(batch)
            seen += int(batch.shape[0])
        if seen < min_patches:
            raise ValueError(
                f"adapting batch norms needs at least {min_patches} patches of the new domain, got {seen}"
            )
    except BaseException:
        for bn, (mean, var, count) in zip(norms, saved, strict=True):
            bn.running_mean, bn.running_var, bn.num_batches_tracked = mean, var, count
        raise
    finally:
        for hook in hooks:
            hook.remove()
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    return seen
