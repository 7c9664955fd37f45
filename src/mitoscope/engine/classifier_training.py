"""Train an atypical-vs-normal classifier with cross-validation, from a :class:`ClassifierConfig` recipe.

A run directory after :func:`train_classifier`::

    RUN/config.yaml               the resolved recipe
    RUN/fold_k/last.pt            everything to resume the fold (full model, optimiser, RNG, history)
    RUN/fold_k/best.pt            the best epoch (full model, e.g. with the multitask decoders)
    RUN/fold_k/model.pt           the inference model (no auxiliary decoders) with its validation threshold
    RUN/fold_k/history.csv        one row per epoch
    RUN/fold_k/metrics.json       report of the best epoch on the fold's test part (validation part when the
                                  scheme has none) at the validation threshold; marks the fold finished
    RUN/fold_k/predictions.csv    validation and test predictions (column ``part``)
    RUN/oof_predictions.csv       every fold's out-of-fold predictions (its test part, else its validation part)
    RUN/cv_summary.json           pooled OOF metrics, per-fold metrics, mean ± std
    RUN/ensemble.json             the fold models and how ``mitoscope classify RUN`` combines them

Under ``torchrun`` each rank trains on its shard of every epoch (DistributedDataParallel), validation is
sharded and gathered, and rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mitoscope.data.datasets import PatchDataset
from mitoscope.data.patch_cache import PatchCache
from mitoscope.data.samplers import ClassBalancedSampler, EpochTaggedSampler, ShardedSequentialSampler
from mitoscope.engine import distributed as D
from mitoscope.engine.config import ClassifierConfig, DataConfig, config_to_dict, save_config
from mitoscope.engine.crossval import (
    FOLD_METRICS,
    FOLD_PREDICTIONS,
    Fold,
    check_fold_classes,
    choose_threshold,
    class_counts,
    make_folds,
    run_crossval,
)
from mitoscope.engine.ensemble import RULES
from mitoscope.engine.loop import autocast
from mitoscope.engine.training import (
    fit_recipe,
    kept_checkpoint,
    prepare_model,
    set_loader_epoch,
    start_run,
    store_threshold,
    train_loader,
    training_contract,
)
from mitoscope.io.catalog import validate_catalog
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable

logger = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
MODEL_FILE = "model.pt"
RECORD_COLUMNS = ("image", "page", "slide", "x", "y", "label", "group", "domain", "source")


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


def _build_model(cfg: ClassifierConfig, train_targets: np.ndarray) -> tuple[nn.Module, dict[str, Any]]:
    from mitoscope.models.registry import create_model, model_accepts

    kwargs = dict(cfg.model.kwargs)
    if (
        cfg.data.balance == "pos_weight"
        and "pos_weight" not in kwargs
        and model_accepts(cfg.model.name, "pos_weight")
    ):
        n_pos = int((train_targets == 1).sum())
        n_neg = int((train_targets == 0).sum())
        kwargs["pos_weight"] = float(n_neg / max(n_pos, 1))
    model = create_model(cfg.model.name, **kwargs)
    return model, kwargs


def _normalization(
    cfg: ClassifierConfig, model: nn.Module, kwargs: dict[str, Any]
) -> tuple[tuple[float, ...], ...]:
    if cfg.data.mean is not None and cfg.data.std is not None:
        return tuple(cfg.data.mean), tuple(cfg.data.std)
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if mean is not None and std is not None:
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    from mitoscope.models.backbones import backbone_normalization

    return backbone_normalization(str(kwargs.get("backbone", "")), kwargs.get("pretrained", False))


def _transforms(cfg: ClassifierConfig, mean: Sequence[float], std: Sequence[float]) -> tuple[Any, Any]:
    from mitoscope.data.transforms import build_patch_transform

    aug = dict(cfg.data.augment)
    train_tf = build_patch_transform(train=True, size=cfg.data.size, mean=mean, std=std, **aug)
    eval_kwargs = {k: v for k, v in aug.items() if k == "crop"}
    eval_tf = build_patch_transform(train=False, size=cfg.data.size, mean=mean, std=std, **eval_kwargs)
    return train_tf, eval_tf


def _mask_fn(targets: set[str], data: DataConfig) -> Any:
    """``rgb -> mask`` of the figure at the patch centre by ``data.mask_method`` (on disk when ``mask_cache``)."""
    if "mask" not in targets:
        return None
    from mitoscope.data.masks import CachedMask, compute_mask

    if data.mask_cache:
        return CachedMask(data.mask_cache, data.mask_method)
    return functools.partial(compute_mask, method=data.mask_method)


def _hard_fn(model: nn.Module) -> Any:
    n = getattr(model, "hardness_classes", None)
    if n is None:
        return None
    return _HardnessFn(int(n))


@dataclasses.dataclass(frozen=True)
class _HardnessFn:
    """Picklable ``(votes, label) -> hardness class`` for DataLoader workers."""

    n_classes: int

    def __call__(self, votes: Sequence[Any], label: float) -> int:
        from mitoscope.models.heads import hardness_class

        return hardness_class(votes, self.n_classes, label=label)


#: The two label vocabularies a binary classifier trains on: atypical vs normal, and (a detector's verification
#: stage) mitotic figure vs not.
BINARY_CLASSES = (("normal", "atypical"), ("hard negative", "mitotic figure"))


def class_names_of(labels: set[str]) -> tuple[str, str]:
    """The class names (negative, positive) of a catalog's labels, or ``InputError`` for a mix or others.

    Examples:
        >>> class_names_of({"mitotic figure", "hard negative"})
        ('hard negative', 'mitotic figure')
    """
    for names in BINARY_CLASSES:
        if labels <= set(names):
            return names
    raise InputError(
        "a classifier needs 'normal'/'atypical' labels (or 'hard negative'/'mitotic figure' for a verifier), "
        f"found {sorted(labels)}"
    )


def _contract(
    cfg: ClassifierConfig,
    model: nn.Module,
    kwargs: dict[str, Any],
    mean: Sequence[float],
    std: Sequence[float],
    class_names: tuple[str, str] = BINARY_CLASSES[0],
) -> ModelContract:
    return training_contract(
        cfg,
        architecture=cfg.model.name,
        kwargs=dict(getattr(model, "build_kwargs", kwargs)),
        task="classification",
        input_size=cfg.data.size,
        mpp=cfg.data.mpp,
        mean=mean,
        std=std,
        class_names=class_names,
        threshold=0.5 if cfg.threshold.fixed is None else float(cfg.threshold.fixed),
    )


def eval_loader(
    dataset: PatchDataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    persistent: bool = False,
) -> DataLoader[Any]:
    """In-order loader over this rank's share of ``dataset`` (reuse it: persistent workers keep their caches)."""
    info = D.get_info()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardedSequentialSampler(len(dataset), rank=info.rank, world_size=info.world_size),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and num_workers > 0,
    )


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    dataset: PatchDataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    loader: DataLoader[Any] | None = None,
    amp: bool = True,
    cpu_bf16: bool = False,
) -> np.ndarray:
    """P(atypical) of every record of ``dataset`` (sharded over ranks and gathered when distributed).

    Args:
        model: the classifier (DDP-wrapped or not); it is run unwrapped, ranks may hold unequal shares.
        dataset: the records.
        batch_size: batch size (ignored when ``loader`` is given).
        device: where the model is.
        num_workers: reader processes (ignored when ``loader`` is given).
        loader: a loader from :func:`eval_loader` over ``dataset`` to reuse.
        amp, cpu_bf16: mixed precision as in training (:func:`mitoscope.engine.loop.autocast`).

    Examples:
        >>> predict_probs(model, dataset, batch_size=64, device=torch.device("cpu"))  # doctest: +SKIP
    """
    if loader is None:
        loader = eval_loader(dataset, batch_size=batch_size, device=device, num_workers=num_workers)
    sampler = loader.sampler
    assert isinstance(sampler, ShardedSequentialSampler)
    inner = D.unwrap_model(model)  # no DDP forward: ranks may hold different numbers of batches
    was_training = inner.training
    inner.eval()
    probs: list[np.ndarray] = []
    for images, _ in loader:
        with autocast(device, amp=amp, cpu_bf16=cpu_bf16):
            out = inner(images.to(device, non_blocking=True))
        p = out["prob"] if isinstance(out, dict) and "prob" in out else torch.sigmoid(out["logits"])
        probs.append(p.float().reshape(-1).cpu().numpy())
    inner.train(was_training)
    local = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    gathered = D.all_gather_object((sampler.indices, local))
    result = np.full(len(dataset), np.nan, dtype=np.float64)
    for idx, p in gathered:
        result[np.asarray(idx, dtype=np.int64)] = p
    return result


def _val_metrics(cfg: ClassifierConfig, y: np.ndarray, p: np.ndarray) -> tuple[dict[str, float], float]:
    from mitoscope.metrics.classification import classification_report

    if cfg.threshold.fixed is not None:
        thr = float(cfg.threshold.fixed)
    else:
        thr = choose_threshold(y, p, cfg.threshold.metric)
    at_half = classification_report(y, p, threshold=0.5 if cfg.threshold.fixed is None else thr)
    tuned = classification_report(y, p, threshold=thr)
    metrics = {
        "balanced_accuracy": float(at_half["balanced_accuracy"]),
        "auroc": float(at_half["auroc"]),
        "balanced_accuracy_tuned": float(tuned["balanced_accuracy"]),
        "threshold": float(thr),
    }
    return metrics, thr


# --------------------------------------------------------------------------------------------------------------
# One fold
# --------------------------------------------------------------------------------------------------------------


def _training_records(train_cat: pd.DataFrame, which: str, fold_name: str) -> pd.DataFrame:
    """The fold's training records: all, or (``"unanimous"``) those every expert who voted agrees on."""
    if which == "all":
        return train_cat
    from mitoscope.data.datasets import expert_matrix
    from mitoscope.metrics.agreement import unanimous

    votes = expert_matrix(train_cat["experts"])
    if votes.shape[1] < 2:
        raise ValueError("data.train_records=unanimous needs the votes of several experts per record")
    keep = unanimous(votes)
    logger.info("%s: training on the %d of %d records the experts agree on", fold_name, keep.sum(), len(keep))
    return train_cat[keep]


def _export_model(
    model: nn.Module, contract: dict[str, Any], threshold: float, fold_dir: Path, extra: dict[str, Any]
) -> None:
    """``fold_dir/model.pt``: the inference model (no auxiliary decoders) with the validation threshold."""
    from mitoscope.models.architectures.atypical_multitask import export_inference_model

    export = export_inference_model(model.cpu())
    export_contract = ModelContract.from_dict(contract)
    export_contract.kwargs = to_jsonable(dict(getattr(export, "build_kwargs", export_contract.kwargs)))
    export_contract.thresholds = {"default": float(threshold)}
    save_checkpoint(fold_dir / MODEL_FILE, export, export_contract, extra=extra)


def _fold_predictions(
    fold: Fold, parts: Sequence[tuple[str, pd.DataFrame, np.ndarray]], threshold: float
) -> pd.DataFrame:
    """One row per validation (and test) record: position, record columns, target, P(atypical), threshold."""
    frames = []
    positions = {"val": fold.val, "test": fold.test}
    for part, part_cat, part_probs in parts:
        rows = part_cat.reset_index(drop=False).rename(columns={"index": "catalog_index"})
        frames.append(
            pd.DataFrame(
                {
                    "row": positions[part],
                    "catalog_index": rows["catalog_index"].to_numpy(),
                    "fold": fold.index,
                    "part": part,
                    **_record_columns(rows),
                    "target": part_cat["target"].to_numpy(),
                    "p_atypical": part_probs,
                    "threshold": threshold,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def train_fold(
    cfg: ClassifierConfig,
    catalog: pd.DataFrame,
    fold: Fold,
    fold_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    resume: bool = True,
    progress: bool | None = None,
    source: object = None,
) -> dict[str, Any]:
    """Train one fold: ``fit`` with early stopping, then threshold, ``model.pt``, metrics and predictions.

    Returns:
        The fold's metrics (also written to ``fold_dir/metrics.json``).
    """
    from mitoscope.metrics.classification import classification_report

    fold_dir = Path(fold_dir)
    seed = cfg.train.seed + 1000 * fold.index
    dev = start_run(cfg.train, device, seed=seed)
    info = D.get_info()

    train_cat = _training_records(catalog.iloc[fold.train], cfg.data.train_records, fold.dirname)
    val_cat = catalog.iloc[fold.val]
    y_train = train_cat["target"].to_numpy()
    model, kwargs = _build_model(cfg, y_train)
    mean, std = _normalization(cfg, model, kwargs)
    targets = set(getattr(model, "required_targets", {"label"}))
    train_tf, eval_tf = _transforms(cfg, mean, std)
    n_experts = getattr(model, "n_experts", None)
    common = {
        "size": cfg.data.size,
        "mpp": cfg.data.mpp,
        "mask_fn": _mask_fn(targets, cfg.data),
        "hard_fn": _hard_fn(model),
        "n_experts": n_experts,
        "source": source,
    }
    cache_bytes = int(cfg.data.cache_mb * 2**20)
    train_ds = PatchDataset(
        train_cat,
        transform=train_tf,
        targets=targets,
        cache=PatchCache(cache_bytes) if cache_bytes else None,
        rng_seed=seed,
        **common,
    )
    val_ds = PatchDataset(
        val_cat,
        transform=eval_tf,
        targets={"label"},
        cache=PatchCache(cache_bytes) if cache_bytes else None,
        rng_seed=seed,
        **common,
    )
    if getattr(model, "soft_labels", False) and not (train_ds.experts >= 0).any():
        logger.warning(
            "%s: soft_labels, but no expert votes in the training data: training on the labels", fold.dirname
        )
    inner_sampler: Any
    if cfg.data.balance == "sampler":
        inner_sampler = ClassBalancedSampler(y_train, seed=seed, rank=info.rank, world_size=info.world_size)
    else:
        inner_sampler = DistributedSampler(
            train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed
        )
    # (index, epoch) items: persistent workers keep their patch caches and still augment per epoch
    loader = train_loader(
        train_ds,
        batch_size=cfg.data.batch_size,
        device=dev,
        seed=seed,
        sampler=EpochTaggedSampler(inner_sampler),
        num_workers=cfg.data.num_workers,
        persistent_workers=True,
    )
    net = prepare_model(model, dev, cfg.train)
    labelled = catalog["target"].to_numpy() >= 0
    names = class_names_of(set(catalog.loc[labelled, "label"].astype(str)))
    contract = _contract(cfg, model, kwargs, mean, std, names)
    eval_bs = cfg.data.eval_batch_size or cfg.data.batch_size * 2
    y_val = val_cat["target"].to_numpy()

    precision: dict[str, Any] = {"amp": cfg.train.amp, "cpu_bf16": cfg.train.cpu_bf16}
    val_loader = eval_loader(
        val_ds, batch_size=eval_bs, device=dev, num_workers=cfg.data.num_workers, persistent=True
    )

    def evaluate(m: nn.Module) -> dict[str, float]:
        p = predict_probs(m, val_ds, batch_size=eval_bs, device=dev, loader=val_loader, **precision)
        metrics, _ = _val_metrics(cfg, y_val, p)
        return metrics

    def on_epoch_start(epoch: int) -> None:
        set_loader_epoch(loader, epoch)
        train_ds.set_epoch(epoch)

    result = fit_recipe(
        net,
        loader,
        optim=cfg.optim,
        train=cfg.train,
        evaluate=evaluate,
        out_dir=fold_dir,
        contract=contract,
        device=dev,
        resume=resume,
        callbacks=[store_threshold("threshold")],
        on_epoch_start=on_epoch_start,
        progress=progress,
        checkpoint_extra={"fold": fold.index},
    )
    # the kept epoch (the best, or the last of the schedule): reload, predict the validation set, threshold, export
    kept = kept_checkpoint(result, fold_dir, cfg.train.keep)
    kept_epoch = int(kept["extra"]["epoch"])
    average = kept["extra"].get("weight_average") if cfg.train.keep == "last" else None
    model.load_state_dict(average["module"] if average else kept["state_dict"])
    probs = predict_probs(model, val_ds, batch_size=eval_bs, device=dev, loader=val_loader, **precision)
    metrics, thr = _val_metrics(cfg, y_val, probs)
    val_report = classification_report(y_val, probs, threshold=thr)
    parts: list[tuple[str, pd.DataFrame, np.ndarray]] = [("val", val_cat, probs)]
    report = val_report
    if len(fold.test):
        test_cat = catalog.iloc[fold.test]
        test_ds = PatchDataset(
            test_cat, transform=eval_tf, targets={"label"}, cache=None, rng_seed=seed, **common
        )
        test_probs = predict_probs(
            model, test_ds, batch_size=eval_bs, device=dev, num_workers=cfg.data.num_workers, **precision
        )
        parts.append(("test", test_cat, test_probs))
        # the out-of-fold report: the test part at the threshold chosen on validation
        report = classification_report(test_cat["target"].to_numpy(), test_probs, threshold=thr)
        report["val"] = val_report
    report.update(
        {
            "fold": fold.index,
            "fold_name": fold.name,
            "part": parts[-1][0],
            "best_epoch": result.best_epoch,
            "kept_epoch": kept_epoch,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "monitor": cfg.train.monitor,
            "monitor_best": result.best_score,
            "val_balanced_accuracy_at_0.5": metrics["balanced_accuracy"]
            if cfg.threshold.fixed is None
            else None,
            "n_train": len(train_cat),
            "n_train_left_out": len(fold.train) - len(train_cat),
            "n_val": len(fold.val),
            "n_test": len(fold.test),
        }
    )
    if D.is_main_process():
        _export_model(
            model,
            kept["contract"],
            thr,
            fold_dir,
            {"fold": fold.index, "kept_epoch": kept_epoch, "metrics": to_jsonable(report)},
        )
        predictions = _fold_predictions(fold, parts, thr)
        write_text_atomic(fold_dir / FOLD_PREDICTIONS, predictions.to_csv(index=False))
        # metrics.json last: its presence marks the fold finished
        write_text_atomic(fold_dir / FOLD_METRICS, json.dumps(to_jsonable(report), indent=2))
    D.barrier()
    return report


# --------------------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------------------


def recipe_folds(config: ClassifierConfig, catalog: pd.DataFrame) -> list[Fold]:
    """The folds ``config`` makes of ``catalog`` (the same split every time: seeded by ``train.seed``)."""
    return make_folds(
        catalog,
        scheme=config.cv.scheme,
        n_splits=config.cv.n_splits,
        domain_column=config.cv.domain_column,
        val_fraction=config.cv.val_fraction,
        seed=config.train.seed,
    )


def train_classifier(
    config: ClassifierConfig,
    catalog: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    resume: bool = True,
    folds: Sequence[int] | None = None,
    progress: bool | None = None,
    source: object = None,
) -> Path:
    """Cross-validate (or hold-out train) the classifier recipe ``config`` on ``catalog``.

    Folds come from ``config.cv``; each fold is trained with :func:`~mitoscope.engine.loop.fit` (early stopping
    on ``config.train.monitor``, the validation balanced accuracy by default), thresholded on its validation
    data and exported. Finished folds are skipped on a rerun; an interrupted fold resumes from its
    ``last.pt``. The run directory layout is described in the module docstring.

    Args:
        config: the recipe.
        catalog: a labelled catalog (rows with ``target`` -1 are ignored).
        out_dir: run directory.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        resume: reuse finished folds and ``last.pt`` checkpoints.
        folds: only these fold indices (default ``config.cv.folds`` or all).
        progress: progress bars (None: when stderr is a terminal).
        source: name of the catalog's source for error messages.

    Returns:
        ``out_dir``.

    Examples:
        >>> from mitoscope.engine.config import load_config
        >>> cfg = load_config("configs/classifier-cpu.yaml", ClassifierConfig)  # doctest: +SKIP
        >>> train_classifier(cfg, catalog, "runs/cpu")  # doctest: +SKIP
    """
    validate_catalog(catalog)
    D.init_distributed(device="cpu" if str(device) == "cpu" else None)  # before rank 0 alone writes
    out = Path(out_dir)
    catalog = catalog.reset_index(drop=True)
    labelled = catalog["target"].to_numpy() >= 0
    if labelled.sum() == 0:
        raise InputError("the catalog has no labelled rows (normal/atypical)", path=source)
    try:
        class_names_of(set(catalog.loc[labelled, "label"].astype(str)))
    except InputError as exc:
        raise InputError(str(exc), path=source) from None
    counts = class_counts(catalog, np.flatnonzero(labelled))
    if counts["normal"] == 0 or counts["atypical"] == 0:
        raise InputError(
            f"a classifier needs both classes, the labelled rows are {counts['normal']} normal and "
            f"{counts['atypical']} atypical",
            path=source,
        )
    if D.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            _warn_if_recipe_changed(out / "config.yaml", config)
        save_config(config, out / "config.yaml")
    all_folds = recipe_folds(config, catalog)
    wanted = list(folds) if folds is not None else config.cv.folds
    if wanted is not None:
        known = {f.index for f in all_folds}
        bad = sorted(set(wanted) - known)
        if bad:
            raise InputError(f"no fold {bad} in this scheme (folds {sorted(known)})", path=source)
        run_folds = [f for f in all_folds if f.index in set(wanted)]
    else:
        run_folds = all_folds
    check_fold_classes(catalog, run_folds)  # before any fold trains

    def one(fold: Fold, fold_dir: Path) -> Any:
        return train_fold(
            config,
            catalog,
            fold,
            fold_dir,
            device=device,
            resume=resume,
            progress=progress,
            source=source,
        )

    summary = run_crossval(
        run_folds,
        one,
        out,
        resume=resume,
        threshold_metric=config.threshold.metric,
        write=D.is_main_process(),
        extra_summary={
            "scheme": config.cv.scheme,
            "n_folds_total": len(all_folds),
            "fold_names": {str(f.index): f.name for f in all_folds if f.name},
            "model": config.model.name,
        },
    )
    if D.is_main_process():
        write_ensemble(
            out,
            summary["folds_finished"],
            rule=config.cv.ensemble,
            threshold=_ensemble_threshold(config, summary),
        )
    D.barrier()
    return out


def _record_columns(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The catalog columns a predictions CSV keeps, image paths made absolute.

    A catalog CSV's relative image paths resolve against the CSV's own folder, so the paths as given (relative to
    the working directory) would not find the images when ``oof_predictions.csv`` is read back as a catalog.

    Examples:
        >>> cols = _record_columns(pd.DataFrame({"image": ["a.png", ""], "label": ["normal", "atypical"]}))
        >>> os.path.isabs(cols["image"][0]), cols["image"][1], list(cols)
        (True, '', ['image', 'label'])
    """
    columns = {c: rows[c].to_numpy() for c in RECORD_COLUMNS if c in rows}
    if "image" in columns:
        columns["image"] = np.array(
            [os.path.abspath(p) if isinstance(p, str) and p else p for p in columns["image"]], dtype=object
        )
    return columns


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _warn_if_recipe_changed(path: Path, config: ClassifierConfig) -> None:
    """Log which recipe values differ from those of the run being resumed (finished folds keep the old ones)."""
    if not path.is_file():
        return
    import yaml

    try:
        before = _flatten(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return
    now = _flatten(config_to_dict(config))
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k != "cv.folds")
    if changed:
        logger.warning(
            "resuming %s with a changed recipe (%s); finished folds keep the old one: use --no-resume or "
            "another output directory to retrain them",
            path.parent,
            ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:6]),
        )


def _ensemble_threshold(cfg: ClassifierConfig, summary: dict[str, Any]) -> float:
    if cfg.threshold.fixed is not None:
        return float(cfg.threshold.fixed)
    return float(summary.get("oof_pooled_threshold", 0.5))


def write_ensemble(
    out_dir: str | os.PathLike[str],
    fold_indices: Sequence[int],
    *,
    rule: str = "mean",
    threshold: float = 0.5,
) -> Path:
    """Write ``ensemble.json`` listing ``fold_k/model.pt`` of the given folds and the combination rule.

    Examples:
        >>> import tempfile
        >>> p = write_ensemble(tempfile.mkdtemp(), [0, 1], rule="majority")
        >>> json.loads(p.read_text())["models"]
        ['fold_0/model.pt', 'fold_1/model.pt']
    """
    if rule not in RULES:
        raise ValueError(f"unknown ensemble rule {rule!r}; expected one of {RULES}")
    spec = {
        "models": [f"fold_{k}/{MODEL_FILE}" for k in sorted(fold_indices)],
        "rule": rule,
        "threshold": float(threshold),
    }
    return write_text_atomic(Path(out_dir) / ENSEMBLE_FILE, json.dumps(spec, indent=2))
