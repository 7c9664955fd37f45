"""``detect_slides``: the per-slide detection runner behind ``mitoscope detect`` (a stand-in detector)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mitoscope.inference.batch import detect_slides, detection_formats


class Dots:
    """One figure at the centre of every slide; counts its calls."""

    path = "dots.pt"

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def detect(self, slide, progress=None, **options):
        self.calls.append(options)
        if progress is not None:
            progress(1, 1)
        w, h = slide.dimensions
        table = pd.DataFrame({"x": [w / 2], "y": [h / 2], "score": [0.9], "label": ["mitotic figure"]})
        table.attrs.update(tiles_processed=1, tiles_total=1, mpp=slide.mpp)
        return table


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(path)
    return path


def test_writes_outputs_resumes_and_reports_failures(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "x" / "b.png")
    broken = tmp_path / "c.png"
    broken.write_bytes(b"not an image")
    det, lines, errors, finished, ticks = Dots(), [], [], [], []
    run = detect_slides(
        det, [a, tmp_path / "gone.png", broken, b], tmp_path / "out", mpp=0.25, formats=("csv", "midog"),
        log=lines.append, error=errors.append, slide_done=finished.append,
        tile_progress=lambda name, done, total: ticks.append((name, done, total)), batch_size=4,
    )  # fmt: skip
    assert run.done == ["a", "b"] and not run.skipped
    assert [Path(p).name for p, _ in run.failed] == ["gone.png", "c.png"]
    assert len(errors) == 2 and finished == ["a", "gone", "c", "b"]
    assert ("a", 0, None) in ticks and ("a", 1, 1) in ticks
    assert det.calls == [{"batch_size": 4}, {"batch_size": 4}]
    table = pd.read_csv(tmp_path / "out" / "a.csv")
    assert table[["x", "y"]].values.tolist() == [[20.0, 10.0]] and table["x_mm"].tolist() == [0.005]
    done = json.loads((tmp_path / "out" / "a.done.json").read_text())
    assert done["n_detections"] == 1 and done["model"] == "dots.pt" and set(done["files"]) == {"csv", "midog"}
    assert any("1 mitotic figures" in line for line in lines)

    again = detect_slides(det, [a, b], tmp_path / "out", mpp=0.25, formats=("csv", "midog"))
    assert again.skipped == ["a", "b"] and len(det.calls) == 2
    redo = detect_slides(det, [a], tmp_path / "out", mpp=0.25, formats=("csv", "midog"), resume=False)
    assert redo.done == ["a"] and len(det.calls) == 3
    # a format not yet written makes the slide incomplete
    assert detect_slides(det, [a], tmp_path / "out", mpp=0.25, formats=("csv", "geojson")).done == ["a"]


def test_two_slides_with_one_output_name_fail_the_second(tmp_path: Path) -> None:
    a, a2 = _png(tmp_path / "a.png"), _png(tmp_path / "other" / "a.png")
    run = detect_slides(Dots(), [a, a2], tmp_path / "out", mpp=0.25, formats=("csv",))
    assert run.done == ["a"] and "same output name" in run.failed[0][1]


def test_detection_formats() -> None:
    assert detection_formats("csv,geojson,midog") == ("csv", "geojson", "midog")
    assert detection_formats(["midog"], sqlite=True) == ("csv", "midog", "sqlite")
    with pytest.raises(ValueError, match="xml"):
        detection_formats("csv,xml")
