"""``mitoscope detect`` end to end on small regions with a dark-blob test detector."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from torch import nn
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.models.registry import list_models, register_model

BLOB_MODEL = "test_blob_detector"
BLOBS = [(40.0, 40.0), (200.0, 70.0), (310.0, 300.0), (100.0, 330.0)]


class BlobDetector(nn.Module):
    """Boxes around dark connected regions (grey < 0.35); score = darkness. Same contract as the RetinaNet."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for img in images:
            grey = img.mean(0).numpy()
            labels, _ = ndimage.label(grey < 0.35)
            boxes, scores = [], []
            for k, sl in enumerate(ndimage.find_objects(labels), start=1):
                region = labels[sl] == k
                if region.sum() >= 9:
                    boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
                    scores.append(1.0 - float(grey[sl][region].mean()))
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(scores, dtype=torch.float32),
                    "labels": torch.ones(len(scores), dtype=torch.int64),
                }
            )
        return out


if BLOB_MODEL not in list_models():

    @register_model(BLOB_MODEL)
    def _blob(*, level: float = 0.35, min_area: int = 9) -> nn.Module:
        return BlobDetector()


def paint(shape, blobs, radius=6.0, values=None) -> np.ndarray:
    h, w = shape
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (225, 160, 205)
    yy, xx = np.mgrid[0:h, 0:w]
    for i, (x, y) in enumerate(blobs):
        img[(xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= radius**2] = 40 if values is None else values[i]
    return img


def save_blob_checkpoint(path):
    """A detector checkpoint of the blob model (128 px tiles at 0.25 µm/px, threshold 0.7)."""
    contract = ModelContract(
        BLOB_MODEL, {}, "detection", input_size=128, mpp=0.25, class_names=("mitotic figure",),
        thresholds={"default": 0.7},
    )  # fmt: skip
    save_checkpoint(path, BlobDetector(), contract)
    return path


@pytest.fixture()
def checkpoint(tmp_path):
    return save_blob_checkpoint(tmp_path / "run" / "best.pt")


@pytest.fixture()
def slides(tmp_path):
    from mitoscope.io.tiff_writer import write_tiled_tiff

    a = write_tiled_tiff(tmp_path / "slides" / "case_a.tiff", paint((380, 400), BLOBS), mpp=0.25, tile=128,
                         compression="deflate")  # fmt: skip
    b = write_tiled_tiff(tmp_path / "slides" / "case_b.tiff", paint((300, 300), BLOBS[:1]), mpp=0.25, tile=128,
                         compression="deflate")  # fmt: skip
    return a, b


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_detect_writes_outputs_and_resumes(tmp_path, checkpoint, slides):
    out = tmp_path / "out"
    res = run("detect", "--model", checkpoint.parent, *slides, "--out", out, "--device", "cpu", "--workers", "2",
              "--batch-size", "4", "--set", "overlap=32", "--set", "reader=thread")  # fmt: skip
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "case_a.csv")
    assert list(table.columns[:8]) == ["slide", "x", "y", "x_mm", "y_mm", "score", "label", "class"]
    assert len(table) == len(BLOBS) and (table["slide"] == "case_a").all()
    got = table[["x", "y"]].to_numpy()
    for x, y in BLOBS:
        assert np.hypot(got[:, 0] - x, got[:, 1] - y).min() <= 1.0
    assert np.allclose(table["x_mm"], table["x"] * 0.25 / 1000)
    assert len(pd.read_csv(out / "case_b.csv")) == 1
    done = json.loads((out / "case_a.done.json").read_text())
    assert done["n_detections"] == 4 and done["threshold"] == 0.7 and done["mpp"] == 0.25
    assert "csv" in done["files"]
    # a second run skips finished slides and leaves their files alone
    mtime = (out / "case_a.csv").stat().st_mtime_ns
    res = run("detect", "--model", checkpoint, *slides, "--out", out, "--device", "cpu", "--workers", "0")
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output
    assert (out / "case_a.csv").stat().st_mtime_ns == mtime
    # an interrupted slide (no done marker) is redone; --no-resume redoes everything
    (out / "case_b.done.json").unlink()
    res = run("detect", "--model", checkpoint, *slides, "--out", out, "--device", "cpu", "--workers", "0", "--no-resume",
              "--threshold", "0.99")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out / "case_a.csv")) == 0


def test_a_folder_stands_for_its_slides(tmp_path, checkpoint, slides):
    out = tmp_path / "out"
    res = run(
        "detect", "--model", checkpoint, slides[0].parent, "--out", out, "--device", "cpu", "--workers", "0"
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("*.done.json")) == ["case_a.done.json", "case_b.done.json"]
    (tmp_path / "empty").mkdir()
    res = run("detect", "--model", checkpoint, tmp_path / "empty", "--out", out, "--device", "cpu")
    assert res.exit_code != 0 and "no slides given" in res.output


def test_missing_and_unreadable_slides_are_reported_and_others_continue(tmp_path, checkpoint, slides):
    bad = tmp_path / "slides" / "broken.tiff"
    bad.write_bytes(b"II*\x00 not really a tiff")
    out = tmp_path / "out"
    res = run("detect", "--model", checkpoint, tmp_path / "nope.svs", bad, slides[0], "--out", out, "--device", "cpu",
              "--workers", "0")  # fmt: skip
    assert res.exit_code == 1
    assert "nope.svs" in res.output and "broken.tiff" in res.output
    assert (out / "case_a.done.json").is_file()
    assert not (out / "broken.done.json").exists()


def test_slide_without_mpp_needs_mpp_option(tmp_path, checkpoint):
    from PIL import Image

    png = tmp_path / "region.png"
    Image.fromarray(paint((300, 300), BLOBS[:1])).save(png)
    out = tmp_path / "out"
    res = run("detect", "--model", checkpoint, png, "--out", out, "--device", "cpu", "--workers", "0", "--mpp", "0.25",
              "--set", "tissue=false")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out / "region.csv")) == 1


def test_keep_candidates_and_formats(tmp_path, checkpoint, slides):
    from mitoscope.io.tiff_writer import write_tiled_tiff

    values = [10, 10, 80, 10]  # the third blob scores about 0.69 < 0.7
    path = write_tiled_tiff(tmp_path / "c.tiff", paint((380, 400), BLOBS, values=values), mpp=0.25,
                            compression="deflate")  # fmt: skip
    out = tmp_path / "out"
    res = run("detect", "--model", checkpoint, path, "--out", out, "--device", "cpu", "--workers", "0", "--set",
              "keep_candidates=true", "--set", "formats=csv")  # fmt: skip
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "c.csv")
    assert sorted(table["label"]) == ["mitotic figure"] * 3 + ["non-mitotic figure"]
    assert not (out / "c.geojson").exists()


def test_bad_model_is_one_clear_line(tmp_path, slides):
    res = run("detect", "--model", tmp_path / "missing_run", slides[0], "--out", tmp_path / "out")
    assert res.exit_code == 1
    assert "error:" in res.output and "Traceback" not in res.output
    res = run(
        "detect",
        "--model",
        tmp_path / "missing_run",
        slides[0],
        "--out",
        tmp_path / "out",
        "--set",
        "formats=csv,xml",
    )
    assert res.exit_code == 1 and "xml" in res.output


def test_synth_regions_detect_then_evaluate(tmp_path, checkpoint):
    """`synth regions` → `detect` (dark-blob detector) → `evaluate detection`: file names and formats line up."""
    regions = tmp_path / "regions"
    res = run("synth", "regions", regions, "--n", "2", "--size", "512", "512", "--seed", "3")
    assert res.exit_code == 0, res.output
    slides = sorted(regions.glob("*.tif*"))
    assert len(slides) == 2
    out = tmp_path / "pred"
    res = run("detect", "--model", checkpoint, *slides, "--out", out, "--device", "cpu", "--workers", "0", "--threshold", "0.5",
              "--set", "keep_candidates=true", "--set", "formats=csv,midog")  # fmt: skip
    assert res.exit_code == 0, res.output
    scores = tmp_path / "scores.json"
    res = run("evaluate", "detection", out, regions, "--json", scores, "--by", "tumor")
    assert res.exit_code == 0, res.output
    s = json.loads(scores.read_text())
    assert s["slides"] == 2 and not s["missing_predictions"]
    from mitoscope.io.midogpp import read_midogpp_json

    gt = read_midogpp_json(regions / "annotations.json")
    n_figures = int((gt["label"] == "mitotic figure").sum())
    assert s["overall"]["tp"] + s["overall"]["fn"] == n_figures
    n_pred = sum(int((pd.read_csv(p)["label"] == "mitotic figure").sum()) for p in out.glob("*.csv"))
    assert s["overall"]["tp"] + s["overall"]["fp"] == n_pred


def test_bundled_detector_with_and_without_its_verification_stage(tmp_path) -> None:
    from mitoscope.demo import region_files
    from mitoscope.demo_bundled import sample_paths
    from mitoscope.models.pretrained import bundle_info

    mosaic = region_files(sample_paths()["regions"])[0]
    staged = bundle_info("mitoscope-detector")["verifier"] is not None
    for flag, verified in (("auto", staged), ("none", False), ("mitoscope-verifier", True)):
        out = tmp_path / flag
        res = run("detect", mosaic, "--out", out, "--device", "cpu", "--workers", "0", "--verifier", flag)
        assert res.exit_code == 0, res.output
        assert ("(verified at 0.25 µm/px)" in res.output) == verified, res.output
        assert (out / f"{mosaic.stem}.csv").is_file()
