"""What the classifier and the detector share: where and in what arithmetic they run, batch norms folded into
the convolutions, one background reader, and loading a model from a path.

:class:`InferenceModel` is the base of :class:`~mitoscope.inference.classify.Classifier` and
:class:`~mitoscope.inference.detect.Detector`: it resolves the device (:func:`mitoscope.utils.device.resolve_device`)
and the precision (:func:`mitoscope.utils.precision.resolve_precision`) and folds batch norms on request.
:func:`read_ahead` is the one reader that overlaps reading with computing: the classifier's patch batches come
from one lowered-priority thread (:func:`prefetch`), the detector's tiles from a pool of threads
(:func:`mitoscope.inference.detect.iterate_tile_batches`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mitoscope.models.checkpoint import is_bundle_path, load_model
from mitoscope.models.fuse import fold_batchnorm
from mitoscope.utils.device import resolve_device
from mitoscope.utils.errors import InputError
from mitoscope.utils.precision import resolve_precision

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mitoscope.models.checkpoint import ModelContract

J = TypeVar("J")
T = TypeVar("T")

#: File names looked for, in order, when a model path is a training run directory.
CHECKPOINT_NAMES = ("best.pt", "model.pt", "checkpoints/best.pt", "last.pt", "checkpoints/last.pt")

_END = object()


# --------------------------------------------------------------------------------------------- reading


def _lower_priority(nice: int) -> None:
    if nice > 0:  # not Linux, or not allowed: run at normal priority
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def read_ahead(
    load: Callable[[J], T], jobs: Iterable[J], *, threads: int = 1, depth: int = 2, nice: int = 0
) -> Iterator[T]:
    """``load(job)`` for every job in ``threads`` background threads, yielded in job order.

    At most ``threads * depth`` jobs run or wait ahead of the consumer, so memory stays bounded. Exceptions
    raised by ``load`` are re-raised in the consumer. Leaving the loop early cancels the jobs not yet started
    and waits for the running ones (they may be reading a slide the caller is about to close). ``nice`` > 0
    lowers the threads' scheduling priority (Linux), so on a CPU without a spare core they yield to the model's
    compute threads instead of stalling them at their synchronisation points.

    Examples:
        >>> list(read_ahead(lambda k: k * k, range(5), threads=2))
        [0, 1, 4, 9, 16]
    """
    order = iter(jobs)
    ahead = max(1, int(threads)) * max(1, int(depth))
    pool = ThreadPoolExecutor(
        max_workers=max(1, int(threads)),
        thread_name_prefix="mitoscope-reader",
        initializer=_lower_priority,
        initargs=(int(nice),),
    )
    pending: deque[Future[T]] = deque()
    try:
        pending.extend(pool.submit(load, job) for job in itertools.islice(order, ahead))
        while pending:
            item = pending.popleft().result()
            pending.extend(pool.submit(load, job) for job in itertools.islice(order, 1))
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prefetch(items: Iterable[T], depth: int = 2, *, nice: int = 0) -> Iterator[T]:
    """Iterate ``items`` in a background thread that keeps up to ``depth`` items ready and produces the next
    (:func:`read_ahead` with one thread: every item is produced by that thread, in order).

    Examples:
        >>> list(prefetch(iter(range(5))))
        [0, 1, 2, 3, 4]
    """
    source = iter(items)
    finished = False

    def pull(_: object) -> Any:
        nonlocal finished
        if finished:  # never ask an exhausted or failed iterator again
            return _END
        try:
            item = next(source, _END)
        except BaseException:
            finished = True
            raise
        finished = item is _END
        return item

    for item in read_ahead(pull, itertools.repeat(None), threads=1, depth=max(1, depth) + 1, nice=nice):
        if item is _END:
            return
        yield item


# --------------------------------------------------------------------------------------------- batch norms


def fold_batchnorm_for(module: nn.Module, input_size: int, device: torch.device | str = "cpu") -> nn.Module:
    """``module`` (image batch → outputs) with its batch norms folded into the convolutions before them, found
    and checked on a ``(1, 3, input_size, input_size)`` batch on ``device``
    (:func:`mitoscope.models.fuse.fold_batchnorm`: a folded copy, or ``module`` itself when nothing folds).

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> type(fold_batchnorm_for(net, 16)[1]).__name__
        'Identity'
    """
    import torch

    example = torch.zeros(1, 3, int(input_size), int(input_size), device=device)
    return fold_batchnorm(module, example)[0]


# --------------------------------------------------------------------------------------------- loading


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A bundled model name, a checkpoint file, or the best checkpoint inside a training run directory.

    Examples:
        >>> find_checkpoint("/nonexistent/run")
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: /nonexistent/run: model checkpoint or run directory not found
    """
    if is_bundle_path(path):
        return Path(path)
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        found = sorted(path.glob("*.pt"))
        if len(found) == 1:
            return found[0]
        raise InputError(
            f"no checkpoint in run directory (looked for {', '.join(CHECKPOINT_NAMES)})", path=path
        )
    raise InputError("model checkpoint or run directory not found", path=path)


def load_checkpoint(
    path: str | os.PathLike[str], *, task: str, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ModelContract, Path]:
    """Find (:func:`find_checkpoint`), load and check one model: ``(model, contract, checkpoint path)``.

    Raises:
        InputError: nothing at ``path``, or the checkpoint's contract is for another task than ``task``.

    Examples:
        >>> load_checkpoint("/nonexistent/model.pt", task="detection")
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: /nonexistent/model.pt: model checkpoint or run directory not found
    """
    ckpt = find_checkpoint(path)
    model, contract = load_model(ckpt, device=device)
    if contract.task != task:
        raise InputError(f"checkpoint is a {contract.task!r} model, not a {task} model", path=ckpt)
    return model, contract, ckpt


# --------------------------------------------------------------------------------------------- base class


class InferenceModel:
    """A model (or several) ready for inference: its device and arithmetic, and its batch norms folded.

    Subclasses put their models on :attr:`device`, run them under
    ``precision_context(self.precision, self.device)`` and say in :meth:`_fold_batchnorm` which modules to fold
    (with :func:`fold_batchnorm_for`).

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a torch device.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (:func:`~mitoscope.utils.precision.resolve_precision`).

    Examples:
        >>> m = InferenceModel(device="cpu", precision="fp32")
        >>> m.device.type, m.precision, m.batchnorm_folded
        ('cpu', 'fp32', False)
    """

    def __init__(self, *, device: str | torch.device = "cpu", precision: str = "auto") -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batchnorm_folded = False

    def fold_batchnorm(self) -> None:
        """Fold batch norms into the convolutions before them (:func:`mitoscope.models.fuse.fold_batchnorm`:
        the same outputs, about 1.5× faster on a CPU)."""
        self._fold_batchnorm()
        self.batchnorm_folded = True

    def _fold_batchnorm(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not say which modules to fold")
