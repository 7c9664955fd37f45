"""``mitoscope challenge``: Track 1 / Track 2 entry points on folders laid out as grand-challenge mounts ``/input``,
then ``challenge score`` on their outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.io.challenge import TRACK1, TRACK2, validate_track1_output, validate_track2_output
from mitoscope.io.tiff_writer import write_tiled_tiff

from .test_classify_cli import _save as save_tiny_classifier
from .test_detect_cli import BLOBS, paint, save_blob_checkpoint

runner = CliRunner()
# lighter blobs: detected by the blob model with a score below its 0.7 threshold ("non-mitotic figure")
FAINT = [(330.0, 60.0), (60.0, 250.0)]


def inputs_json(slug: str, name: str, rel: str) -> str:
    """An ``inputs.json`` as in the reference containers' test folders."""
    socket = {
        "file": None,
        "image": {"name": name},
        "value": None,
        "interface": {"slug": slug, "kind": "Image", "super_kind": "Image", "relative_path": rel},
    }
    return json.dumps([socket], indent=4)


def track1_input(root: Path, name: str = "007.tiff", *, mpp: float | None = 0.25) -> Path:
    root.mkdir(parents=True)
    (root / "inputs.json").write_text(inputs_json(TRACK1.input_slug, name, TRACK1.image_folder))
    rgb = paint((380, 400), BLOBS + FAINT, values=[40] * len(BLOBS) + [80] * len(FAINT))
    path = root / TRACK1.image_folder / name
    path.parent.mkdir(parents=True)
    if mpp is None:
        tifffile.imwrite(path, rgb, photometric="rgb")
    else:
        write_tiled_tiff(path, rgb, mpp=mpp, tile=128, compression="deflate")
    return root


def track2_input(root: Path, stack: Path | np.ndarray, name: str = "stack_5.tiff") -> Path:
    folder = root / TRACK2.image_folder
    folder.mkdir(parents=True)
    (root / "inputs.json").write_text(inputs_json(TRACK2.input_slug, name, TRACK2.image_folder))
    if isinstance(stack, Path):
        shutil.copy(stack, folder / name)
    else:
        tifffile.imwrite(folder / name, stack, photometric="rgb")
    return root


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_track1_writes_the_evaluator_file_and_scores(tmp_path: Path) -> None:
    ckpt = save_blob_checkpoint(tmp_path / "det.pt")
    clf = save_tiny_classifier(tmp_path / "clf.pt")
    inp = track1_input(tmp_path / "input")
    out = tmp_path / "outputs" / "007"
    res = invoke("challenge", "track1", "-i", inp, "-o", out, "--model", ckpt, "--classifier", clf,
                 "--device", "cpu", "--figures", tmp_path / "figures.csv")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "4 mitotic figures" in res.output and "2 candidates below it" in res.output
    assert [p.name for p in out.iterdir()] == [TRACK1.output_file]  # exactly one file
    validate_track1_output(out / TRACK1.output_file)
    doc = json.loads((out / TRACK1.output_file).read_text())
    assert doc["type"] == "Multiple points" and doc["version"] == {"major": 1, "minor": 0}
    names = sorted(p["name"] for p in doc["points"])
    assert names == ["mitotic figure"] * 4 + ["non-mitotic figure"] * 2
    for p in doc["points"]:
        assert set(p) == {"name", "point", "probability"} and p["point"][2] == 0
        assert (p["probability"] >= 0.7) == (p["name"] == "mitotic figure")
    got = np.array([p["point"][:2] for p in doc["points"] if p["name"] == "mitotic figure"])
    for x, y in BLOBS:  # millimetres at 0.25 µm/px
        assert np.hypot(*(got - [x * 0.25e-3, y * 0.25e-3]).T).min() < 0.5e-3
    figures = (tmp_path / "figures.csv").read_text().splitlines()
    assert "p_atypical" in figures[0] and len(figures) == 7
    # the same points as ground truth: F1 1, AP 1
    truth = {"007.tiff": {"annotations": [[x * 0.25e-3, y * 0.25e-3, 0] for x, y in BLOBS], "tumor domain": 0,
                          "roi type": "hotspot"}}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    res = invoke(
        "challenge", "score", tmp_path / "outputs", tmp_path / "gt.json", "--out", tmp_path / "m.json"
    )
    assert res.exit_code == 0, res.output
    agg = json.loads((tmp_path / "m.json").read_text())["aggregates"]
    assert agg["f1_score"] == pytest.approx(1.0) and agg["AP"] == pytest.approx(1.0)
    assert agg["tumor_0_f1"] == pytest.approx(1.0) and "roi_type_hotspot_froc_auc" in agg


def test_track1_needs_a_resolution_or_mpp(tmp_path: Path) -> None:
    ckpt = save_blob_checkpoint(tmp_path / "det.pt")
    inp = track1_input(tmp_path / "input", mpp=None)
    out = tmp_path / "output"
    res = invoke("challenge", "track1", "-i", inp, "-o", out, "--model", ckpt, "--device", "cpu")
    assert res.exit_code == 1
    assert "millimetres" in res.output and "--mpp" in res.output
    assert not out.exists() or not any(out.iterdir())
    res = invoke(
        "challenge", "track1", "-i", inp, "-o", out, "--model", ckpt, "--device", "cpu", "--mpp", "0.25"
    )
    assert res.exit_code == 0, res.output
    validate_track1_output(out / TRACK1.output_file)


def test_track1_real_region_tiff(tmp_path: Path, shared_data: Path) -> None:
    """The real SVS region (a TIFF, 0.499 µm/px) behind the Track 1 interface; coarse tiles keep it quick."""
    from mitoscope.models.checkpoint import ModelContract, save_checkpoint

    from .test_detect_cli import BLOB_MODEL, BlobDetector

    contract = ModelContract(BLOB_MODEL, {}, "detection", input_size=1024, mpp=2.0,
                             class_names=("mitotic figure",), thresholds={"default": 0.8})  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "det.pt", BlobDetector(), contract)
    inp = tmp_path / "input"
    (inp / TRACK1.image_folder).mkdir(parents=True)
    shutil.copy(shared_data / "slides" / "cmu_small_region.svs", inp / TRACK1.image_folder / "cmu.tiff")
    out = tmp_path / "output"  # no inputs.json: the known folder
    res = invoke("challenge", "track1", "-i", inp, "-o", out, "--model", ckpt, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "0.499 µm/px" in res.output
    validate_track1_output(out / TRACK1.output_file)
    points = json.loads((out / TRACK1.output_file).read_text())["points"]
    assert all(
        0 <= p["point"][0] <= 2220 * 0.499e-3 and 0 <= p["point"][1] <= 2967 * 0.499e-3 for p in points
    )


def test_track2_real_stack_then_score(tmp_path: Path, shared_data: Path) -> None:
    clf = save_tiny_classifier(tmp_path / "clf.pt")
    inp = track2_input(tmp_path / "input", shared_data / "slides" / "midog25_track2_stack_5.tiff")
    out = tmp_path / "outputs" / "stack_5"
    res = invoke(
        "challenge", "track2", "-i", inp, "-o", out, "-m", clf, "--device", "cpu", "--threshold", "0.5"
    )
    assert res.exit_code == 0, res.output
    assert "16 pages" in res.output
    path = out / TRACK2.output_file
    validate_track2_output(path)
    records = json.loads(path.read_text())
    assert len(records) == 16 and all(set(r) == {"class", "confidence"} for r in records)
    assert [r["class"] for r in records] == [
        "atypical" if r["confidence"] >= 0.5 else "normal" for r in records
    ]
    labels = ["atypical" if i % 4 == 0 else "normal" for i in range(16)]
    truth = [{"image": "stack_5.tiff", "labels": labels, "tumordomains": [1] * 8 + [6] * 8}]
    (tmp_path / "gt.json").write_text(json.dumps(truth))
    res = invoke(
        "challenge", "score", tmp_path / "outputs", tmp_path / "gt.json", "--out", tmp_path / "m.json"
    )
    assert res.exit_code == 0, res.output
    agg = json.loads((tmp_path / "m.json").read_text())["aggregates"]
    assert set(agg) >= {"overall_balanced_accuracy", "overall_roc_auc", "domain_1", "domain_6"}
    assert "overall_balanced_accuracy" in res.output


@pytest.mark.parametrize(
    "case", ["no_input", "two_images", "wrong_page_size", "other_track", "unknown_model"]
)
def test_track2_bad_input_is_one_error_and_no_output(tmp_path: Path, case: str) -> None:
    clf = save_tiny_classifier(tmp_path / "clf.pt")
    pages = np.random.default_rng(0).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    inp = tmp_path / "input"
    model: list[object] = ["--model", clf]
    if case == "no_input":
        inp.mkdir()
        message = "no image folder"
    elif case == "two_images":
        track2_input(inp, pages)
        tifffile.imwrite(inp / TRACK2.image_folder / "b.tiff", pages, photometric="rgb")
        message = "2 images"
    elif case == "wrong_page_size":
        track2_input(inp, np.concatenate([pages, np.zeros((1, 128, 128, 3), np.uint8)])[:, :, :96])
        message = "page 0 is 96×128 px"
    elif case == "other_track":
        track1_input(inp)
        message = "no input socket"
    else:
        track2_input(inp, pages)
        model = ["--model", "not-a-bundled-model"]
        message = "no bundled model named 'not-a-bundled-model'"
    out = tmp_path / "output"
    res = invoke("challenge", "track2", "-i", inp, "-o", out, "--device", "cpu", *model)
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (out / TRACK2.output_file).exists()


def test_score_rejects_outputs_the_evaluator_rejects(tmp_path: Path) -> None:
    (tmp_path / "outs" / "007").mkdir(parents=True)
    pixel_points = {"points": [{"name": "mitotic figure", "point": [812.0, 40.0, 0], "probability": 0.9}]}
    (tmp_path / "outs" / "007" / TRACK1.output_file).write_text(json.dumps(pixel_points))
    (tmp_path / "gt.json").write_text(json.dumps({"007.tiff": {"annotations": [], "tumor domain": 0}}))
    res = invoke("challenge", "score", tmp_path / "outs", tmp_path / "gt.json")
    assert res.exit_code == 1 and "millimetres" in res.output
    (tmp_path / "gt.json").write_text(json.dumps({"008.tiff": {"annotations": [], "tumor domain": 0}}))
    res = invoke("challenge", "score", tmp_path / "outs", tmp_path / "gt.json")
    assert res.exit_code == 1 and "no ground truth" in res.output
