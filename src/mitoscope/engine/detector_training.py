"""Train the multi-task RetinaNet detector (Zhang et al., MIDOG 2022) from region folders or a catalog.

The recipe is a typed :class:`DetectorConfig` (YAML in ``configs/detector-*.yaml``) whose ``optim`` and ``train``
sections are the ones every task shares. :func:`train_detector` reads the data (folders of regions + one
MIDOG++-format JSON each, e.g. ``mitoscope synth regions`` output or :func:`mitoscope.data.mosaic.build_mosaics`),
holds out whole regions for validation, draws fresh training crops every epoch
(:class:`~mitoscope.data.detection.CropSampler`), and trains through the shared core
(:mod:`mitoscope.engine.training`: optimiser and schedule, seeds, DDP under ``torchrun``, bf16 / channels-last)
with validation MIDOG F1 as the monitor. Validation runs sliding-window detection over each held-out region
with the :data:`RegionDetector` it is given; the score threshold that maximises F1 there is written into the
checkpoint contract (``thresholds["default"]``). Runs are resumable (``last.pt``).

:func:`cross_validate_lotd` repeats training leaving one tumour type (domain) out at a time through the shared
fold loop and scores the left-out domain with the threshold tuned on the training domains' validation regions
(the paper's protocol).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import torch
from torch import nn

from mitoscope.engine import distributed as D
from mitoscope.engine import training as core
from mitoscope.engine.config import ModelConfig, OptimConfig, TrainConfig, load_config, save_config
from mitoscope.engine.crossval import FOLD_METRICS, Fold, run_folds
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable

logger = logging.getLogger(__name__)

DataSource: TypeAlias = str | os.PathLike[str] | pd.DataFrame | Sequence[str | os.PathLike[str]]


# --------------------------------------------------------------------------------------------- configuration


def _detector_model() -> ModelConfig:
    return ModelConfig(
        name="retinanet_multitask",
        kwargs={"backbone": "resnet50", "pretrained": False, "tile_size": 512, "mpp": 0.25},
    )


@dataclasses.dataclass
class DetectorDataConfig:
    """How training crops are drawn and read.

    ``proportions`` are the shares of crops centred on a mitosis, on a hard negative, and drawn at random.
    ``margin`` extra pixels are read around each crop so that the random crop can move it. Validation uses
    ``val_dirs`` when given, otherwise ``val_fraction`` of the regions (whole regions, by seed), at most
    ``max_val_regions`` of them (``None``: all).
    ``cache_regions`` keeps each region in memory at the crop mpp (regions, mosaics; not whole slides).
    """

    crop_size: int = 512
    mpp: float = 0.25
    batch_size: int = 16
    crops_per_epoch: int = 2048
    proportions: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.25, 0.25])
    max_shift: float = 0.8
    margin: int = 32
    augment: bool = True
    jitter: list[float] = dataclasses.field(default_factory=lambda: [0.35, 0.2, 0.1, 0.1])
    num_workers: int = 0
    cache_regions: bool = True
    val_fraction: float = 0.2
    val_dirs: list[str] = dataclasses.field(default_factory=list)
    max_val_regions: int | None = None


@dataclasses.dataclass
class DetectorEvalConfig:
    """Sliding-window validation: tile overlap (model px), detection batch size, hit radius (µm)."""

    overlap: int = 64
    batch_size: int = 4
    radius_um: float = 7.5


@dataclasses.dataclass
class DetectorConfig:
    """The whole detector recipe (see ``configs/detector-zhang2022.yaml`` and ``configs/detector-cpu.yaml``).

    ``optim`` and ``train`` are the sections every task shares (:mod:`mitoscope.engine.config`), with the
    paper's defaults: Adam at a constant 1e-5, early stopping on the validation MIDOG F1 (``val_f1``; also
    ``val_precision``, ``val_recall``, ``val_f1_at_0.5``). ``train.loss_weights`` maps the loss names
    (``loss_cls``, ``loss_box``, ``loss_tumor``, ``loss_foreground``) to task weights (missing: 1.0).
    """

    model: ModelConfig = dataclasses.field(default_factory=_detector_model)
    data: DetectorDataConfig = dataclasses.field(default_factory=DetectorDataConfig)
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(name="adam", lr=1e-5, weight_decay=0.0, scheduler="none")
    )
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(epochs=50, patience=10, monitor="val_f1")
    )
    eval: DetectorEvalConfig = dataclasses.field(default_factory=DetectorEvalConfig)
    cv: str = "none"


#: Settings that recipes written before the shared sections switched off with 0 (now ``None``).
_ZERO_MEANS_OFF = (
    ("train", "patience"),
    ("train", "max_steps_per_epoch"),
    ("train", "grad_clip"),
    ("train", "threads"),
    ("data", "max_val_regions"),
)


def load_detector_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None, overrides: Sequence[str] = ()
) -> DetectorConfig:
    """Load a :class:`DetectorConfig` from YAML (or a mapping) with ``a.b=value`` overrides.

    A 0 for ``train.patience``, ``train.max_steps_per_epoch``, ``train.grad_clip``, ``train.threads`` or
    ``data.max_val_regions`` means off, as ``null`` does.

    Examples:
        >>> cfg = load_detector_config(None, ["optim.lr=1e-4", "model.kwargs.backbone=test_resnet", "train.patience=0"])
        >>> cfg.optim.lr, cfg.optim.name, cfg.model.kwargs["backbone"], cfg.train.patience
        (0.0001, 'adam', 'test_resnet', None)
    """
    cfg = load_config(source, DetectorConfig, overrides)
    where = source if isinstance(source, str | os.PathLike) else None
    if cfg.cv not in ("none", "lotd"):
        raise InputError(f"cv must be 'none' or 'lotd', got {cfg.cv!r}", path=where)
    if cfg.train.keep != "best":
        raise InputError("a detector keeps its best epoch: train.keep must be 'best'", path=where)
    for section, key in _ZERO_MEANS_OFF:
        part = getattr(cfg, section)
        if getattr(part, key) == 0:
            setattr(part, key, None)
    return cfg


# --------------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class DetectionData:
    """Points (catalog with absolute slide paths) and the regions they lie on."""

    catalog: pd.DataFrame
    slides: dict[str, Any]  # path -> SlideInfo
    tumors: dict[str, str]  # path -> tumour / domain name

    def subset(self, paths: Sequence[str]) -> DetectionData:
        """Only the regions in ``paths``."""
        keep = set(paths)
        cat = (
            self.catalog[self.catalog["slide"].isin(keep)].reset_index(drop=True)
            if len(self.catalog)
            else self.catalog
        )
        return DetectionData(
            cat,
            {k: v for k, v in self.slides.items() if k in keep},
            {k: v for k, v in self.tumors.items() if k in keep},
        )

    def __add__(self, other: DetectionData) -> DetectionData:
        return DetectionData(
            pd.concat([self.catalog, other.catalog], ignore_index=True),
            {**self.slides, **other.slides},
            {**self.tumors, **other.tumors},
        )


def load_detection_data(source: DataSource) -> DetectionData:
    """Read region folders, catalog files, or a catalog whose ``slide`` column holds readable paths.

    A folder holds regions + one MIDOG++-format JSON (:func:`~mitoscope.data.detection.read_region_folder`);
    a file is any catalog source :func:`mitoscope.data.sources.load_catalog` reads (a MIDOG++ JSON, a catalog
    CSV…), its relative slide paths resolved against the file's folder. Several sources are concatenated.

    Examples:
        >>> load_detection_data("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        mitoscope.utils.errors.InputError: /nonexistent: data folder not found
    """
    from mitoscope.data.detection import read_region_folder

    if isinstance(source, pd.DataFrame):
        return _data_from_catalog(source)
    sources = [source] if isinstance(source, str | os.PathLike) else list(source)
    if not sources:
        raise InputError("no data folders given")
    data: DetectionData | None = None
    for item in sources:
        if Path(item).is_file():
            part = _data_from_catalog(_catalog_file(Path(item)))
        else:
            catalog, infos = read_region_folder(item)
            tumors = {p: catalog.attrs.get("tumors", {}).get(p, "") for p in infos}
            part = DetectionData(catalog, dict(infos), tumors)
        data = part if data is None else data + part
    assert data is not None
    return data


def _catalog_file(path: Path) -> pd.DataFrame:
    from mitoscope.data.sources import load_catalog

    catalog = load_catalog(path).reset_index(drop=True).copy()
    if catalog.empty or (catalog["slide"].astype(str) == "").any():
        raise InputError("a detection catalog needs a slide for every row", path=path)
    base = path.resolve().parent
    resolved = []
    for name in catalog["slide"].astype(str):
        p = Path(name)
        resolved.append(str(p if p.is_absolute() else base / p))
    catalog["slide"] = resolved
    return catalog


def _data_from_catalog(frame: pd.DataFrame) -> DetectionData:
    from mitoscope.data.detection import SlideInfo, default_opener

    catalog = frame.reset_index(drop=True).copy()
    slides: dict[str, Any] = {}
    tumors: dict[str, str] = {}
    for path in dict.fromkeys(str(s) for s in catalog["slide"]):
        if not Path(path).is_file():
            raise InputError("slide or region file not found", path=path)
        with default_opener(path) as slide:
            w, h = slide.dimensions
            slides[path] = SlideInfo(int(w), int(h), float(slide.mpp))
        rows = catalog[catalog["slide"] == path]
        tumors[path] = str(next((t for t in rows["tumor"] if t), ""))
    return DetectionData(catalog, slides, tumors)


def detection_sources(
    sources: Sequence[str | os.PathLike[str]], work_dir: str | os.PathLike[str], *, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``(train, val)`` data for :func:`train_detector` from what a user gives as detection data.

    Region folders (regions + a MIDOG++ JSON) and catalogs of points on slides are training data as they are. A
    catalog of patches centred on figures (AMi-Br CSV, AtNorM-MD, class folders, a catalog CSV of images) is
    arranged into mosaics under ``work_dir/mosaics/<name>/`` with a slide-disjoint train / validation split
    (:func:`mitoscope.data.mosaic.patch_mosaics`); its validation part is returned as validation data.

    Under ``torchrun`` (a started process group) rank 0 writes the mosaics while the other ranks wait, then they
    find them written and use the same folders.
    """
    main = D.is_main_process()
    if not main:
        D.barrier()  # rank 0 writes the mosaics first
    try:
        return _detection_sources(sources, Path(work_dir), seed)
    finally:
        if main:
            D.barrier()


def _detection_sources(
    sources: Sequence[str | os.PathLike[str]], work_dir: Path, seed: int
) -> tuple[list[str], list[str]]:
    from mitoscope.data.detection import find_annotation_json
    from mitoscope.data.mosaic import patch_mosaics
    from mitoscope.data.sources import load_catalog

    train: list[str] = []
    val: list[str] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise InputError("data folder not found", path=path)
        if path.is_dir():
            try:
                find_annotation_json(path)
                train.append(str(path))
                continue
            except InputError:
                pass
        catalog = load_catalog(path)
        if not (catalog["image"].astype(str) != "").any():
            train.append(str(path))
            continue
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem) or "patches"
        folders = patch_mosaics(catalog, work_dir / "mosaics" / name, seed=seed, source=path)
        train.append(str(folders["train"]))
        val.append(str(folders["val"]))
    return train, val


def split_regions(paths: Sequence[str], fraction: float, *, seed: int = 0) -> tuple[list[str], list[str]]:
    """Hold out ``fraction`` of the regions (at least one when there are two or more): ``(train, val)``.

    Examples:
        >>> split_regions([f"r{i}" for i in range(10)], 0.2, seed=0)[1].__len__()
        2
    """
    paths = sorted(paths)
    if len(paths) < 2 or fraction <= 0:
        return paths, []
    rng = np.random.default_rng(seed)
    order = [paths[i] for i in rng.permutation(len(paths))]
    n_val = min(len(paths) - 1, max(1, round(fraction * len(paths))))
    return sorted(order[n_val:]), sorted(order[:n_val])


# --------------------------------------------------------------------------------------------- detection

#: ``detect(model, contract, slide, *, overlap, batch_size, device) -> DataFrame`` (``x, y`` level-0 px,
#: ``score``, ``label``): every candidate the model keeps in a whole region, for threshold tuning. Validation and
#: scoring take one (:func:`region_detector` builds it from a whole-slide detection function).
RegionDetector: TypeAlias = Callable[..., pd.DataFrame]


def region_detector(detect_slide: Callable[..., pd.DataFrame]) -> RegionDetector:
    """A :data:`RegionDetector` from a whole-slide detection function with the signature of
    :func:`mitoscope.inference.detect.detect_slide`: every candidate (threshold 0), no tissue skipping, tiles
    read in the main thread, no progress bar.

    Examples:
        >>> from mitoscope.inference.detect import detect_slide  # doctest: +SKIP
        >>> run = train_detector(cfg, data, "runs/det", detect=region_detector(detect_slide))  # doctest: +SKIP
    """

    def detect(
        model: nn.Module,
        contract: Any,
        slide: Any,
        *,
        overlap: int = 64,
        batch_size: int = 4,
        device: torch.device | str = "cpu",
    ) -> pd.DataFrame:
        found = detect_slide(
            model,
            contract,
            slide,
            batch_size=batch_size,
            overlap=overlap,
            device=device,
            threshold=0.0,
            num_workers=0,
            progress=False,
            tissue=False,
        )
        return found[["x", "y", "score", "label"]].reset_index(drop=True)

    return detect


def predict_regions(
    model: nn.Module,
    contract: Any,
    data: DetectionData,
    *,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    detect: RegionDetector,
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """``{region: (detections, ground truth)}`` for every region of ``data`` (the input of ``midog_f1``).

    ``detect`` finds the candidates of one region (:func:`region_detector`).
    """
    from mitoscope.data.detection import default_opener

    out: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for path in data.slides:
        with default_opener(path) as slide:
            dets = detect(model, contract, slide, overlap=overlap, batch_size=batch_size, device=device)
        gt = (
            data.catalog[data.catalog["slide"] == path][["x", "y", "label"]].reset_index(drop=True)
            if len(data.catalog)
            else pd.DataFrame(columns=["x", "y", "label"])
        )
        out[path] = (dets, gt)
    return out


def score_regions(
    per_image: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]],
    data: DetectionData,
    *,
    threshold: float | None = None,
    radius_um: float = 7.5,
) -> dict[str, float]:
    """MIDOG F1 at ``threshold`` (or at the best threshold when ``None``): f1, precision, recall, tp, fp, fn,
    threshold."""
    from mitoscope.metrics.detection import best_threshold, midog_f1

    mpp = {p: data.slides[p].mpp for p in per_image}
    if threshold is None:
        threshold, score = best_threshold(per_image, mpp=mpp, radius_um=radius_um)
    else:
        score = midog_f1(per_image, mpp=mpp, radius_um=radius_um, threshold=threshold)
    return {
        "f1": float(score.f1),
        "precision": float(score.precision),
        "recall": float(score.recall),
        "tp": int(score.tp),
        "fp": int(score.fp),
        "fn": int(score.fn),
        "threshold": float(threshold),
    }


def validation_metrics(
    model: nn.Module,
    contract: Any,
    val: DetectionData,
    cfg: DetectorEvalConfig,
    *,
    device: torch.device | str = "cpu",
    detect: RegionDetector,
) -> dict[str, float]:
    """The detector's validation metrics: MIDOG F1 at the best threshold (``val_f1``, ``val_threshold``,
    ``val_precision``, ``val_recall``) and at 0.5 (``val_f1_at_0.5``).

    Under ``torchrun`` each rank detects in its share of the regions and the detections are gathered.
    """
    info = D.get_info()
    mine = val.subset(D.shard(sorted(val.slides), info.rank, info.world_size))
    found = predict_regions(
        D.unwrap_model(model),
        contract,
        mine,
        overlap=cfg.overlap,
        batch_size=cfg.batch_size,
        device=device,
        detect=detect,
    )
    gathered: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for part in D.all_gather_object(found):
        gathered.update(part)
    per_image = {path: gathered[path] for path in val.slides}
    tuned = score_regions(per_image, val, radius_um=cfg.radius_um)
    at_half = score_regions(per_image, val, threshold=0.5, radius_um=cfg.radius_um)
    return {
        "val_f1": tuned["f1"],
        "val_threshold": tuned["threshold"],
        "val_precision": tuned["precision"],
        "val_recall": tuned["recall"],
        "val_f1_at_0.5": at_half["f1"],
    }


# --------------------------------------------------------------------------------------------- training


@dataclasses.dataclass
class DetectorRun:
    """Outcome of :func:`train_detector`."""

    out_dir: Path
    best_path: Path | None
    best_f1: float
    threshold: float
    epochs_run: int
    history: pd.DataFrame


def _model_kwargs(cfg: DetectorConfig, num_tumor_types: int) -> dict[str, Any]:
    kwargs = dict(cfg.model.kwargs)
    kwargs.setdefault("tile_size", cfg.data.crop_size)
    kwargs.setdefault("mpp", cfg.data.mpp)
    if int(kwargs["tile_size"]) != cfg.data.crop_size or not math.isclose(float(kwargs["mpp"]), cfg.data.mpp):
        raise InputError(
            f"model.kwargs tile_size/mpp ({kwargs['tile_size']}, {kwargs['mpp']}) must match data.crop_size/"
            f"data.mpp ({cfg.data.crop_size}, {cfg.data.mpp})"
        )
    kwargs.setdefault("num_tumor_types", max(1, num_tumor_types))
    return kwargs


def _as_data(source: DataSource | DetectionData) -> DetectionData:
    return source if isinstance(source, DetectionData) else load_detection_data(source)


def _train_and_val(
    cfg: DetectorConfig, data: DataSource | DetectionData, val_data: DataSource | DetectionData | None
) -> tuple[DetectionData, DetectionData]:
    """The training and validation regions: ``val_data``, else ``data.val_dirs``, else a split of ``data``."""
    train = _as_data(data)
    if val_data is not None:
        val = _as_data(val_data)
    elif cfg.data.val_dirs:
        val = load_detection_data(cfg.data.val_dirs)
    else:
        train_paths, val_paths = split_regions(list(train.slides), cfg.data.val_fraction, seed=cfg.train.seed)
        train, val = train.subset(train_paths), train.subset(val_paths)
    if not train.slides:
        raise InputError("no training regions")
    if not val.slides:
        raise InputError("no validation regions: give val_dirs or at least two regions with val_fraction > 0")
    if cfg.data.max_val_regions is not None and len(val.slides) > cfg.data.max_val_regions:
        val = val.subset(sorted(val.slides)[: cfg.data.max_val_regions])
    if train.catalog.empty or not (train.catalog["label"] == "mitotic figure").any():
        raise InputError("the training data has no mitotic figures")
    return train, val


def train_detector(
    config: DetectorConfig | str | os.PathLike[str],
    data: DataSource | DetectionData,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    resume: bool = True,
    val_data: DataSource | DetectionData | None = None,
    progress: bool | None = None,
    detect: RegionDetector,
) -> DetectorRun:
    """Train the detector recipe ``config`` on ``data`` and write a run folder.

    ``out_dir`` gets ``config.yaml`` (resolved), ``history.csv``, ``best.pt`` (highest validation F1; its
    contract carries the tuned threshold in ``thresholds["default"]``), ``last.pt`` and ``summary.json``.
    The loop, optimiser, schedule, seeds, mixed precision and ``torchrun`` data parallelism are the shared
    core's (:mod:`mitoscope.engine.training`).

    Args:
        config: a :class:`DetectorConfig` or a YAML path.
        data: region folder(s), a catalog, or :class:`DetectionData`.
        out_dir: run folder (resumed when it holds ``last.pt`` and ``resume`` is true).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``…
        resume: continue an interrupted run.
        val_data: explicit validation regions (else ``config.data.val_dirs`` or a ``val_fraction`` split).
        progress: progress bar (None: when stderr is a terminal).
        detect: finds the candidates of a validation region (:func:`region_detector`).

    Returns:
        A :class:`DetectorRun`.

    Examples:
        >>> from mitoscope.inference.detect import detect_slide  # doctest: +SKIP
        >>> detect = region_detector(detect_slide)  # doctest: +SKIP
        >>> run = train_detector("configs/detector-cpu.yaml", "synth/", "runs/det", detect=detect)  # doctest: +SKIP
        >>> run.threshold  # doctest: +SKIP
        0.41
    """
    from mitoscope.data.detection import (
        CropSampler,
        DetectionCropDataset,
        DetectionTransform,
        collate_detection,
        points_by_slide,
    )
    from mitoscope.models.registry import create_model

    cfg = config if isinstance(config, DetectorConfig) else load_detector_config(config)
    dev = core.start_run(cfg.train, device)
    out = Path(out_dir)
    train, val = _train_and_val(cfg, data, val_data)

    tumor_types = sorted({t for t in train.tumors.values() if t} | {t for t in train.catalog["tumor"] if t})
    kwargs = _model_kwargs(cfg, len(tumor_types))
    model = create_model(cfg.model.name, **kwargs)
    normalise: Any = getattr(model, "transform")  # noqa: B009 - the detector's normalising transform
    mean = tuple(float(v) for v in normalise.image_mean)
    std = tuple(float(v) for v in normalise.image_std)
    net = core.prepare_model(model, dev, cfg.train)
    if D.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    contract = core.training_contract(
        cfg,
        architecture=cfg.model.name,
        kwargs={**kwargs, "pretrained": False, "mean": list(mean), "std": list(std)},
        task="detection",
        input_size=cfg.data.crop_size,
        mpp=cfg.data.mpp,
        mean=mean,
        std=std,
        class_names=("background", "mitotic figure"),
        tumor_types=tumor_types,
    )

    sampler = CropSampler(
        train.catalog,
        train.slides,
        size=cfg.data.crop_size,
        mpp=cfg.data.mpp,
        proportions=cfg.data.proportions,
        max_shift=cfg.data.max_shift,
        tumor_index={t: i for i, t in enumerate(tumor_types)},
        slide_tumors=train.tumors,
    )
    dataset = DetectionCropDataset(
        sampler.sample(cfg.data.crops_per_epoch, seed=cfg.train.seed),
        points_by_slide(train.catalog),
        transform=DetectionTransform(
            cfg.data.crop_size,
            train=cfg.data.augment,
            jitter=cfg.data.jitter if cfg.data.augment and cfg.data.jitter else None,
            seed=cfg.train.seed,
        ),
        margin=cfg.data.margin if cfg.data.augment else 0,
        box_um=float(kwargs.get("box_um", 12.5)),
        cache=cfg.data.cache_regions,
    )
    loader = core.train_loader(
        dataset,
        batch_size=cfg.data.batch_size,
        device=dev,
        seed=cfg.train.seed,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_detection,
    )

    def on_epoch_start(epoch: int) -> None:
        dataset.set_records(sampler.sample(cfg.data.crops_per_epoch, seed=cfg.train.seed * 100_003 + epoch))
        core.set_loader_epoch(loader, epoch)

    def evaluate(m: nn.Module) -> dict[str, float]:
        return validation_metrics(m, contract, val, cfg.eval, device=dev, detect=detect)

    result = core.fit_recipe(
        net,
        loader,
        optim=cfg.optim,
        train=cfg.train,
        evaluate=evaluate,
        out_dir=out,
        contract=contract,
        device=dev,
        resume=resume,
        callbacks=[core.store_threshold("val_threshold")],
        on_epoch_start=on_epoch_start,
        checkpoint_extra={"val_regions": sorted(val.slides), "train_regions": sorted(train.slides)},
        progress=progress,
    )
    threshold = 0.5
    if result.best_path is not None and Path(result.best_path).is_file():
        threshold = float(core.kept_checkpoint(result, out)["contract"]["thresholds"]["default"])
    best_f1 = float(result.best_score) if result.best_score is not None else float("nan")
    summary = {
        "best_val_f1": best_f1,
        "best_epoch": int(result.best_epoch),
        "epochs_run": int(result.epochs_run),
        "threshold": threshold,
        "train_regions": len(train.slides),
        "val_regions": len(val.slides),
        "tumor_types": tumor_types,
    }
    if D.is_main_process():
        write_text_atomic(out / "summary.json", json.dumps(to_jsonable(summary), indent=2))
    return DetectorRun(
        out_dir=out,
        best_path=Path(result.best_path) if result.best_path is not None else None,
        best_f1=best_f1,
        threshold=threshold,
        epochs_run=int(result.epochs_run),
        history=result.history,
    )


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: DataSource | DetectionData,
    *,
    threshold: float | None = None,
    overlap: int = 64,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    radius_um: float = 7.5,
    detect: RegionDetector,
) -> dict[str, float]:
    """MIDOG F1 of a detector checkpoint on region data at its contract threshold (or ``threshold``), the
    candidates found by ``detect`` (:func:`region_detector`)."""
    from mitoscope.models.checkpoint import load_model

    model, contract = load_model(checkpoint, device=device)
    regions = _as_data(data)
    per_image = predict_regions(
        model, contract, regions, overlap=overlap, batch_size=batch_size, device=device, detect=detect
    )
    chosen = float(contract.thresholds.get("default", 0.5)) if threshold is None else float(threshold)
    return score_regions(per_image, regions, threshold=chosen, radius_um=radius_um)


LOTD_FILE = "lotd.csv"


def cross_validate_lotd(
    config: DetectorConfig | str | os.PathLike[str],
    data: DataSource | DetectionData,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    resume: bool = True,
    domains: Sequence[str] | None = None,
    progress: bool | None = None,
    detect: RegionDetector,
) -> pd.DataFrame:
    """Leave-one-tumour(domain)-out: train on the other domains, score the left-out one at the tuned threshold.

    The folds run through the shared fold loop (:func:`mitoscope.engine.crossval.run_folds`): a finished
    domain (its ``metrics.json``) is skipped on a rerun. ``detect`` validates and scores (:func:`region_detector`).
    Writes ``out_dir/<domain>/`` runs and
    ``out_dir/lotd.csv``; returns one row per left-out domain (``domain, f1, precision, recall, tp, fp, fn,
    threshold``).
    """
    from mitoscope.utils.device import resolve_device

    cfg = config if isinstance(config, DetectorConfig) else load_detector_config(config)
    full = _as_data(data)
    names = sorted({t for t in full.tumors.values() if t}) if domains is None else list(domains)
    if len(names) < 2:
        raise InputError(f"leave-one-domain-out needs at least two tumour types/domains, found {names}")
    regions = list(full.tumors)
    domain_of = np.array([full.tumors[p] for p in regions], dtype=object)
    folds = [
        Fold(
            k,
            np.flatnonzero(domain_of != name),
            np.zeros(0, np.int64),
            np.flatnonzero(domain_of == name),
            name,
        )
        for k, name in enumerate(names)
    ]
    dev = resolve_device(device)

    def one(fold: Fold, fold_dir: Path) -> None:
        run = train_detector(
            cfg,
            full.subset([regions[i] for i in fold.train]),
            fold_dir,
            device=device,
            resume=resume,
            progress=progress,
            detect=detect,
        )
        if run.best_path is None:
            raise RuntimeError(f"no checkpoint for left-out domain {fold.name!r}")
        scored = evaluate_checkpoint(
            run.best_path,
            full.subset([regions[i] for i in fold.test]),
            overlap=cfg.eval.overlap,
            batch_size=cfg.eval.batch_size,
            device=dev,
            radius_um=cfg.eval.radius_um,
            detect=detect,
        )
        if D.is_main_process():
            write_text_atomic(fold_dir / FOLD_METRICS, json.dumps(to_jsonable(scored), indent=2))
        D.barrier()

    out = Path(out_dir)
    run_folds(
        folds,
        one,
        out,
        resume=resume,
        fold_dir=lambda fold: _safe(fold.name),
        finished=lambda fold_dir: (fold_dir / FOLD_METRICS).is_file(),
    )
    rows = [
        {"domain": name, **json.loads((out / _safe(name) / FOLD_METRICS).read_text(encoding="utf-8"))}
        for name in names
    ]
    table = pd.DataFrame(rows)
    if D.is_main_process():
        write_text_atomic(out / LOTD_FILE, table.to_csv(index=False))
    return table


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "domain"
