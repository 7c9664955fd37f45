"""The explicit training loop shared by the classifier and the detector.

After the torchvision references and detectron2's ``SimpleTrainer``: no framework, three functions.

- :func:`total_loss` is THE one place where task weights are applied to a model's dict of named losses.
- :func:`train_one_epoch` runs one pass over a loader of ``(images, targets)`` batches and calls
  ``model(images, targets)``, which returns a dict of named losses.
- :func:`fit` trains for some epochs, evaluates after each, writes ``history.csv``, ``last.pt`` (everything
  needed to resume: model, optimiser, scheduler, scaler, epoch, best score, early-stopping counter, history and
  RNG states) and ``best.pt`` (when the monitored metric improves), stops early, and resumes from ``last.pt``.

Under ``torchrun`` the model may be wrapped in ``DistributedDataParallel``: only rank 0 writes, checkpoints hold
the unwrapped state dict, the evaluation metrics of rank 0 are broadcast so every rank stops at the same epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from torch import nn

from mitoscope.engine import distributed as D
from mitoscope.engine.seed import get_rng_state, set_rng_state
from mitoscope.models.checkpoint import ModelContract, read_checkpoint, save_checkpoint
from mitoscope.utils.atomic import write_text_atomic

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
HISTORY_FILE = "history.csv"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def total_loss(
    losses: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None
) -> torch.Tensor:
    """Weighted sum of named losses; a loss without a weight counts with weight 1.0.

    This is the only place task weights are applied.

    Args:
        losses: the dict a model returns in training mode (``{"loss_cls": ..., "loss_seg": ...}``).
        weights: ``{name: weight}``; names that are not in ``losses`` raise ``KeyError`` (a typo would
            otherwise silently do nothing).

    Examples:
        >>> l = {"loss_cls": torch.tensor(2.0), "loss_seg": torch.tensor(1.0)}
        >>> float(total_loss(l, {"loss_seg": 0.5}))
        2.5
    """
    if not losses:
        raise ValueError("the model returned no losses")
    weights = dict(weights or {})
    unknown = set(weights) - set(losses)
    if unknown:
        raise KeyError(
            f"loss weights for unknown losses {sorted(unknown)}; the model returns {sorted(losses)}"
        )
    total: torch.Tensor | None = None
    for name, value in losses.items():
        term = value * float(weights.get(name, 1.0))
        total = term if total is None else total + term
    assert total is not None
    return total


def move_to_device(obj: Any, device: torch.device | str, *, non_blocking: bool = False) -> Any:
    """Move every tensor inside ``obj`` (nested lists, tuples and dicts) to ``device``.

    Examples:
        >>> out = move_to_device({"a": [torch.zeros(1)], "b": (torch.ones(1), "x")}, "cpu")
        >>> out["b"][1], out["a"][0].device.type
        ('x', 'cpu')
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return type(obj)({k: move_to_device(v, device, non_blocking=non_blocking) for k, v in obj.items()})  # type: ignore[call-arg]
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(move_to_device(v, device, non_blocking=non_blocking) for v in obj))
    if isinstance(obj, list | tuple):
        return type(obj)(move_to_device(v, device, non_blocking=non_blocking) for v in obj)
    return obj


def _batch_size(images: Any) -> int:
    if isinstance(images, torch.Tensor):
        return int(images.shape[0]) if images.ndim else 1
    if isinstance(images, list | tuple):
        return len(images)
    return 1


def _use_progress(progress: bool | None) -> bool:
    if not D.is_main_process():
        return False
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int | None, description: str) -> None:
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, info="")

    def update(self, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------------------------------------------
# One epoch
# --------------------------------------------------------------------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[Any, Any]],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device | str,
    loss_weights: Mapping[str, float] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: Any = None,
    grad_clip: float | None = None,
    amp: bool = True,
    cpu_bf16: bool = False,
    max_steps: int | None = None,
    log_every: int = 50,
    progress: bool | None = None,
    description: str = "train",
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``loader``.

    Each batch is ``(images, targets)``: images a Tensor or a list of Tensors, targets a dict of tensors or a
    list of dicts. ``model(images, targets)`` must return a dict of named losses, combined by
    :func:`total_loss`. Mixed precision: see :func:`autocast`; pass a ``GradScaler`` for float16.
    ``scheduler`` (if given) is stepped after every optimiser step.

    Args:
        model: the model, in any wrapper (DDP included).
        loader: iterable of ``(images, targets)``.
        optimizer: the optimiser.
        device: where to train.
        loss_weights: task weights, see :func:`total_loss`.
        scaler: gradient scaler for float16 AMP.
        scheduler: a per-step learning-rate scheduler.
        grad_clip: clip the total gradient norm to this value.
        amp: allow float16 autocast on CUDA.
        cpu_bf16: bfloat16 autocast on the CPU.
        max_steps: stop after this many batches (quick runs).
        log_every: log the running losses every this many steps.
        after_step: called after every optimiser step (e.g. :meth:`WeightAverage.update`).
        progress: show a progress bar (None: only when stderr is a terminal); never on ranks other than 0.
        description: label of the progress bar.

    Returns:
        The mean of each named loss over the epoch and ``"loss"`` (the weighted total), averaged over ranks
        when distributed.

    Raises:
        NonFiniteLossError: a loss is NaN or infinite.

    Examples:
        >>> class Toy(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = nn.Linear(2, 1)
        ...     def forward(self, x, targets):
        ...         return {"loss_cls": nn.functional.mse_loss(self.lin(x).squeeze(1), targets["label"])}
        >>> m = Toy(); opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> batches = [(torch.ones(4, 2), {"label": torch.ones(4)})] * 3
        >>> sorted(train_one_epoch(m, batches, opt, device="cpu", progress=False))
        ['loss', 'loss_cls']
    """
    device = torch.device(device)
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)
    bar = _Progress(_use_progress(progress), total, description)
    start = time.perf_counter()
    try:
        for step, (images, targets) in enumerate(loader):
            if max_steps is not None and step >= max_steps:
                break
            images = move_to_device(images, device, non_blocking=True)
            targets = move_to_device(targets, device, non_blocking=True)
            with autocast(device, amp=amp, cpu_bf16=cpu_bf16):
                losses = model(images, targets)
            if not isinstance(losses, Mapping):
                raise TypeError(
                    f"in training mode the model must return a dict of losses, got {type(losses)}"
                )
            loss = total_loss(losses, loss_weights)
            if not torch.isfinite(loss.detach()).all():
                parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                raise NonFiniteLossError(
                    f"non-finite training loss at step {step} ({parts}); lower the learning rate, enable "
                    "gradient clipping or check the inputs for NaNs"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step()
            steps += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            info = f"loss {sums['loss'] / steps:.4f}"
            bar.update(info)
            if log_every and steps % log_every == 0:
                rate = steps / max(time.perf_counter() - start, 1e-9)
                logger.info("%s step %d: %s (%.2f it/s)", description, steps, info, rate)
    finally:
        bar.close()
    means = {k: v / max(steps, 1) for k, v in sums.items()}
    return D.all_reduce_mean(means, weight=float(steps)) if D.is_initialized() else means


class WeightAverage:
    """Exponential moving average of a model's weights (Polyak averaging, as timm's ``ModelEma``).

    ``update(model)`` after every optimiser step moves each floating-point entry of the state dict (weights and
    batch-norm statistics) towards the model's by ``1 - d``, with ``d = min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so the average follows the model closely at first; integer entries are copied. ``module``
    is the averaged model, the one to evaluate and export.

    Examples:
        >>> m = nn.Linear(1, 1, bias=False); _ = m.weight.data.fill_(0.0)
        >>> avg = WeightAverage(m, decay=0.5)
        >>> _ = m.weight.data.fill_(1.0); avg.update(m)
        >>> round(float(avg.module.weight), 3)  # d = min(0.5, 2 / 11)
        0.818
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight-average decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, new in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(new.detach().to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def autocast(device: torch.device | str, *, amp: bool = True, cpu_bf16: bool = False) -> torch.autocast:
    """The mixed-precision context of training and evaluation forwards.

    float16 autocast on CUDA when ``amp``; bfloat16 autocast on the CPU when ``cpu_bf16`` (worth it on CPUs
    with native bf16 matrix units, e.g. AVX512-BF16 or AMX); otherwise a disabled context (float32).

    Examples:
        >>> with autocast("cpu", cpu_bf16=True):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
        >>> with autocast("cpu"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.float32
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16, enabled=amp)
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)
    return torch.autocast(device.type, enabled=False)


# --------------------------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EpochState:
    """What a callback sees after each epoch's evaluation (it may add metrics or edit the contract).

    ``contract`` is this epoch's copy: it is what ``best.pt`` (if this epoch is best) and ``last.pt`` store.
    ``is_best`` is filled in after the callbacks ran.
    """

    epoch: int
    model: nn.Module
    metrics: dict[str, float]
    contract: ModelContract
    out_dir: Path
    is_best: bool = False


Callback = Callable[[EpochState], None]


@dataclasses.dataclass
class FitResult:
    """Outcome of :func:`fit`."""

    best_score: float
    best_epoch: int
    epochs_run: int
    history: pd.DataFrame
    best_path: Path | None
    stopped_early: bool = False


def _improved(score: float, best: float | None, mode: str, min_delta: float) -> bool:
    if math.isnan(score):
        return False
    if best is None or math.isnan(best):
        return True
    return score > best + min_delta if mode == "max" else score < best - min_delta


def _write_history(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    write_text_atomic(path, pd.DataFrame(list(rows)).to_csv(index=False))


def fit(
    model: nn.Module,
    train_loader: Iterable[tuple[Any, Any]],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any = None,
    epochs: int,
    evaluate: Callable[[nn.Module], Mapping[str, float]],
    monitor: str,
    mode: Literal["max", "min"] = "max",
    patience: int | None = None,
    out_dir: str | os.PathLike[str],
    contract: ModelContract,
    device: torch.device | str,
    loss_weights: Mapping[str, float] | None = None,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
    on_epoch_start: Callable[[int], None] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = True,
    cpu_bf16: bool = False,
    grad_clip: float | None = None,
    max_steps_per_epoch: int | None = None,
    min_delta: float = 0.0,
    checkpoint_extra: Mapping[str, Any] | None = None,
    log_every: int = 50,
    progress: bool | None = None,
    ema_decay: float | None = None,
) -> FitResult:
    """Train, evaluate and checkpoint for ``epochs`` epochs with early stopping and resumption.

    Each epoch: ``on_epoch_start(epoch)`` (e.g. ``sampler.set_epoch``), :func:`train_one_epoch`,
    ``evaluate(model)`` (a dict of metrics that must contain ``monitor``), the ``callbacks`` (each gets an
    :class:`EpochState` and may add metrics or change the epoch's contract, e.g. the decision threshold), then
    a row appended to ``out_dir/history.csv``, ``out_dir/best.pt`` when ``monitor`` improved, and
    ``out_dir/last.pt``. With ``resume=True`` and an existing ``last.pt`` the run continues after the last
    finished epoch with the same model, optimiser, scheduler, scaler, RNG states and early-stopping counter;
    a run that had already finished returns at once.

    Args:
        model: the model (possibly DDP-wrapped), already on ``device``.
        train_loader: iterable of ``(images, targets)`` batches.
        optimizer: the optimiser.
        scheduler: per-step LR scheduler (stepped every batch) or None.
        epochs: total number of epochs (including ones done before a resume).
        evaluate: ``model -> metrics``; called on every rank, rank 0's metrics are used.
        monitor: the metric that decides ``best.pt`` and early stopping.
        mode: ``"max"`` or ``"min"``.
        patience: stop after this many epochs without improvement (None: never).
        out_dir: run directory.
        contract: the model contract stored in the checkpoints.
        device: training device.
        loss_weights: task weights (see :func:`total_loss`).
        resume: continue from ``out_dir/last.pt`` when it exists.
        callbacks: called after each evaluation, in order.
        on_epoch_start: called with the epoch index before training it.
        scaler: float16 gradient scaler (created automatically on CUDA with ``amp`` when None).
        amp: float16 autocast on CUDA.
        cpu_bf16: bfloat16 autocast on the CPU (training and ``evaluate`` alike, see :func:`autocast`).
        grad_clip: clip the gradient norm.
        max_steps_per_epoch: cap the batches per epoch (quick runs).
        min_delta: the smallest change that counts as an improvement.
        checkpoint_extra: more items for the ``extra`` dict of both checkpoints.
        log_every: log every this many steps.
        progress: progress bar (None: when stderr is a terminal); only rank 0 shows one.
        ema_decay: keep an exponential moving average of the weights (:class:`WeightAverage`) and evaluate,
            keep as ``best.pt`` and hand to the callbacks the averaged model instead of the raw one (``last.pt``
            holds both, to resume). None: no averaging.

    Returns:
        A :class:`FitResult`.

    Examples:
        >>> import tempfile
        >>> class Toy(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = nn.Linear(1, 1)
        ...     def forward(self, x, targets=None):
        ...         out = self.lin(x).squeeze(1)
        ...         return {"loss": nn.functional.mse_loss(out, targets)} if self.training else out
        >>> m = Toy(); data = [(torch.ones(2, 1), torch.zeros(2))]
        >>> res = fit(m, data, optimizer=torch.optim.SGD(m.parameters(), lr=0.1), epochs=2,
        ...           evaluate=lambda m: {"mse": float(m(torch.ones(1, 1)) ** 2)}, monitor="mse", mode="min",
        ...           out_dir=tempfile.mkdtemp(), contract=ModelContract("toy", {}, "regression", 1),
        ...           device="cpu", progress=False)
        >>> res.epochs_run, list(res.history.columns[:2])
        (2, ['epoch', 'train_loss'])
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    device = torch.device(device)
    out = Path(out_dir)
    main = D.is_main_process()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    inner = D.unwrap_model(model)
    average = WeightAverage(inner, ema_decay) if ema_decay is not None else None
    if scaler is None and amp and device.type == "cuda":
        scaler = torch.amp.GradScaler("cuda")

    history: list[dict[str, Any]] = []
    best_score: float | None = None
    best_epoch = -1
    bad_epochs = 0
    start_epoch = 0
    stopped = False
    last_path = out / LAST_CHECKPOINT
    best_path = out / BEST_CHECKPOINT

    if resume and last_path.is_file():
        payload = read_checkpoint(last_path)
        extra = payload.get("extra", {})
        inner.load_state_dict(payload["state_dict"])
        if "optimizer" in extra:
            optimizer.load_state_dict(extra["optimizer"])
        if scheduler is not None and extra.get("scheduler") is not None:
            scheduler.load_state_dict(extra["scheduler"])
        if scaler is not None and extra.get("scaler") is not None:
            scaler.load_state_dict(extra["scaler"])
        if average is not None and extra.get("weight_average") is not None:
            average.load_state_dict(extra["weight_average"])
        history = [dict(r) for r in extra.get("history", [])]
        best_score = extra.get("best_score")
        best_epoch = int(extra.get("best_epoch", -1))
        bad_epochs = int(extra.get("bad_epochs", 0))
        stopped = bool(extra.get("stopped", False))
        start_epoch = int(extra.get("epoch", -1)) + 1
        if extra.get("rng") is not None:
            set_rng_state(extra["rng"])
        logger.info("resuming %s after epoch %d", out, start_epoch - 1)
    elif main and not resume:
        for stale in (last_path, best_path):
            stale.unlink(missing_ok=True)
    D.barrier()

    epoch = start_epoch
    for epoch in range(start_epoch, epochs):
        if stopped:
            break
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        t0 = time.perf_counter()
        train_metrics = train_one_epoch(
            model,
            train_loader,
            optimizer,
            device=device,
            loss_weights=loss_weights,
            scaler=scaler,
            scheduler=scheduler,
            grad_clip=grad_clip,
            amp=amp,
            cpu_bf16=cpu_bf16,
            max_steps=max_steps_per_epoch,
            log_every=log_every,
            progress=progress,
            description=f"epoch {epoch + 1}/{epochs}",
            after_step=None if average is None else functools.partial(average.update, inner),
        )
        train_time = time.perf_counter() - t0
        model.eval()
        evaluated = model if average is None else average.module
        with torch.no_grad():
            metrics = dict(evaluate(evaluated))
        metrics = D.broadcast_object(metrics)
        state = EpochState(
            epoch=epoch, model=evaluated, metrics=metrics, contract=copy.deepcopy(contract), out_dir=out
        )
        for cb in callbacks:
            cb(state)
        if monitor not in state.metrics:
            raise KeyError(f"evaluate() returned no {monitor!r} metric (got {sorted(state.metrics)})")
        score = float(state.metrics[monitor])
        state.is_best = _improved(score, best_score, mode, min_delta)
        if state.is_best:
            best_score, best_epoch, bad_epochs = score, epoch, 0
        else:
            bad_epochs += 1
        if patience is not None and bad_epochs >= patience:
            stopped = True

        row: dict[str, Any] = {"epoch": epoch}
        row.update({f"train_{k}": v for k, v in train_metrics.items()})
        row.update({k: v for k, v in state.metrics.items() if isinstance(v, int | float)})
        row["lr"] = float(optimizer.param_groups[0]["lr"])
        row["time_s"] = round(time.perf_counter() - t0, 3)
        row["train_time_s"] = round(train_time, 3)
        row["best"] = state.is_best
        history.append(row)

        if main:
            extra_common = dict(checkpoint_extra or {})
            if state.is_best:
                save_checkpoint(
                    best_path,
                    inner if average is None else average.module,
                    state.contract,
                    extra={
                        **extra_common,
                        "epoch": epoch,
                        "metrics": dict(state.metrics),
                        "monitor": monitor,
                    },
                )
            save_checkpoint(
                last_path,
                inner,
                state.contract,
                extra={
                    **extra_common,
                    "epoch": epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "weight_average": average.state_dict() if average is not None else None,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "stopped": stopped,
                    "history": history,
                    "rng": get_rng_state(),
                    "monitor": monitor,
                    "mode": mode,
                },
            )
            _write_history(out / HISTORY_FILE, history)
        logger.info(
            "epoch %d/%d: %s %.4f%s (train loss %.4f)",
            epoch + 1,
            epochs,
            monitor,
            score,
            " *best*" if state.is_best else "",
            train_metrics.get("loss", float("nan")),
        )
        D.barrier()
        if stopped:
            logger.info(
                "early stop after epoch %d: no improvement of %s for %d epochs", epoch + 1, monitor, patience
            )
            break

    frame = pd.DataFrame(history)
    return FitResult(
        best_score=float("nan") if best_score is None else float(best_score),
        best_epoch=best_epoch,
        epochs_run=len(history),
        history=frame,
        best_path=best_path if best_path.is_file() else None,
        stopped_early=stopped,
    )
