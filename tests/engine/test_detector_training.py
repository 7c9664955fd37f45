"""A tiny detector training run end to end: config, data split, fit, tuned threshold in the contract, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mitoscope.engine.detector_training import (
    DetectorConfig,
    cross_validate_lotd,
    evaluate_checkpoint,
    load_detection_data,
    load_detector_config,
    region_detector,
    split_regions,
    train_detector,
)
from mitoscope.inference.detect import detect_slide
from mitoscope.utils.errors import InputError

DETECT = region_detector(detect_slide)  # validation and scoring detect the way `mitoscope detect` does

TINY = [
    "model.kwargs={backbone: test_resnet, fpn_channels: 16, aux_hidden: 8, feature_levels: [2, 3]}",
    "data.crop_size=64",
    "data.mpp=0.5",
    "data.batch_size=2",
    "data.crops_per_epoch=4",
    "data.margin=4",
    "train.epochs=2",
    "train.threads=1",
    "eval.overlap=16",
    "optim.lr=1e-3",
]


def write_regions(
    folder: Path, n: int, *, tumors: tuple[str, ...] = ("human melanoma",), seed: int = 0
) -> Path:
    """Small regions (160 px at 0.25 µm/px): dark discs = mitoses, pale discs = hard negatives."""
    from mitoscope.io.midogpp import write_midogpp_json
    from mitoscope.io.tiff_writer import write_tiled_tiff

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:160, 0:160]
    images, anns = [], []
    for i in range(n):
        img = rng.integers(200, 235, (160, 160, 3)).astype(np.uint8)
        for j, (label, value) in enumerate((("mitotic figure", 40), ("hard negative", 150))):
            cx, cy = 40 + 80 * j + rng.integers(-10, 10), 40 + 80 * ((i + j) % 2) + rng.integers(-10, 10)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 64] = value
            anns.append({"x": int(cx), "y": int(cy), "label": label, "image_id": i + 1})
        name = f"r{i}.tiff"
        write_tiled_tiff(folder / name, img, mpp=0.25, pyramid=False, compression="deflate")
        images.append(
            {
                "file_name": name,
                "id": i + 1,
                "width": 160,
                "height": 160,
                "tumor_type": tumors[i % len(tumors)],
            }
        )
    write_midogpp_json(folder / "annotations.json", images, anns)
    return folder


def test_config_loading_and_validation(tmp_path: Path) -> None:
    cfg = load_detector_config(None, TINY)
    assert (
        isinstance(cfg, DetectorConfig)
        and cfg.data.crop_size == 64
        and cfg.model.kwargs["backbone"] == "test_resnet"
    )
    for name in ("detector-cpu.yaml", "detector-zhang2022.yaml"):
        recipe = load_detector_config(Path(__file__).resolve().parents[2] / "configs" / name)
        assert recipe.model.kwargs["tile_size"] == recipe.data.crop_size
    zhang = load_detector_config(Path(__file__).resolve().parents[2] / "configs" / "detector-zhang2022.yaml")
    assert (zhang.optim.lr, zhang.data.batch_size, zhang.model.kwargs["backbone"]) == (1e-5, 16, "resnet50")
    with pytest.raises(InputError, match="cv must be"):
        load_detector_config(None, ["cv=kfold"])
    with pytest.raises(InputError):
        load_detector_config(None, ["data.no_such_key=1"])


def test_split_regions_disjoint() -> None:
    paths = [f"r{i}" for i in range(7)]
    train, val = split_regions(paths, 0.3, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == paths
    assert split_regions(["only"], 0.5) == (["only"], [])


def test_tiny_training_writes_a_loadable_checkpoint_with_tuned_threshold(tmp_path: Path) -> None:
    from mitoscope.models.checkpoint import load_model, read_checkpoint

    data = write_regions(tmp_path / "data", 5, tumors=("human melanoma", "canine lymphoma"))
    cfg = load_detector_config(None, TINY)
    run = train_detector(cfg, data, tmp_path / "run", device="cpu", progress=False, detect=DETECT)
    assert run.epochs_run == 2 and run.best_path is not None and run.best_path.is_file()
    for name in ("last.pt", "history.csv", "config.yaml", "summary.json"):
        assert (tmp_path / "run" / name).is_file()
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert {"val_f1", "val_threshold", "train_loss_cls", "train_loss_tumor", "train_loss_foreground"} <= set(
        history
    )

    model, contract = load_model(run.best_path)
    assert contract.task == "detection" and contract.architecture == "retinanet_multitask"
    assert contract.input_size == 64 and contract.mpp == 0.5
    best_row = history.loc[history["best"]].iloc[-1]
    assert contract.thresholds["default"] == pytest.approx(best_row["val_threshold"])
    assert contract.thresholds["default"] == pytest.approx(run.threshold)
    assert contract.config["tumor_types"] == ["canine lymphoma", "human melanoma"]
    assert contract.kwargs["num_tumor_types"] == 2 and contract.kwargs["pretrained"] is False
    assert read_checkpoint(run.best_path)["extra"]["monitor"] == "val_f1"
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) == {"boxes", "scores", "labels"}

    # resuming a finished run returns at once with the same result
    again = train_detector(cfg, data, tmp_path / "run", device="cpu", progress=False, detect=DETECT)
    assert again.epochs_run == 2 and again.threshold == pytest.approx(run.threshold)

    scored = evaluate_checkpoint(run.best_path, data, overlap=16, detect=DETECT)
    assert {"f1", "precision", "recall", "tp", "fp", "fn", "threshold"} <= set(scored)
    assert scored["threshold"] == pytest.approx(run.threshold)
    assert scored["tp"] + scored["fn"] == 5  # one mitosis per region; hard negatives are not targets


def test_ablation_config_trains_without_aux_losses(tmp_path: Path) -> None:
    data = write_regions(tmp_path / "data", 3)
    cfg = load_detector_config(
        None,
        [
            *TINY,
            "train.epochs=1",
            "model.kwargs.aux_tumor=false",
            "model.kwargs.aux_foreground=false",
            "data.augment=false",
        ],
    )
    train_detector(cfg, data, tmp_path / "run", device="cpu", progress=False, detect=DETECT)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert "train_loss_tumor" not in history and "train_loss_foreground" not in history


def test_training_errors_are_clear(tmp_path: Path) -> None:
    cfg = load_detector_config(None, TINY)
    with pytest.raises(InputError, match="data folder not found"):
        train_detector(cfg, tmp_path / "nope", tmp_path / "run", device="cpu", detect=DETECT)
    one = write_regions(tmp_path / "one", 1)
    with pytest.raises(InputError, match="no validation regions"):
        train_detector(cfg, one, tmp_path / "run", device="cpu", detect=DETECT)
    bad = load_detector_config(None, [*TINY, "model.kwargs.tile_size=128"])
    with pytest.raises(InputError, match="must match"):
        train_detector(bad, write_regions(tmp_path / "d", 2), tmp_path / "run", device="cpu", detect=DETECT)


def test_load_detection_data_from_a_catalog(tmp_path: Path) -> None:
    folder = write_regions(tmp_path / "data", 2)
    from_folder = load_detection_data(folder)
    again = load_detection_data(from_folder.catalog)
    assert again.slides == from_folder.slides and len(again.catalog) == 4


@pytest.mark.slow
def test_leave_one_tumour_out(tmp_path: Path) -> None:
    data = write_regions(tmp_path / "data", 6, tumors=("human melanoma", "canine lymphoma"))
    cfg = load_detector_config(None, [*TINY, "train.epochs=1"])
    table = cross_validate_lotd(cfg, data, tmp_path / "lotd", device="cpu", progress=False, detect=DETECT)
    assert table["domain"].tolist() == ["canine lymphoma", "human melanoma"]
    assert (tmp_path / "lotd" / "lotd.csv").is_file()
    assert ((table["tp"] + table["fn"]) == 3).all()
    # the shared fold loop: a rerun skips the finished domains (their metrics.json) and gives the same table
    history = tmp_path / "lotd" / "canine_lymphoma" / "history.csv"
    stamp = history.stat().st_mtime_ns
    again = cross_validate_lotd(cfg, data, tmp_path / "lotd", device="cpu", progress=False, detect=DETECT)
    pd.testing.assert_frame_equal(again, table)
    assert (
        history.stat().st_mtime_ns == stamp
        and (tmp_path / "lotd" / "canine_lymphoma" / "metrics.json").is_file()
    )


def test_load_detection_data_from_a_json_file(tmp_path: Path) -> None:
    folder = write_regions(tmp_path / "data", 2)
    data = load_detection_data(folder / "annotations.json")
    assert len(data.catalog) == 4 and all(Path(p).is_file() for p in data.slides)
    (tmp_path / "data" / "r1.tiff").unlink()
    with pytest.raises(InputError, match="not found"):
        load_detection_data(folder / "annotations.json")
