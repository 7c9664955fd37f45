"""The evaluation library behind ``mitoscope evaluate``: detection outputs and classification CSVs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
from mitoscope.inference.evaluate import (
    chosen_threshold,
    evaluate_classification,
    evaluate_detections,
    find_gt_json,
    read_predictions,
)
from mitoscope.io.midogpp import read_midogpp_json, write_midogpp_json
from mitoscope.io.slides import open_slide
from mitoscope.io.tiff_writer import write_tiled_tiff
from mitoscope.metrics.detection import tissue_errors
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable


def _ground_truth(folder: Path) -> Path:
    images = [{"file_name": "001.tiff", "id": 1, "tumor_type": "melanoma"},
              {"file_name": "002.ome.tiff", "id": 2, "tumor_type": "lymphoma"}]  # fmt: skip
    anns = [{"image_id": 1, "x": 100, "y": 100, "label": "mitotic figure"},
            {"image_id": 1, "x": 900, "y": 900, "label": "mitotic figure"},
            {"image_id": 2, "x": 300, "y": 300, "label": "mitotic figure"}]  # fmt: skip
    return write_midogpp_json(folder / "annotations.json", images, anns)


def _detections(folder: Path, name: str, rows: list[tuple[float, float, float, str]], mpp: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["x", "y", "score", "label"])
    frame["x_mm"], frame["y_mm"] = frame["x"] * mpp / 1000, frame["y"] * mpp / 1000
    frame.to_csv(folder / f"{name}.csv", index=False)


def test_detection_scores_groups_and_mpp_from_the_outputs(tmp_path: Path) -> None:
    gt = _ground_truth(tmp_path / "gt")
    pred = tmp_path / "pred"
    # at 0.5 µm/px a point 14 px away is 7 µm away: a hit
    _detections(pred, "001", [(114, 100, 0.9, "mitotic figure"), (500, 500, 0.4, "non-mitotic figure")], 0.5)
    _detections(pred, "002", [(300, 300, 0.8, "mitotic figure")], 0.5)
    tables, mpps = read_predictions(pred)
    assert sorted(tables) == ["001", "002"] and mpps == {"001": 0.5, "002": 0.5}
    result = evaluate_detections(pred, tmp_path / "gt", by="tumor", tune_threshold=True)
    assert (result["overall"]["tp"], result["overall"]["fp"], result["overall"]["fn"]) == (2, 0, 1)
    assert set(result["groups"]) == {"melanoma", "lymphoma"} and result["ground_truth"] == str(gt)
    assert result["best_threshold"]["f1"] == pytest.approx(0.8) and not result["notes"]
    # a threshold re-decides every candidate; an explicit mpp overrides the outputs'
    assert evaluate_detections(pred, gt, threshold=0.3)["overall"]["fp"] == 1
    assert evaluate_detections(pred, gt, mpp=1.0)["overall"]["tp"] == 1


def test_detection_errors_and_notes(tmp_path: Path) -> None:
    gt = _ground_truth(tmp_path / "gt")
    pred = tmp_path / "pred"
    _detections(pred, "001", [(100, 100, 0.9, "mitotic figure")], 0.25)
    (pred / "001.csv").write_text("x,y,score,label\n100,100,0.9,mitotic figure\n")  # no mm columns: no mpp
    result = evaluate_detections(pred, gt)
    assert result["missing_predictions"] == ["002"] and len(result["notes"]) == 2
    with pytest.raises(ValueError, match="--by"):
        evaluate_detections(pred, gt, by="colour")
    with pytest.raises(InputError, match="not found"):
        find_gt_json(tmp_path / "nowhere")
    _detections(tmp_path / "other", "777", [(1, 1, 0.9, "mitotic figure")], 0.25)
    with pytest.raises(ValueError, match="no predicted slide matches"):
        evaluate_detections(tmp_path / "other", gt)


def _slide(path: Path, tissue_rows: int, mpp: float) -> Path:
    """A 1024 px square slide whose first ``tissue_rows`` rows are stained tissue, the rest glass."""
    img = np.full((1024, 1024, 3), 240, np.uint8)
    img[:tissue_rows] = (190, 90, 170)
    return write_tiled_tiff(path, img, mpp=mpp, tile=256, compression="deflate")


def test_detection_errors_per_mm2_of_tissue(tmp_path: Path) -> None:
    gt = _ground_truth(tmp_path / "gt")
    pred = tmp_path / "pred"
    mf = "mitotic figure"
    # slide 001 at 0.5 µm/px: a hit, a second point 5 µm from the same figure (a duplicate), one far from any
    _detections(pred, "001", [(114, 100, 0.9, mf), (100, 110, 0.8, mf), (500, 500, 0.7, mf)], 0.5)
    _detections(pred, "002", [(300, 300, 0.8, mf)], 0.5)
    # 001.tiff as named in the ground truth; 002.ome.tiff found by its slide name
    _slide(gt.parent / "001.tiff", 512, 0.5)
    _slide(gt.parent / "002.tiff", 256, 0.5)
    result = evaluate_detections(pred, gt, slides=gt.parent)
    tissue = result["tissue"]
    assert (tissue["figures"], tissue["tp"], tissue["duplicates"], tissue["tissue_fp"]) == (3, 2, 1, 1)
    # 1024 × (512 + 256) px of 0.5 µm
    assert tissue["tissue_mm2"] == pytest.approx(1024 * 768 * 0.25e-6, rel=0.02)
    catalog = read_midogpp_json(gt)
    per_image = {k: (read_predictions(pred)[0][k], catalog[catalog["slide"] == f]) for k, f in
                 (("001", "001.tiff"), ("002", "002.ome.tiff"))}  # fmt: skip
    areas = {}
    for k, f in (("001", "001.tiff"), ("002", "002.tiff")):
        with open_slide(gt.parent / f) as slide:
            areas[k] = tissue_area_mm2(*slide_tissue_mask(slide))
    direct = tissue_errors(per_image, areas_mm2=areas, mpp=0.5, threshold=None, radius_um=7.5)
    assert tissue == direct.to_dict((5.0, 10.0)) and "expected_f1_at_10_low" in tissue
    json.dumps(to_jsonable(result))
    # the threshold and the radius reach the tissue errors too...
    tissue = evaluate_detections(pred, gt, slides=gt.parent, threshold=0.75)["tissue"]
    assert (tissue["tp"], tissue["duplicates"], tissue["tissue_fp"]) == (2, 1, 0)
    assert evaluate_detections(pred, gt, slides=gt.parent, radius_um=2.0)["tissue"]["tp"] == 1
    # and the mpp: at 1 µm/px slide 001's figure is missed, 10 µm away is a duplicate, 14 µm away is not
    tissue = evaluate_detections(pred, gt, slides=gt.parent, mpp=1.0)["tissue"]
    assert (tissue["tp"], tissue["duplicates"], tissue["tissue_fp"]) == (1, 1, 2)
    assert "tissue" not in evaluate_detections(pred, gt)


def test_detection_mpp_from_the_slides_when_the_outputs_lack_it(tmp_path: Path) -> None:
    gt = _ground_truth(tmp_path / "gt")
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "001.csv").write_text(
        "x,y,score,label\n114,100,0.9,mitotic figure\n"
    )  # no mm columns, no .done.json
    (pred / "002.csv").write_text("x,y,score,label\n")  # no detections at all
    _slide(gt.parent / "001.tiff", 512, 1.0)
    _slide(gt.parent / "002.tiff", 256, 1.0)
    result = evaluate_detections(pred, gt, slides=gt.parent)
    assert not any("assuming 0.25" in note for note in result["notes"])
    # at the slides' 1 µm/px the point is 14 µm from slide 001's figure: no hit (at 0.25 µm/px it would be one)
    assert result["tissue"]["tp"] == 0 and result["tissue"]["figures"] == 3
    assert evaluate_detections(pred, gt, slides=gt.parent, mpp=0.25)["tissue"]["tp"] == 1


def test_detection_slide_folder_errors(tmp_path: Path) -> None:
    gt = _ground_truth(tmp_path / "gt")
    pred = tmp_path / "pred"
    _detections(pred, "001", [(100, 100, 0.9, "mitotic figure")], 0.5)
    _detections(pred, "002", [(300, 300, 0.9, "mitotic figure")], 0.5)
    _slide(gt.parent / "001.tiff", 512, 0.5)
    with pytest.raises(InputError, match=r"no image of slide '002' \(002\.ome\.tiff\)") as caught:
        evaluate_detections(pred, gt, slides=gt.parent)
    assert str(gt.parent) in str(caught.value)
    _slide(gt.parent / "002.svs", 256, 0.5)
    _slide(gt.parent / "002.tif", 256, 0.5)
    with pytest.raises(InputError, match=r"several images \(002\.svs, 002\.tif\) of slide '002'"):
        evaluate_detections(pred, gt, slides=gt.parent)
    with pytest.raises(InputError, match="slide folder not found"):
        evaluate_detections(pred, gt, slides=tmp_path / "nowhere")


def _labelled(root: Path) -> Path:
    rows = []
    for i in range(6):
        cls = "Atypical" if i < 3 else "Normal"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / cls / f"{i}.png")
        rows.append(
            {"Filename": f"{i}.png", "Expert_1": cls, "Expert_2": cls, "Expert_3": cls, "Majority": cls}
        )
    pd.DataFrame(rows).to_csv(root / "expert_votes.csv", index=False)
    return root / "expert_votes.csv"


def test_classification_report_threshold_and_experts(tmp_path: Path) -> None:
    truth = _labelled(tmp_path / "data")
    probs = [0.9, 0.6, 0.45, 0.4, 0.2, 0.1]
    files = [f"{'Atypical' if i < 3 else 'Normal'}/{i}.png" for i in range(6)]
    labels = ["atypical" if p >= 0.5 else "normal" for p in probs]
    csv = tmp_path / "pred.csv"
    pd.DataFrame({"file": files, "p_atypical": probs, "label": labels}).to_csv(csv, index=False)
    result = evaluate_classification(csv, truth, bootstrap=0, choose_threshold=True, experts=True)
    report = result.report
    assert report["n"] == 6 and report["balanced_accuracy"] == pytest.approx(5 / 6)
    assert report["n_unmatched_predictions"] == 0 and report["n_truth_without_prediction"] == 0
    assert report["chosen_threshold"]["balanced_accuracy"] == 1.0
    assert "model" in report["expert_agreement"]["models"]
    json.dumps(to_jsonable(report))
    assert (
        evaluate_classification(csv, truth, bootstrap=0, threshold=0.25).report["decision"]
        == "p_atypical >= 0.25"
    )
    with pytest.raises(ValueError, match="--by"):
        evaluate_classification(csv, truth, by="colour")
    with pytest.raises(ValueError, match="both atypical and normal"):
        chosen_threshold(np.array([1, 1]), np.array([0.2, 0.9]))
