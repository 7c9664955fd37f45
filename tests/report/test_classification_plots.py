from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.report.classification_plots import (
    CONFUSION_FILE,
    ROC_FILE,
    confusion_counts,
    roc_pixel_polyline,
    roc_points,
    write_classification_plots,
)


def test_perfect_roc_passes_through_top_left() -> None:
    y = [0, 0, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.8, 0.9]
    roc = roc_points(y, p)
    pts = list(zip(roc["fpr"].tolist(), roc["tpr"].tolist(), strict=True))
    assert (0.0, 1.0) in pts
    assert pts[0] == (0.0, 0.0) and pts[-1] == (1.0, 1.0)
    assert roc["auroc"] == 1.0
    # the pixel polyline maps (0, 1) to the top-left corner of the plot box
    pix = roc_pixel_polyline(roc["fpr"], roc["tpr"], box=(10, 20, 110, 120))
    assert (10.0, 20.0) in pix


def test_inverted_roc_does_not_reach_top_left() -> None:
    roc = roc_points([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    pts = set(zip(roc["fpr"].tolist(), roc["tpr"].tolist(), strict=True))
    assert (0.0, 1.0) not in pts
    assert roc["auroc"] == 0.0


def test_roc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        roc_points([1, 1, 1], [0.2, 0.5, 0.9])


def test_confusion_counts_layout() -> None:
    # rows truth (normal, atypical), columns prediction
    assert confusion_counts([0, 0, 0, 1, 1], [0, 1, 1, 1, 0]).tolist() == [[1, 2], [1, 1]]


def test_write_pngs_of_expected_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(y * 0.4 + rng.random(60) * 0.6, 0, 1)
    out = write_classification_plots(y, p, tmp_path / "plots", size=320)
    assert set(out) == {"confusion_matrix", "roc_curve"}
    for path in out.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (320, 320) and im.mode == "RGB"
            # something was drawn: not a blank page
            assert np.asarray(im).std() > 5
    assert not list((tmp_path / "plots").glob("*.tmp*"))


def test_one_class_writes_confusion_only(tmp_path: Path) -> None:
    out = write_classification_plots([1, 1, 1], [0.2, 0.6, 0.9], tmp_path)
    assert set(out) == {"confusion_matrix"}
    assert not (tmp_path / ROC_FILE).exists()


def test_cli_plots_option(tmp_path: Path) -> None:
    names = [f"{i}.png" for i in range(8)]
    for name in names:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    cat = pd.DataFrame({"image": names, "label": ["atypical"] * 3 + ["normal"] * 5})
    truth = tmp_path / "truth.csv"
    cat.to_csv(truth, index=False)
    pred = pd.DataFrame({"file": names, "p_atypical": [0.9, 0.7, 0.4, 0.1, 0.2, 0.6, 0.3, 0.05]})
    pred_csv = tmp_path / "pred.csv"
    pred.to_csv(pred_csv, index=False)
    res = CliRunner().invoke(
        app,
        ["evaluate", "classification", str(pred_csv), "--truth", str(truth), "--bootstrap", "0",
         "--plots", str(tmp_path / "figs")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in (CONFUSION_FILE, ROC_FILE):
        with Image.open(tmp_path / "figs" / name) as im:
            assert im.format == "PNG" and im.size == (400, 400)
