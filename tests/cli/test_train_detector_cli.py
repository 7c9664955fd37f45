"""``mitoscope train detector`` end to end on tiny regions, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from mitoscope.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--set",
    "model.kwargs={backbone: test_resnet, fpn_channels: 16, aux_hidden: 8, feature_levels: [2, 3]}",
    "--set",
    "data.crop_size=64",
    "--set",
    "data.mpp=0.5",
    "--set",
    "data.batch_size=2",
    "--set",
    "data.crops_per_epoch=4",
    "--set",
    "train.epochs=1",
    "--set",
    "train.threads=1",
    "--set",
    "eval.overlap=16",
]


def _regions(folder: Path, n: int) -> Path:
    from mitoscope.io.midogpp import write_midogpp_json
    from mitoscope.io.tiff_writer import write_tiled_tiff

    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:128, 0:128]
    images, anns = [], []
    for i in range(n):
        img = np.full((128, 128, 3), 220, np.uint8)
        img[(xx - 40 - 10 * i) ** 2 + (yy - 60) ** 2 < 64] = 30
        write_tiled_tiff(folder / f"r{i}.tiff", img, mpp=0.25, pyramid=False, compression="deflate")
        images.append({"file_name": f"r{i}.tiff", "id": i + 1, "width": 128, "height": 128})
        anns.append({"x": 40 + 10 * i, "y": 60, "label": "mitotic figure", "image_id": i + 1})
    write_midogpp_json(folder / "labels.json", images, anns)
    return folder


def test_train_detector_cli_writes_a_run(tmp_path: Path) -> None:
    train = _regions(tmp_path / "train", 2)
    val = _regions(tmp_path / "val", 1)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "detector",
            "--config",
            str(ROOT / "configs" / "detector-cpu.yaml"),
            "--data",
            str(train),
            "--val",
            str(val),
            "--out",
            str(out),
            "--device",
            "cpu",
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best validation F1" in result.output
    assert (out / "best.pt").is_file() and (out / "config.yaml").is_file()
    from mitoscope.models.checkpoint import load_model

    _, contract = load_model(out / "best.pt")
    assert contract.task == "detection" and "default" in contract.thresholds
    assert contract.kwargs["backbone"] == "test_resnet"


def test_train_detector_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = str(ROOT / "configs" / "detector-cpu.yaml")
    missing = runner.invoke(
        app, ["train", "detector", "-c", cfg, "-d", str(tmp_path / "nope"), "-o", str(tmp_path / "r")]
    )
    assert missing.exit_code == 1
    assert "data folder not found" in missing.output and "Traceback" not in missing.output
    bad_key = runner.invoke(
        app,
        [
            "train",
            "detector",
            "-c",
            cfg,
            "-d",
            str(tmp_path),
            "-o",
            str(tmp_path / "r"),
            "--set",
            "data.nope=1",
        ],
    )
    assert bad_key.exit_code == 1 and "nope" in bad_key.output
    bad_cv = runner.invoke(
        app, ["train", "detector", "-c", cfg, "-d", str(tmp_path), "-o", str(tmp_path / "r"), "--cv", "kfold"]
    )
    assert bad_cv.exit_code == 1 and "cv must be" in bad_cv.output


def test_train_detector_help_lists_options() -> None:
    result = CliRunner().invoke(app, ["train", "detector", "--help"])
    assert result.exit_code == 0
    for option in ("--config", "--data", "--out", "--set", "--val", "--cv"):
        assert option in result.output
