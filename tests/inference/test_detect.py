"""Whole-slide detection with a small real detector that finds dark blobs (same contract as the RetinaNet)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage
from torch import nn

from mitoscope.inference.detect import (
    BELOW_THRESHOLD_LABEL,
    POSITIVE_LABEL,
    Detector,
    detect_slide,
    find_checkpoint,
    iterate_tile_batches,
    merge_by_distance,
)
from mitoscope.inference.tiling import tile_grid
from mitoscope.io.slide_base import ArraySlide, Slide
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.models.registry import list_models, register_model
from mitoscope.utils.errors import InputError

BLOB_MODEL = "test_blob_detector"


class BlobDetector(nn.Module):
    """Detects dark blobs: boxes around connected pixels darker than ``level``; score = darkness."""

    def __init__(self, level: float = 0.35, min_area: int = 9) -> None:
        super().__init__()
        self.level = level
        self.min_area = min_area
        self.calls: list[int] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for img in images:
            grey = img.mean(0).cpu().numpy()
            labels, _ = ndimage.label(grey < self.level)
            boxes, scores = [], []
            for k, sl in enumerate(ndimage.find_objects(labels), start=1):
                region = labels[sl] == k
                if region.sum() < self.min_area:
                    continue
                ys, xs = sl
                boxes.append([xs.start, ys.start, xs.stop, ys.stop])
                scores.append(1.0 - float(grey[sl][region].mean()))
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(scores, dtype=torch.float32),
                    "labels": torch.ones(len(scores), dtype=torch.int64),
                }
            )
        self.calls.append(len(images))
        return out


if BLOB_MODEL not in list_models():

    @register_model(BLOB_MODEL)
    def _blob(*, level: float = 0.35, min_area: int = 9) -> nn.Module:
        return BlobDetector(level=level, min_area=min_area)


def contract(tile: int = 128, mpp: float = 0.25, threshold: float = 0.5) -> ModelContract:
    return ModelContract(
        BLOB_MODEL, {}, "detection", input_size=tile, mpp=mpp, class_names=("mitotic figure",),
        thresholds={"default": threshold},
    )  # fmt: skip


def paint(shape, blobs, *, radius: float, mpp_scale: float = 1.0, darkness=None) -> np.ndarray:
    """Pink background with dark discs at ``blobs`` (x, y); returns uint8 RGB."""
    h, w = shape
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (225, 160, 205)
    yy, xx = np.mgrid[0:h, 0:w]
    for i, (x, y) in enumerate(blobs):
        value = 40 if darkness is None else darkness[i]
        disc = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= (radius * mpp_scale) ** 2
        img[disc] = value
    return img


BLOBS = [(40.0, 40.0), (200.0, 70.0), (310.0, 300.0), (100.0, 330.0), (355.0, 30.0)]


def _match(found: pd.DataFrame, expected, tol: float) -> None:
    got = found[["x", "y"]].to_numpy()
    assert len(got) == len(expected), found
    for x, y in expected:
        d = np.hypot(got[:, 0] - x, got[:, 1] - y)
        assert d.min() <= tol, (x, y, got)


def test_finds_every_blob_once_in_level0_px():
    slide = ArraySlide(paint((380, 400), BLOBS, radius=6), mpp=0.25)
    found = detect_slide(
        BlobDetector(), contract(), slide, overlap=32, num_workers=0, progress=False, tissue=False
    )
    _match(found, BLOBS, tol=1.0)
    assert list(found.columns) == ["x", "y", "score", "label"]
    assert (found["label"] == POSITIVE_LABEL).all()
    assert found["score"].is_monotonic_decreasing
    assert found.attrs["tiles_total"] == found.attrs["tiles_processed"] == 16
    assert found.attrs["threshold"] == 0.5


def test_blob_on_tile_border_is_found_once():
    # tiles of 128 with overlap 32: starts 0, 96, 192...; the core cut between the first two is at 112.
    # Blobs centred on the cuts lie in both tiles but are owned by one. The big blob at x = 113 is clipped by
    # both tiles: tile 0 sees x 93..128 (box centre 110.5, in its core), tile 1 sees 96..133 (centre 114.5, in
    # its core): both report it, and merging by distance keeps one.
    blobs = [(112.0, 200.0), (60.0, 112.0), (113.0, 50.0)]
    slide = ArraySlide(paint((300, 300), blobs[:2], radius=7), mpp=0.25)
    slide = ArraySlide(np.minimum(slide._array, paint((300, 300), blobs[2:], radius=20)), mpp=0.25)
    tiles = tile_grid(slide.dimensions, slide_mpp=0.25, tile_size=128, overlap=32)
    assert tiles[0].core[2] == 112 and tiles[0].core[3] == 112
    found = detect_slide(
        BlobDetector(), contract(), slide, overlap=32, num_workers=0, progress=False, tissue=False
    )
    _match(found, blobs, tol=3.0)
    # without distance merging the clipped blob would be reported by both tiles
    raw = detect_slide(
        BlobDetector(), contract(), slide, overlap=32, num_workers=0, progress=False, tissue=False,
        merge_radius_um=0.0,
    )  # fmt: skip
    assert len(raw) == len(blobs) + 1


def test_merge_by_distance_keeps_highest_score():
    xy = np.array([[0, 0], [5, 0], [30, 0], [31, 0], [100, 100]], float)
    scores = np.array([0.2, 0.9, 0.5, 0.5, 0.1])
    assert merge_by_distance(xy, scores, 10).tolist() == [1, 2, 4]
    assert merge_by_distance(np.zeros((0, 2)), np.zeros(0), 10).tolist() == []


def test_array_slide_and_tiled_tiff_give_the_same_points(tmp_path):
    from mitoscope.io.slides import open_slide
    from mitoscope.io.tiff_writer import write_tiled_tiff

    img = paint((380, 400), BLOBS, radius=6)
    path = write_tiled_tiff(tmp_path / "region.tiff", img, mpp=0.25, tile=128, compression="deflate")
    kw = dict(overlap=32, progress=False, tissue=False)
    from_array = detect_slide(BlobDetector(), contract(), ArraySlide(img, mpp=0.25), num_workers=0, **kw)
    with open_slide(path) as slide:
        processes = detect_slide(BlobDetector(), contract(), slide, num_workers=2, reader="process", **kw)
        threaded = detect_slide(BlobDetector(), contract(), slide, num_workers=2, reader="thread", **kw)
    pd.testing.assert_frame_equal(from_array, processes)
    pd.testing.assert_frame_equal(from_array, threaded)


def test_slide_at_other_mpp_is_resampled_and_points_are_in_its_own_pixels():
    # slide at 0.5 µm/px, model at 0.25 µm/px: tiles are upsampled 2×; points come back in slide px.
    blobs = [(b[0] / 2, b[1] / 2) for b in BLOBS]
    slide = ArraySlide(paint((190, 200), blobs, radius=3), mpp=0.5)
    found = detect_slide(
        BlobDetector(), contract(), slide, overlap=32, num_workers=0, progress=False, tissue=False
    )
    _match(found, blobs, tol=1.0)
    assert found.attrs["mpp"] == 0.5 and found.attrs["model_mpp"] == 0.25


class CountingSlide(ArraySlide):
    """Records the size of every read and how many reads happened."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reads: list[tuple[int, int]] = []

    def _read_level0(self, x, y, width, height, downsample):
        self.reads.append((width, height))
        return super()._read_level0(x, y, width, height, downsample)


def test_tiles_are_streamed_not_read_all_at_once():
    slide = CountingSlide(paint((600, 600), BLOBS, radius=6), mpp=0.25)
    model = BlobDetector()
    reads_at_call: list[int] = []
    original = model.forward

    def forward(images):
        reads_at_call.append(len(slide.reads))
        return original(images)

    model.forward = forward  # type: ignore[method-assign]
    detect_slide(
        model, contract(), slide, batch_size=4, overlap=32, num_workers=0, progress=False, tissue=False
    )
    n_tiles = len(tile_grid(slide.dimensions, slide_mpp=0.25, tile_size=128, overlap=32))
    assert len(slide.reads) == n_tiles == 36
    # every read is at most one tile, and the k-th forward pass happens after at most k batches were read
    assert max(w for w, _ in slide.reads) <= 128 and max(h for _, h in slide.reads) <= 128
    assert reads_at_call == [4 * (k + 1) for k in range(9)]


def test_batches_from_worker_processes_match_main_thread():
    img = paint((300, 300), BLOBS[:2], radius=6)
    slide = ArraySlide(img, mpp=0.25)
    tiles = tile_grid(slide.dimensions, slide_mpp=0.25, tile_size=128, overlap=32)
    a = list(iterate_tile_batches(slide, tiles, mpp=0.25, batch_size=3, num_workers=0))
    for reader in ("process", "thread"):
        b = list(iterate_tile_batches(slide, tiles, mpp=0.25, batch_size=3, num_workers=2, reader=reader))
        assert [i for _, i in a] == [i for _, i in b]
        for (xa, _), (xb, _) in zip(a, b, strict=True):
            assert torch.equal(xa, xb)
    with pytest.raises(ValueError, match="reader"):
        list(iterate_tile_batches(slide, tiles, mpp=0.25, num_workers=1, reader="fibre"))
    t = tiles[4]
    assert torch.equal(
        a[1][0][1],
        torch.from_numpy(img[t.level0_y : t.level0_y + 128, t.level0_x : t.level0_x + 128]).permute(2, 0, 1),
    )


def test_threshold_from_contract_override_and_keep_below():
    darkness = [10, 60, 80, 10, 10]  # scores ≈ 0.96, 0.76, 0.69 (the background is not dark)
    slide = ArraySlide(paint((380, 400), BLOBS, radius=6, darkness=darkness), mpp=0.25)
    kw = dict(overlap=32, num_workers=0, progress=False, tissue=False)
    default = detect_slide(BlobDetector(), contract(threshold=0.7), slide, **kw)
    assert len(default) == 4
    strict = detect_slide(BlobDetector(), contract(threshold=0.7), slide, threshold=0.9, **kw)
    assert len(strict) == 3
    all_candidates = detect_slide(
        BlobDetector(), contract(threshold=0.7), slide, keep_below_threshold=True, **kw
    )
    assert len(all_candidates) == 5
    assert (all_candidates["label"] == BELOW_THRESHOLD_LABEL).sum() == 1
    assert all_candidates.loc[all_candidates["score"] < 0.7, "label"].eq(BELOW_THRESHOLD_LABEL).all()


class GlassSlide(Slide):
    """A large slide that is white glass except one block of tissue; counts reads."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def dimensions(self):
        return (4096, 4096)

    @property
    def mpp(self):
        return 0.25

    def _read_level0(self, x, y, width, height, downsample):
        self.reads += 1
        step = max(1, int(downsample))
        yy, xx = np.mgrid[y : y + height : step, x : x + width : step]
        img = np.full((*yy.shape, 3), 240, np.uint8)
        tissue = (xx >= 1024) & (xx < 1536) & (yy >= 2048) & (yy < 2560)
        img[tissue] = (225, 160, 205)
        blob = (xx - 1300) ** 2 + (yy - 2300) ** 2 <= 36
        img[blob] = 40
        return img


def test_tissue_mask_skips_glass_tiles():
    slide = GlassSlide()
    found = detect_slide(BlobDetector(), contract(tile=256), slide, overlap=32, num_workers=0, progress=False)
    assert found.attrs["tiles_processed"] < 0.1 * found.attrs["tiles_total"]
    _match(found, [(1300.5, 2300.5)], tol=1.5)


def test_progress_callback_counts_tiles():
    slide = ArraySlide(paint((300, 300), BLOBS[:1], radius=6), mpp=0.25)
    seen = []
    detect_slide(
        BlobDetector(), contract(), slide, overlap=32, num_workers=0, tissue=False, batch_size=5,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert seen == [(0, 9), (5, 9), (9, 9)]


def test_detector_from_checkpoint_and_run_dir(tmp_path):
    c = contract(threshold=0.6)
    save_checkpoint(tmp_path / "run" / "best.pt", BlobDetector(), c)
    det = Detector.from_path(tmp_path / "run", device="cpu")
    assert det.threshold == 0.6 and det.tile_size == 128
    slide = ArraySlide(paint((380, 400), BLOBS, radius=6), mpp=0.25)
    found = det.detect(slide, overlap=32, num_workers=0, progress=False, tissue=False)
    _match(found, BLOBS, tol=1.0)
    assert find_checkpoint(tmp_path / "run" / "best.pt") == tmp_path / "run" / "best.pt"
    with pytest.raises(InputError, match="no checkpoint"):
        find_checkpoint(tmp_path)
    cls_contract = ModelContract(BLOB_MODEL, {}, "classification", input_size=64)
    save_checkpoint(tmp_path / "cls.pt", BlobDetector(), cls_contract)
    with pytest.raises(InputError, match="not a detection model"):
        Detector.from_path(tmp_path / "cls.pt", device="cpu")


def test_retinanet_contract_runs_end_to_end():
    from mitoscope.models.registry import create_model

    model = create_model("retinanet_multitask", backbone="test_resnet", fpn_channels=16, tile_size=64)
    c = ModelContract("retinanet_multitask", {}, "detection", input_size=64, thresholds={"default": 0.0})
    slide = ArraySlide(paint((100, 90), BLOBS[:1], radius=6), mpp=0.25)
    found = detect_slide(model, c, slide, overlap=16, num_workers=0, progress=False, tissue=False)
    assert list(found.columns) == ["x", "y", "score", "label"]
    assert found["x"].between(0, 100).all() and found["y"].between(0, 110).all()


# --------------------------------------------------------------------------------------------- outputs


def test_outputs_csv_keeps_extra_columns_and_classes(tmp_path):
    from mitoscope.inference.outputs import outputs_complete, write_detection_outputs, write_done_marker

    dets = pd.DataFrame(
        {
            "x": [4000.0, 10.0],
            "y": [8000.0, 20.0],
            "score": [0.9, 0.8],
            "label": ["mitotic figure"] * 2,
            "p_atypical": [0.7, 0.1],
            "class": ["atypical", "normal"],
        }
    )
    written = write_detection_outputs(tmp_path, "s1", dets, mpp=0.25, formats=("csv",))
    table = pd.read_csv(written["csv"])
    assert list(table.columns) == ["slide", "x", "y", "x_mm", "y_mm", "score", "label", "class", "p_atypical"]
    assert table.loc[0, ["x_mm", "y_mm"]].tolist() == [1.0, 2.0]
    assert table["class"].tolist() == ["atypical", "normal"]
    assert not outputs_complete(tmp_path, "s1")
    write_done_marker(tmp_path, "s1", written, {"n_detections": 2})
    assert outputs_complete(tmp_path, "s1", ("csv",))
    assert not outputs_complete(tmp_path, "s1", ("csv", "geojson"))
    written["csv"].unlink()
    assert not outputs_complete(tmp_path, "s1")


def test_outputs_other_formats_read_back(tmp_path):
    from mitoscope.inference.outputs import write_detection_outputs
    from mitoscope.io.geojson import read_geojson
    from mitoscope.io.midog_outputs import read_track1_json
    from mitoscope.io.sliderunner import read_sliderunner_detections

    dets = pd.DataFrame(
        {
            "x": [100.0, 4000.0],
            "y": [200.0, 400.0],
            "score": [0.9, 0.8],
            "label": ["mitotic figure", "mitotic figure"],
            "class": ["atypical", "normal"],
            "p_atypical": [0.8, 0.1],
        }
    )
    written = write_detection_outputs(
        tmp_path, "s1", dets, mpp=0.25, formats=("csv", "geojson", "midog", "sqlite"), slide_dims=(5000, 500)
    )
    assert sorted(written) == ["csv", "geojson", "midog", "sqlite"]
    assert written["midog"].name == "s1.midog.json"
    geo = read_geojson(written["geojson"])
    assert geo[["x", "y"]].to_numpy().tolist() == [[100.0, 200.0], [4000.0, 400.0]]
    assert geo["label"].tolist() == ["atypical", "normal"]  # coloured/classified by class
    track1 = read_track1_json(written["midog"], mpp=0.25)
    assert np.allclose(track1[["x", "y"]].to_numpy(), [[100.0, 200.0], [4000.0, 400.0]])
    assert np.allclose(track1["score"], [0.9, 0.8])
    sr = read_sliderunner_detections(written["sqlite"])
    (frame,) = sr.values()
    assert sorted(frame["label"]) == ["atypical", "normal"]
    assert sorted(frame["x"].tolist()) == [100.0, 4000.0]
    with pytest.raises(ValueError, match="unknown output formats"):
        write_detection_outputs(tmp_path, "s1", dets, mpp=0.25, formats=("xml",))


def test_workers_reopen_the_slide_with_the_mpp_in_use(tmp_path):
    import warnings

    from mitoscope.io.slides import open_slide
    from mitoscope.io.tiff_writer import write_tiled_tiff

    img = paint((380, 400), BLOBS, radius=6)
    path = write_tiled_tiff(tmp_path / "r.tiff", img, mpp=0.25, tile=128, compression="deflate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slide = open_slide(path, mpp=0.5)  # the user overrides the file's 0.25 µm/px
    assert slide.mpp == 0.5
    kw = dict(overlap=32, progress=False, tissue=False)
    with slide:
        main = detect_slide(BlobDetector(), contract(), slide, num_workers=0, **kw)
        workers = detect_slide(BlobDetector(), contract(), slide, num_workers=2, **kw)
    pd.testing.assert_frame_equal(main, workers)
    _match(main, BLOBS, tol=1.0)


def test_threaded_reader_reads_a_bounded_number_of_batches_ahead():
    import threading

    slide = CountingSlide(paint((600, 600), BLOBS, radius=6), mpp=0.25)
    model = BlobDetector()
    reads_at_call: list[int] = []
    original = model.forward
    gate = threading.Event()

    def forward(images):
        gate.wait(0.05)  # give the readers time to run ahead as far as they may
        reads_at_call.append(len(slide.reads))
        return original(images)

    model.forward = forward  # type: ignore[method-assign]
    detect_slide(model, contract(), slide, batch_size=4, overlap=32, num_workers=2, reader="thread",
                 progress=False, tissue=False)  # fmt: skip
    # 2 threads × 2 batches of 4 tiles ahead at most: when batch k is computed, at most k + 4 batches were read
    assert all(r <= 4 * (k + 1 + 4) for k, r in enumerate(reads_at_call))
    assert len(slide.reads) == 36


@pytest.mark.slow
def test_real_svs_with_tissue_skipping(shared_data):
    """The real CMU-1 crop (0.499 µm/px SVS): tiles at 0.25 µm/px, glass tiles skipped, points inside the slide."""
    from mitoscope.io.slides import open_slide

    with open_slide(shared_data / "slides" / "cmu_small_region.svs") as slide:
        found = detect_slide(
            BlobDetector(level=0.2, min_area=30), contract(tile=256), slide, overlap=32, num_workers=2,
            progress=False,
        )  # fmt: skip
        w, h = slide.dimensions
    assert 0 < found.attrs["tiles_processed"] < 0.8 * found.attrs["tiles_total"]
    assert found["x"].between(0, w).all() and found["y"].between(0, h).all()


class _DarkCentre:
    """A stand-in verifier: P(mitotic figure) = darkness of the crop's centre pixel."""

    threshold = 0.5
    class_names = ("hard negative", "mitotic figure")

    def __init__(self) -> None:
        self.seen = 0

    def classify_points(self, slide, points, batch_size=64):
        self.seen += len(points)
        out = []
        for x, y in points[["x", "y"]].to_numpy():
            centre = slide.read_centered(x, y, 1, mpp=slide.mpp)[0, 0].mean() / 255.0
            out.append(1.0 - centre)
        return np.asarray(out)


def test_verifier_rescores_candidates_and_decides_at_its_threshold():
    # three dark blobs (verified) and two grey ones that the detector finds but the verifier rejects
    darkness = [30, 30, 30, 150, 150]
    slide = ArraySlide(paint((380, 400), BLOBS, radius=6, darkness=darkness), mpp=0.25)
    c = contract(threshold=0.1)
    c.thresholds = {"default": 0.3, "candidate": 0.1, "verified": 0.6}
    c.config = {"merge_radius_um": 5.0}
    verifier = _DarkCentre()
    det = Detector(BlobDetector(level=0.7), c, verifier=verifier)  # type: ignore[arg-type]
    assert (det.threshold, det.candidate_threshold, det.merge_radius_um) == (0.6, 0.1, 5.0)
    found = det.detect(slide, overlap=32, num_workers=0, progress=False, tissue=False)
    _match(found, BLOBS[:3], tol=1.0)
    assert verifier.seen == 5 and found["score"].min() >= 0.6
    assert found["detector_score"].notna().all() and found.attrs["verified_threshold"] == 0.6
    every = det.detect(
        slide, overlap=32, num_workers=0, progress=False, tissue=False, keep_below_threshold=True
    )
    assert (every["label"] == POSITIVE_LABEL).sum() == 3 and len(every) == 5
    alone = Detector(BlobDetector(level=0.7), c)
    assert (
        alone.threshold == 0.3
        and len(alone.detect(slide, overlap=32, num_workers=0, progress=False, tissue=False)) == 5
    )
