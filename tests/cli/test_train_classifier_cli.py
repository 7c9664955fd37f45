"""``mitoscope train classifier`` end to end on a few dozen tiny patches, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from typer.testing import CliRunner

from mitoscope.cli.main import app

runner = CliRunner()


def _data(root, n=24, n_slides=9, size=40):  # 9 slides: both classes in every fold part
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        atypical = i % 3 == 0
        arr = rng.integers(170, 230, (size, size, 3), dtype=np.uint8)
        r = 12 if atypical else 5
        arr[20 - r : 20 + r, 20 - r : 20 + r] = (70, 30, 120)
        Image.fromarray(arr).save(root / f"p{i}.png")
        rows.append(
            {"image": f"p{i}.png", "slide": f"s{i % n_slides}", "label": "atypical" if atypical else "normal"}
        )
    pd.DataFrame(rows).to_csv(root / "catalog.csv", index=False)
    return root / "catalog.csv"


def _recipe(path):
    path.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "name": "atypical_single",
                    "kwargs": {"backbone": "test_resnet", "pretrained": False},
                },
                "data": {"size": 32, "batch_size": 6, "augment": {"hed_jitter": None, "max_angle": 0}},
                "optim": {"lr": 3e-3},
                "train": {"epochs": 1},
                "cv": {"scheme": "group_kfold", "n_splits": 3},
            }
        )
    )
    return path


def test_train_classifier_cli_end_to_end(tmp_path):
    data = _data(tmp_path / "data")
    cfg = _recipe(tmp_path / "recipe.yaml")
    out = tmp_path / "run"
    args = ["train", "classifier", "-c", str(cfg), "-d", str(data), "-o", str(out), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--set", "train.epochs=2", "--folds", "0,2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "done: 2 fold(s)" in result.output and "balanced accuracy" in result.output
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 2 and resolved["model"]["kwargs"]["backbone"] == "test_resnet"
    assert json.loads((out / "ensemble.json").read_text())["models"] == ["fold_0/model.pt", "fold_2/model.pt"]
    assert len(pd.read_csv(out / "fold_0" / "history.csv")) == 2
    assert not (out / "fold_1").exists()
    # the remaining fold later: finished folds are kept, the ensemble grows
    result = runner.invoke(app, [*args, "--set", "train.epochs=2", "--folds", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "done: 3 fold(s)" in result.output
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds_finished"] == [0, 1, 2] and summary["folds_trained_now"] == [1]
    assert summary["oof"]["n"] == 24
    # the trained run classifies with `mitoscope classify RUN`
    result = runner.invoke(
        app, ["classify", "--model", str(out), str(tmp_path / "data"), "-o", str(tmp_path / "pred.csv")]
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "pred.csv")) == 24


def test_train_classifier_cli_errors_are_one_line(tmp_path):
    data = _data(tmp_path / "data", n=12, n_slides=4)
    cfg = _recipe(tmp_path / "recipe.yaml")
    base = [
        "train",
        "classifier",
        "-c",
        str(cfg),
        "-d",
        str(data),
        "-o",
        str(tmp_path / "run"),
        "--device",
        "cpu",
    ]

    result = runner.invoke(app, [*base, "--set", "optim.learning_rate=1"])
    assert result.exit_code == 1
    assert "unknown key 'optim.learning_rate'" in result.output and "Traceback" not in result.output

    result = runner.invoke(app, [*base, "--folds", "zero"])
    assert result.exit_code == 1 and "--folds must be" in result.output

    result = runner.invoke(app, [*base[:-1], "gpu0"])
    assert result.exit_code == 1 and "unknown device 'gpu0'" in result.output
    assert not (tmp_path / "run").exists()  # refused before anything was written

    result = runner.invoke(app, [*base[:3], str(tmp_path / "missing.yaml"), *base[4:]])
    assert result.exit_code == 1 and "missing.yaml" in result.output and "not found" in result.output

    result = runner.invoke(app, [*base[:5], str(tmp_path / "nodata.csv"), *base[6:]])
    assert result.exit_code == 1 and "nodata.csv" in result.output

    (tmp_path / "data" / "p3.png").write_bytes(b"garbage")
    result = runner.invoke(app, [*base, "--no-progress"])
    assert result.exit_code == 1 and "p3.png" in result.output and "row 3" in result.output
    assert "Traceback" not in result.output
