"""``mitoscope analyze`` / ``report`` end to end with tiny real models (checkpoints made here).

The stand-in models follow the real contracts: the detector is a torchvision-style detection module that finds
dark blobs; the classifier returns {"logits", "prob"} with P(atypical) high for red figures and low for blue ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from torch import nn
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.io.tiff_writer import write_tiled_tiff
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.models.registry import register_model

ROOT = Path(__file__).resolve().parents[2]
DETECTOR_NAME = "_test_e_dark_blob_detector"
CLASSIFIER_NAME = "_test_e_red_classifier"


class DarkBlobDetector(nn.Module):
    """Detects dark blobs (mean intensity < 0.3) and returns 50×50 boxes around their centres."""

    def __init__(self) -> None:
        super().__init__()
        self.level = nn.Parameter(torch.tensor(0.3))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for img in images:
            dark = (img.mean(0) < self.level).cpu().numpy()
            lab, n = ndimage.label(dark)
            centres = ndimage.center_of_mass(dark, lab, range(1, n + 1)) if n else []
            boxes = [[x - 25, y - 25, x + 25, y + 25] for y, x in centres]
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.full((len(boxes),), 0.9),
                    "labels": torch.ones(len(boxes), dtype=torch.int64),
                }
            )
        return out


class RedClassifier(nn.Module):
    """P(atypical) = sigmoid(k · (mean red − mean blue)) of the [0, 1] crop."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.k * (x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2)))
        return {"logits": logits, "prob": torch.sigmoid(logits)}


for _name, _cls in ((DETECTOR_NAME, DarkBlobDetector), (CLASSIFIER_NAME, RedClassifier)):
    with contextlib.suppress(ValueError):  # already registered (module imported twice)
        register_model(_name)(lambda _c=_cls: _c())


def make_models(tmp_path: Path, *, classifier_mpp: float = 0.25) -> tuple[Path, Path]:
    det = save_checkpoint(
        tmp_path / "detector.pt",
        DarkBlobDetector(),
        ModelContract(DETECTOR_NAME, {}, "detection", input_size=256, mpp=0.25, thresholds={"default": 0.5}),
    )
    contract = ModelContract(
        CLASSIFIER_NAME, {}, "classification", input_size=32, mpp=classifier_mpp,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), thresholds={"default": 0.5},
    )  # fmt: skip
    clf = save_checkpoint(tmp_path / "classifier.pt", RedClassifier(), contract)
    return det, clf


# Figures on a 900×700 px region: red = atypical, blue = normal.
FIGS = [(150, 150, "atypical"), (400, 200, "normal"), (650, 500, "atypical"), (300, 550, "normal"),
        (800, 120, "normal")]  # fmt: skip


def make_slide(path: Path, n_figs: int = len(FIGS), mpp: float = 0.25) -> Path:
    rng = np.random.default_rng(len(path.name) + n_figs)
    img = np.empty((700, 900, 3), np.uint8)
    img[...] = (220, 165, 220)  # red == blue: only the figures tilt the stand-in classifier
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    for x, y, kind in FIGS[:n_figs]:
        img[y - 9 : y + 9, x - 9 : x + 9] = (160, 10, 20) if kind == "atypical" else (20, 10, 160)
    return write_tiled_tiff(path, img, mpp=mpp, tile=256, compression="none")


runner = CliRunner()


def invoke(args: list[str]):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_analyze_end_to_end_with_missing_slide_and_resume(tmp_path) -> None:
    det, clf = make_models(tmp_path)
    s1, s2 = make_slide(tmp_path / "s1.tif"), make_slide(tmp_path / "s2.tif", n_figs=3)
    out = tmp_path / "out"
    args = ["analyze", s1, tmp_path / "missing.tif", s2, "-d", det, "-c", clf, "--out", out,
            "--device", "cpu", "--workers", "0", "--set", "progress=false", "--report"]  # fmt: skip
    res = invoke(args)
    assert res.exit_code == 1, res.output
    assert "missing" in res.output and "not found" in res.output
    table = pd.read_csv(out / "cohort.csv")
    assert table["slide"].tolist() == ["s1", "missing", "s2"]
    assert table["status"].tolist() == ["ok", "failed", "ok"]
    assert table["mitotic_count"].tolist()[::2] == [5, 3]
    assert table["atypical_count"].tolist()[::2] == [2, 2]
    assert table["normal_count"].tolist()[::2] == [3, 1]
    assert table.loc[0, "atypical_fraction"] == pytest.approx(0.4)
    assert table.loc[0, "detection_threshold"] == 0.5 and table.loc[0, "atypical_threshold"] == 0.5
    assert table.loc[0, "tissue_area_mm2"] > 0
    figs = pd.read_csv(out / "slides" / "s1" / "s1.csv")
    assert {"x", "y", "x_mm", "y_mm", "score", "p_atypical", "class"} <= set(figs.columns)
    found = sorted(zip(figs["x"].round(), figs["y"].round(), figs["class"], strict=True))
    assert found == sorted((float(x), float(y), k) for x, y, k in FIGS)
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["settings"]["detector"]["path"] == str(det.resolve())
    assert "torch" in meta["versions"]
    assert (out / "report" / "index.html").is_file() and (out / "report" / "s1.html").is_file()

    # Second run without the missing slide: everything is resumed, exit 0.
    stamp = (out / "slides" / "s1" / "summary.json").stat().st_mtime_ns
    res = invoke([a for a in args if a != tmp_path / "missing.tif"])
    assert res.exit_code == 0, res.output
    assert res.output.count("already done") == 2
    assert (out / "slides" / "s1" / "summary.json").stat().st_mtime_ns == stamp
    assert pd.read_csv(out / "cohort.csv")["slide"].tolist() == ["s1", "s2"]

    # The report command rebuilds the report from the directory alone.
    res = invoke(["report", out, "--out", tmp_path / "rep"])
    assert res.exit_code == 0 and (tmp_path / "rep" / "s2.html").is_file()


def test_classifier_at_other_mpp_reads_resampled_crops(tmp_path) -> None:
    det, clf = make_models(tmp_path, classifier_mpp=0.5)
    s1 = make_slide(tmp_path / "s1.tif")
    res = invoke(["analyze", s1, "-d", det, "-c", clf, "--out", tmp_path / "out", "--device", "cpu",
                  "--workers", "0", "--set", "progress=false", "--set", "hpf_area_mm2=0.01"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "classifier at 0.5 µm/px" in res.output and "resampled" in res.output
    summary = json.loads((tmp_path / "out" / "slides" / "s1" / "summary.json").read_text())
    assert summary["classifier_mpp"] == 0.5 and summary["atypical_count"] == 2
    # 400×400 px window: (400, 200), (650, 500) and (300, 550) fit in it together, no other triple does.
    assert summary["hotspot_area_mm2"] == 0.01 and summary["hotspot_count"] == 3


def test_bad_model_path_is_one_clear_line(tmp_path) -> None:
    _, clf = make_models(tmp_path)
    s1 = make_slide(tmp_path / "s1.tif")
    res = invoke(["analyze", s1, "-d", tmp_path / "nope.pt", "-c", clf, "--out", tmp_path / "out"])
    assert res.exit_code == 2
    assert "nope.pt" in res.output and "Traceback" not in res.output


def test_bundled_models_by_default_and_an_unknown_name(tmp_path) -> None:
    from mitoscope.demo import region_files
    from mitoscope.demo_bundled import sample_paths

    mosaic = region_files(sample_paths()["regions"])[0]
    res = invoke(
        [
            "analyze",
            mosaic,
            "--out",
            tmp_path / "out",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--set",
            "progress=false",
        ]
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert meta["settings"]["detector"]["bundled"] == "mitoscope-detector"
    assert len(meta["settings"]["detector"]["sha256"]) == 64
    assert meta["settings"]["classifier"]["bundled"] == "mitoscope-classifier"
    assert pd.read_csv(tmp_path / "out" / "cohort.csv")["status"].tolist() == ["ok"]
    res = invoke(["analyze", mosaic, "-d", "no-such-model", "--out", tmp_path / "out2"])
    assert res.exit_code == 2 and "bundled models: mitoscope-classifier" in res.output


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {test_dir!r})
    import test_analyze_cli  # registers the stand-in models
    from mitoscope.cli.main import app
    sys.argv = ["mitoscope", *{args!r}]
    app()
    """
)


@pytest.mark.slow
def test_analyze_under_torchrun_two_processes(tmp_path) -> None:
    det, clf = make_models(tmp_path)
    slides = [make_slide(tmp_path / f"s{k}.tif", n_figs=k + 1) for k in range(4)]
    out = tmp_path / "out"
    args = ["analyze", *map(str, slides), str(tmp_path / "gone.tif"), "-d", str(det), "-c", str(clf),
            "--out", str(out), "--device", "cpu", "--workers", "0", "--set", "progress=false"]  # fmt: skip
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(test_dir=str(Path(__file__).parent), args=args))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]  # the missing slide fails the run...
    assert "rank 0" in text and "rank 1" in text
    table = pd.read_csv(out / "cohort.csv")  # ...after rank 0 merged every rank's slides
    assert table["slide"].tolist() == ["s0", "s1", "s2", "s3", "gone"]
    assert table["mitotic_count"].tolist()[:4] == [1, 2, 3, 4]
    assert table["status"].tolist()[-1] == "failed"
