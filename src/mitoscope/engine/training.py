"""The training core every task shares: set-up, optimiser and schedule, the loop call, threshold and contract.

A task (:mod:`mitoscope.engine.classifier_training`, :mod:`mitoscope.engine.detector_training`) supplies its model
builder, datasets, evaluation and export; everything else is written once here and driven by the shared
:class:`~mitoscope.engine.config.OptimConfig` and :class:`~mitoscope.engine.config.TrainConfig` sections:

- :func:`start_run`: the process group under ``torchrun``, torch's threads, the seeds and the device;
- :func:`train_loader`: the training ``DataLoader`` (this rank's shuffled share unless a sampler is given);
- :func:`prepare_model`: device, channels-last memory format, ``DistributedDataParallel`` under torchrun;
- :func:`fit_recipe`: :func:`build_optimizer`, :func:`build_scheduler` and :func:`~mitoscope.engine.loop.fit`
  with the train section's epochs, early stopping, mixed precision, gradient clipping, weight average and task
  weights;
- :func:`training_contract`, :func:`store_threshold` and :func:`kept_checkpoint`: the checkpoint contract, the
  callback that writes the validation-tuned threshold into it, and the checkpoint a run keeps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler

from mitoscope.engine import distributed as D
from mitoscope.engine.config import OptimConfig, TrainConfig, config_to_dict
from mitoscope.engine.loop import LAST_CHECKPOINT, Callback, EpochState, FitResult, fit
from mitoscope.engine.seed import seed_everything, seed_worker
from mitoscope.models.checkpoint import ModelContract, read_checkpoint
from mitoscope.utils.device import resolve_device
from mitoscope.utils.jsonable import to_jsonable

# --------------------------------------------------------------------------------------------------------------
# Optimiser and schedule
# --------------------------------------------------------------------------------------------------------------


def build_optimizer(cfg: OptimConfig, params: Any) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (momentum, Nesterov) from the ``optim`` section.

    Examples:
        >>> build_optimizer(OptimConfig(name="adam", lr=1e-3), nn.Linear(2, 1).parameters()).__class__.__name__
        'Adam'
    """
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=True
        )
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule: linear warm-up over ``warmup_epochs``, then cosine to ``min_lr_ratio`` (or constant).

    Examples:
        >>> opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
        >>> s = build_scheduler(OptimConfig(scheduler="cosine"), opt, steps_per_epoch=10, epochs=1)
        >>> for _ in range(10): opt.step(); s.step()
        >>> round(opt.param_groups[0]["lr"], 3)
        0.01
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    floor = float(cfg.min_lr_ratio)
    cosine = cfg.scheduler == "cosine"

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------------------------
# Set-up: process group, threads, seeds, device; loader; model
# --------------------------------------------------------------------------------------------------------------


def start_run(train: TrainConfig, device: str | torch.device, *, seed: int | None = None) -> torch.device:
    """Join the ``torchrun`` process group (if any), set torch's threads, seed every generator; the device.

    Args:
        train: the ``train`` section (``threads``, ``seed``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``… (under torchrun ``"auto"`` is the local rank's GPU).
        seed: the seed (default ``train.seed``; e.g. offset per fold).

    Examples:
        >>> start_run(TrainConfig(seed=3), "cpu").type
        'cpu'
    """
    D.init_distributed(device="cpu" if str(device) == "cpu" else None)
    if train.threads:
        torch.set_num_threads(int(train.threads))
    seed_everything(train.seed if seed is None else seed)
    return resolve_device(device)


def train_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    sampler: Sampler[Any] | None = None,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    persistent_workers: bool = False,
) -> DataLoader[Any]:
    """The training loader: ``sampler``, else this rank's shuffled share (a seeded shuffle in one process).

    The last incomplete batch is dropped when a rank has more than one batch (a batch of one breaks
    BatchNorm). Workers are seeded (:func:`~mitoscope.engine.seed.seed_worker`); ``persistent_workers`` keeps
    them (and their caches) between epochs, for datasets that do not change in the main process.

    Examples:
        >>> loader = train_loader(list(range(10)), batch_size=4, device=torch.device("cpu"), seed=0)
        >>> [len(b) for b in loader]
        [4, 4]
    """
    generator = None
    if sampler is None:
        info = D.get_info()
        if info.is_distributed:
            sampler = DistributedSampler(
                dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed
            )
        else:
            generator = torch.Generator().manual_seed(seed)
            sampler = RandomSampler(dataset, generator=generator)  # type: ignore[arg-type]
    per_rank = len(sampler)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        drop_last=per_rank > batch_size,
        worker_init_fn=seed_worker,
        persistent_workers=persistent_workers and num_workers > 0,
        generator=generator,
    )


def set_loader_epoch(loader: DataLoader[Any], epoch: int) -> None:
    """Tell the loader's sampler the epoch (a distributed shuffle differs each epoch); no-op otherwise."""
    set_epoch = getattr(loader.sampler, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)


def prepare_model(
    model: nn.Module, device: torch.device, train: TrainConfig, *, find_unused_parameters: bool = False
) -> nn.Module:
    """Move ``model`` to ``device`` (channels-last when ``train.channels_last``); wrapped in DDP under torchrun.

    ``model`` itself is moved in place; the returned module is what to train (``model`` or its DDP wrapper).

    Examples:
        >>> prepare_model(nn.Conv2d(3, 1, 1), torch.device("cpu"), TrainConfig(channels_last=True)).__class__.__name__
        'Conv2d'
    """
    model.to(device)
    if train.channels_last:
        model.to(memory_format=torch.channels_last)
    if not D.get_info().is_distributed:
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


# --------------------------------------------------------------------------------------------------------------
# The loop, the contract and the threshold
# --------------------------------------------------------------------------------------------------------------


def fit_recipe(
    net: nn.Module,
    loader: DataLoader[Any],
    *,
    optim: OptimConfig,
    train: TrainConfig,
    evaluate: Callable[[nn.Module], Any],
    out_dir: str | os.PathLike[str],
    contract: ModelContract,
    device: torch.device,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
    on_epoch_start: Callable[[int], None] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    progress: bool | None = None,
) -> FitResult:
    """:func:`~mitoscope.engine.loop.fit` with the optimiser, schedule and loop settings of a recipe.

    The optimiser and per-step schedule come from ``optim``; epochs, ``monitor`` (maximised), early stopping
    (``patience``; none when ``keep == "last"``), mixed precision, gradient clipping, the step cap, task weights
    and the weight average from ``train``.

    Args:
        net: the model to train (from :func:`prepare_model`).
        loader: the training loader (from :func:`train_loader`).
        optim: the ``optim`` section.
        train: the ``train`` section.
        evaluate: ``model -> metrics`` (must contain ``train.monitor``).
        out_dir: the run folder (``history.csv``, ``best.pt``, ``last.pt``).
        contract: the checkpoint contract (:func:`training_contract`).
        device: the training device.
        resume: continue from ``out_dir/last.pt``.
        callbacks: after each evaluation (e.g. :func:`store_threshold`).
        on_epoch_start: called with the epoch before it trains.
        checkpoint_extra: more items for both checkpoints.
        progress: progress bars (None: when stderr is a terminal).

    Returns:
        The :class:`~mitoscope.engine.loop.FitResult`.
    """
    optimizer = build_optimizer(optim, D.unwrap_model(net).parameters())
    steps = len(loader)
    if train.max_steps_per_epoch is not None:
        steps = min(steps, train.max_steps_per_epoch)
    scheduler = build_scheduler(optim, optimizer, steps_per_epoch=steps, epochs=train.epochs)
    return fit(
        net,
        loader,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=train.epochs,
        evaluate=evaluate,
        monitor=train.monitor,
        mode="max",
        patience=train.patience if train.keep == "best" else None,
        out_dir=out_dir,
        contract=contract,
        device=device,
        loss_weights=train.loss_weights or None,
        resume=resume,
        callbacks=callbacks,
        on_epoch_start=on_epoch_start,
        amp=train.amp,
        cpu_bf16=train.cpu_bf16,
        grad_clip=train.grad_clip,
        max_steps_per_epoch=train.max_steps_per_epoch,
        progress=progress,
        checkpoint_extra=checkpoint_extra,
        ema_decay=train.ema_decay,
    )


def training_contract(
    cfg: Any,
    *,
    architecture: str,
    kwargs: dict[str, Any],
    task: str,
    input_size: int,
    mpp: float,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    threshold: float = 0.5,
    **config_extra: Any,
) -> ModelContract:
    """The contract a training run's checkpoints carry: the model's build, input, classes, threshold and recipe.

    ``config`` is the resolved recipe ``cfg`` (a config dataclass) plus ``config_extra`` (e.g. the tumour types
    a detector learnt); the threshold is replaced by the validation-tuned one (:func:`store_threshold`).

    Examples:
        >>> from mitoscope.engine.config import ClassifierConfig
        >>> c = training_contract(ClassifierConfig(), architecture="atypical_single", kwargs={}, task="classification",
        ...                       input_size=128, mpp=0.25, mean=(0.5,) * 3, std=(0.25,) * 3,
        ...                       class_names=("normal", "atypical"))
        >>> c.thresholds, c.config["optim"]["name"]
        ({'default': 0.5}, 'adamw')
    """
    return ModelContract(
        architecture=architecture,
        kwargs=to_jsonable(dict(kwargs)),
        task=task,
        input_size=input_size,
        mpp=mpp,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        class_names=tuple(class_names),
        thresholds={"default": float(threshold)},
        config={**config_to_dict(cfg), **config_extra},
    )


def store_threshold(metric: str) -> Callback:
    """A :func:`~mitoscope.engine.loop.fit` callback: the epoch's ``metric`` becomes ``thresholds["default"]``.

    Examples:
        >>> state = EpochState(0, nn.Identity(), {"val_threshold": 0.4}, ModelContract("m", {}, "detection", 8),
        ...                    Path("."))
        >>> store_threshold("val_threshold")(state); state.contract.thresholds
        {'default': 0.4}
    """

    def callback(state: EpochState) -> None:
        state.contract.thresholds = {**state.contract.thresholds, "default": float(state.metrics[metric])}

    return callback


def kept_checkpoint(result: FitResult, out_dir: str | os.PathLike[str], keep: str = "best") -> dict[str, Any]:
    """The checkpoint a run keeps: ``best.pt`` (``keep="best"``) or ``last.pt`` (``"last"``), read.

    Raises:
        RuntimeError: no best checkpoint was written (every validation score was NaN).
    """
    if keep == "last":
        return read_checkpoint(Path(out_dir) / LAST_CHECKPOINT)
    if result.best_path is None:
        raise RuntimeError(f"no best checkpoint was written in {out_dir}")
    return read_checkpoint(result.best_path)
