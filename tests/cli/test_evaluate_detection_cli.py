"""``mitoscope evaluate detection`` on prediction folders and MIDOG++ JSON files with known scores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.io.midogpp import write_midogpp_json
from mitoscope.io.tiff_writer import write_tiled_tiff


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def ground_truth(tmp_path):
    """Two slides of two tumour types; slide 1 has 3 figures and a hard negative, slide 2 has 1 figure."""
    images = [
        {"file_name": "001.tiff", "id": 1, "width": 2000, "height": 2000, "tumor_type": "human melanoma"},
        {"file_name": "002.tiff", "id": 2, "width": 2000, "height": 2000, "tumor_type": "canine lymphoma"},
        {"file_name": "003.tiff", "id": 3, "width": 2000, "height": 2000, "tumor_type": "canine lymphoma"},
    ]
    anns = [
        {"image_id": 1, "x": 100, "y": 100, "label": "mitotic figure"},
        {"image_id": 1, "x": 500, "y": 500, "label": "mitotic figure"},
        {"image_id": 1, "x": 900, "y": 900, "label": "mitotic figure"},
        {"image_id": 1, "x": 1500, "y": 1500, "label": "hard negative"},
        {"image_id": 2, "x": 300, "y": 300, "label": "mitotic figure"},
    ]
    folder = tmp_path / "synth"
    write_midogpp_json(folder / "annotations.json", images, anns)
    return folder


def write_preds(folder, name, rows, mpp=0.25):
    frame = pd.DataFrame(rows, columns=["x", "y", "score", "label"])
    frame.insert(0, "slide", name)
    frame["x_mm"] = frame["x"] * mpp / 1000
    frame["y_mm"] = frame["y"] * mpp / 1000
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.csv", index=False)


@pytest.fixture()
def predictions(tmp_path):
    folder = tmp_path / "pred"
    mf, nm = "mitotic figure", "non-mitotic figure"
    # slide 001: two hits (one 29 px away), one on the hard negative (FP), one duplicate (FP), a low candidate
    write_preds(folder, "001", [(100, 100, 0.9, mf), (529, 500, 0.8, mf), (1500, 1500, 0.7, mf),
                                (102, 101, 0.6, mf), (900, 900, 0.3, nm)])  # fmt: skip
    # slide 002: the only figure missed, one FP
    write_preds(folder, "002", [(1000, 1000, 0.9, mf)])
    # slide 003 (no figures): nothing found (an empty CSV with its header)
    write_preds(folder, "003", [])
    return folder


def test_scores_table_and_json(tmp_path, ground_truth, predictions):
    out = tmp_path / "scores.json"
    res = run("evaluate", "detection", predictions, ground_truth, "--json", out, "--by", "tumor")
    assert res.exit_code == 0, res.output
    assert "F1" in res.output and "overall" in res.output
    scores = json.loads(out.read_text())
    overall = scores["overall"]
    # TP 2; FP: hard negative, duplicate, slide-2 FP = 3; FN: 900 (label non-mitotic) + slide-2 figure = 2
    assert (overall["tp"], overall["fp"], overall["fn"]) == (2, 3, 2)
    assert overall["f1"] == pytest.approx(4 / 9)
    assert scores["slides"] == 3
    groups = scores["groups"]
    assert set(groups) == {"human melanoma", "canine lymphoma"}
    assert (
        groups["human melanoma"]["tp"],
        groups["human melanoma"]["fp"],
        groups["human melanoma"]["fn"],
    ) == (2, 2, 1)
    assert (groups["canine lymphoma"]["tp"], groups["canine lymphoma"]["fp"]) == (0, 1)
    assert groups["canine lymphoma"]["images"] == 2
    assert 0 < overall["ap"] < 1
    froc = scores["froc"]
    assert [r["threshold"] for r in froc] == [0.3, 0.6, 0.7, 0.8, 0.9]
    assert froc[0]["sensitivity"] == pytest.approx(3 / 4) and froc[0]["fp_per_image"] == pytest.approx(3 / 3)


def test_threshold_option_and_radius(tmp_path, ground_truth, predictions):
    out = tmp_path / "s.json"
    # with a score threshold of 0.25 every row counts, whatever its label: the 900 candidate becomes a TP
    res = run("evaluate", "detection", predictions, ground_truth / "annotations.json", "--threshold", "0.25",
              "--json", out, "--tune-threshold")  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())
    assert (s["overall"]["tp"], s["overall"]["fp"], s["overall"]["fn"]) == (3, 3, 1)
    assert "best threshold" in res.output and "best_threshold" in s
    # a 7 µm radius (28 px) misses the prediction 29 px away
    res = run("evaluate", "detection", predictions, ground_truth, "--radius-um", "7.0", "--json", out)
    assert json.loads(out.read_text())["overall"]["tp"] == 1


def test_missing_and_extra_predictions_are_warned(tmp_path, ground_truth, predictions):
    (predictions / "003.csv").unlink()
    write_preds(predictions, "999", [(1, 1, 0.9, "mitotic figure")])
    out = tmp_path / "s.json"
    res = run("evaluate", "detection", predictions, ground_truth, "--json", out)
    assert res.exit_code == 0, res.output
    assert "no predictions for 1" in res.output and "not in the ground truth" in res.output
    s = json.loads(out.read_text())
    assert s["slides"] == 2 and s["missing_predictions"] == ["003"]


def test_slides_report_errors_per_mm2_of_tissue(tmp_path, ground_truth, predictions):
    """The slide images beside annotations.json (as `synth regions` writes them), half tissue, half glass."""
    img = np.full((2000, 2000, 3), 240, np.uint8)
    img[:1000] = (190, 90, 170)
    for name in ("001", "002"):
        write_tiled_tiff(ground_truth / f"{name}.tiff", img, mpp=0.25, tile=256, compression="deflate")
    res = run("evaluate", "detection", predictions, ground_truth, "--slides", ground_truth)
    assert res.exit_code == 1 and "error:" in res.output and "'003'" in res.output
    write_tiled_tiff(ground_truth / "003.tiff", img, mpp=0.25, tile=256, compression="deflate")
    out = tmp_path / "s.json"
    res = run("evaluate", "detection", predictions, ground_truth, "--slides", ground_truth, "--json", out)
    assert res.exit_code == 0, res.output
    tissue = json.loads(out.read_text())["tissue"]
    # 4 figures, 2 found; the point 2 px from a found figure is a duplicate; the hard negative and slide 2's
    # detection are away from every figure, on 3 × 2000 × 1000 px of 0.25 µm = 0.375 mm² of tissue
    assert (tissue["figures"], tissue["tp"], tissue["duplicates"], tissue["tissue_fp"]) == (4, 2, 1, 2)
    assert tissue["tissue_mm2"] == pytest.approx(0.375, rel=0.02)
    assert tissue["recall_low"] < 0.5 < tissue["recall_high"] and "expected_f1_at_5_high" in tissue
    line = (
        f"4 figures on {tissue['tissue_mm2']:.2f} mm² of tissue: recall 0.50 "
        f"[{tissue['recall_low']:.2f}–{tissue['recall_high']:.2f}], duplicates 0.250 per figure, "
        f"false detections away from figures {tissue['fp_per_mm2']:.1f} per mm² "
        f"[{tissue['fp_per_mm2_low']:.1f}–{tissue['fp_per_mm2_high']:.1f}]"
    )
    assert line in res.output
    assert (
        f"expected F1 at 5 / 10 figures per mm²: {tissue['expected_f1_at_5']:.2f} "
        f"[{tissue['expected_f1_at_5_low']:.2f}–{tissue['expected_f1_at_5_high']:.2f}] / "
        f"{tissue['expected_f1_at_10']:.2f}" in res.output
    )
    res = run("evaluate", "detection", predictions, ground_truth, "--json", out)
    assert "tissue" not in res.output and "tissue" not in json.loads(out.read_text())


def test_detect_outputs_evaluate_end_to_end(tmp_path):
    """Predictions as `mitoscope detect` writes them (done markers carry the mpp) at 0.5 µm/px."""
    from mitoscope.inference.outputs import write_detection_outputs, write_done_marker

    images = [{"file_name": "s.tiff", "id": 1, "width": 500, "height": 500}]
    write_midogpp_json(
        tmp_path / "gt.json", images, [{"image_id": 1, "x": 100, "y": 100, "label": "mitotic figure"}]
    )
    dets = pd.DataFrame({"x": [120.0], "y": [100.0], "score": [0.9], "label": ["mitotic figure"]})
    written = write_detection_outputs(tmp_path / "pred", "s", dets, mpp=0.5, formats=("csv",))
    write_done_marker(tmp_path / "pred", "s", written, {"mpp": 0.5})
    out = tmp_path / "s.json"
    res = run("evaluate", "detection", tmp_path / "pred", tmp_path / "gt.json", "--json", out)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["overall"]["tp"] == 0  # 20 px = 10 µm at 0.5 µm/px: a miss
    res = run(
        "evaluate", "detection", tmp_path / "pred", tmp_path / "gt.json", "--json", out, "--mpp", "0.25"
    )
    assert json.loads(out.read_text())["overall"]["tp"] == 1  # 20 px = 5 µm at 0.25 µm/px: a hit


def test_errors_are_one_line(tmp_path, ground_truth):
    res = run("evaluate", "detection", tmp_path / "nothing", ground_truth)
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "x.csv").write_text("a,b\n1,2\n")
    res = run("evaluate", "detection", tmp_path / "pred", ground_truth)
    assert res.exit_code == 1 and "x.csv" in res.output
    res = run("evaluate", "detection", tmp_path / "pred", ground_truth, "--by", "colour")
    assert res.exit_code == 1 and "--by" in res.output


@pytest.mark.slow
def test_real_midogpp_json_reads_and_scores_itself(shared_data, tmp_path):
    """Predicting the ground truth itself gives F1 = 1 on the real MIDOG++ database (first 5 slides)."""
    from mitoscope.io.midogpp import read_midogpp_json

    cat = read_midogpp_json(shared_data / "annotations" / "MIDOG++.json")
    slides = sorted(cat["slide"].unique())[:5]
    folder = tmp_path / "pred"
    n = 0
    for s in slides:
        rows = cat[(cat["slide"] == s) & (cat["label"] == "mitotic figure")]
        n += len(rows)
        write_preds(
            folder, s.rsplit(".", 1)[0], [(r.x, r.y, 0.9, "mitotic figure") for r in rows.itertuples()]
        )
    out = tmp_path / "s.json"
    res = run("evaluate", "detection", folder, shared_data / "annotations" / "MIDOG++.json", "--json", out,
              "--by", "tumor")  # fmt: skip
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())
    assert s["slides"] == 5 and s["overall"]["tp"] == n and s["overall"]["f1"] == 1.0
    assert s["overall"]["ap"] == pytest.approx(1.0)
