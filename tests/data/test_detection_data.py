"""Detection data: region folders, crop sampler proportions, exact box geometry under reads, crops and flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mitoscope.data.detection import (
    CropRecord,
    CropSampler,
    DetectionCropDataset,
    DetectionTransform,
    SlideInfo,
    collate_detection,
    crop,
    find_annotation_json,
    hflip,
    hflip_boxes,
    points_by_slide,
    points_to_target,
    read_region_folder,
    vflip,
    vflip_boxes,
)
from mitoscope.io.catalog import make_catalog
from mitoscope.io.slide_base import ArraySlide
from mitoscope.utils.errors import InputError


def _catalog() -> object:
    rows = [
        {"slide": "a", "x": 100 + 50 * i, "y": 200, "label": "mitotic figure", "tumor": "t1"}
        for i in range(4)
    ]
    rows += [{"slide": "b", "x": 300, "y": 300, "label": "hard negative", "tumor": "t2"}]
    return make_catalog(rows)


SLIDES = {"a": SlideInfo(800, 600, 0.25), "b": SlideInfo(1000, 1000, 0.25)}


def test_sampler_proportions_are_exact() -> None:
    sampler = CropSampler(_catalog(), SLIDES, size=128, mpp=0.5, proportions=(0.5, 0.25, 0.25))
    records = sampler.sample(40, seed=1)
    kinds = [r.kind for r in records]
    assert (kinds.count("mitosis"), kinds.count("hard negative"), kinds.count("random")) == (20, 10, 10)
    assert sampler.counts(40) == {"mitosis": 20, "hard negative": 10, "random": 10}


def test_sampler_gives_missing_kinds_to_random() -> None:
    cat = make_catalog([{"slide": "a", "x": 100, "y": 100, "label": "mitotic figure"}])
    sampler = CropSampler(cat, SLIDES, size=64, mpp=0.25, proportions=(0.2, 0.5, 0.3))
    assert sampler.counts(10) == {"mitosis": 2, "hard negative": 0, "random": 8}


def test_sampler_centred_crops_contain_their_figure_and_stay_inside() -> None:
    sampler = CropSampler(
        _catalog(),
        SLIDES,
        size=128,
        mpp=0.5,
        proportions=(1, 1, 0),
        max_shift=0.8,
        tumor_index={"t1": 0, "t2": 1},
    )
    for rec in sampler.sample(60, seed=3):
        info = SLIDES[rec.slide]
        extent = rec.size * rec.mpp / info.mpp
        assert 0 <= rec.x <= info.width - extent and 0 <= rec.y <= info.height - extent
        pts = points_by_slide(_catalog())[rec.slide]
        wanted = 1.0 if rec.kind == "mitosis" else 0.0
        inside = [
            rec.x <= px < rec.x + extent and rec.y <= py < rec.y + extent for px, py, m in pts if m == wanted
        ]
        assert any(inside)
        assert rec.tumor == (0 if rec.slide == "a" else 1)


def test_sampler_is_deterministic_per_seed() -> None:
    sampler = CropSampler(_catalog(), SLIDES, size=64, mpp=0.25)
    assert sampler.sample(20, seed=5) == sampler.sample(20, seed=5)
    assert sampler.sample(20, seed=5) != sampler.sample(20, seed=6)


def test_sampler_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="proportions"):
        CropSampler(_catalog(), SLIDES, size=64, mpp=0.25, proportions=(1, 1))
    with pytest.raises(ValueError, match="not in `slides`"):
        CropSampler(_catalog(), {"a": SLIDES["a"]}, size=64, mpp=0.25)


def test_points_to_target_clips_boxes_and_sets_foreground() -> None:
    pts = np.array([[5.0, 60.0, 1.0], [30.0, 30.0, 0.0], [200.0, 10.0, 1.0]])
    t = points_to_target(pts, width=64, height=64, box_px=20, tumor=2)
    assert t["boxes"].tolist() == [[0.0, 50.0, 15.0, 64.0]]
    assert t["labels"].tolist() == [1] and int(t["tumor"]) == 2 and float(t["foreground"]) == 1.0
    only_negative = points_to_target(pts[1:2], width=64, height=64, box_px=20)
    assert only_negative["boxes"].shape == (0, 4) and float(only_negative["foreground"]) == 1.0
    empty = points_to_target(np.zeros((0, 3)), width=64, height=64, box_px=20)
    assert empty["boxes"].shape == (0, 4) and float(empty["foreground"]) == 0.0


@pytest.mark.parametrize("flip", ["h", "v"])
def test_boxes_follow_flips(flip: str) -> None:
    image = np.zeros((64, 80, 3), np.uint8)
    image[20, 30] = 255
    pts = np.array([[30.5, 20.5, 1.0], [70.0, 50.0, 1.0]])  # pixel (30, 20) has centre (30.5, 20.5)
    before = points_to_target(pts, width=80, height=64, box_px=10)["boxes"]
    if flip == "h":
        img2, pts2 = hflip(image, pts)
        expected = hflip_boxes(before, 80)
    else:
        img2, pts2 = vflip(image, pts)
        expected = vflip_boxes(before, 64)
    after = points_to_target(pts2, width=80, height=64, box_px=10)["boxes"]
    assert torch.allclose(after, expected)
    ys, xs = np.nonzero(img2[..., 0])
    assert (xs[0] + 0.5, ys[0] + 0.5) == (pts2[0, 0], pts2[0, 1])  # the marked pixel moved with its point


def test_boxes_follow_crops() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    image[60, 40] = 255
    pts = np.array([[40.5, 60.5, 1.0], [5.0, 5.0, 1.0]])
    img2, pts2 = crop(image, pts, 30, 50, 32)
    t = points_to_target(pts2, width=32, height=32, box_px=8)
    assert t["boxes"].tolist() == [[6.5, 6.5, 14.5, 14.5]]  # the other figure fell outside
    ys, xs = np.nonzero(img2[..., 0])
    assert (xs[0] + 0.5, ys[0] + 0.5) == (pts2[0, 0], pts2[0, 1])


def test_transform_keeps_marker_and_point_together() -> None:
    tf = DetectionTransform(48, train=True, jitter=None, seed=0)
    for _ in range(20):
        image = np.zeros((64, 64, 3), np.uint8)
        image[31, 33] = 255
        img2, pts2 = tf(image, np.array([[33.5, 31.5, 1.0]]))
        assert img2.shape == (48, 48, 3)
        ys, xs = np.nonzero(img2[..., 0])
        if len(xs):
            assert (xs[0] + 0.5, ys[0] + 0.5) == (pts2[0, 0], pts2[0, 1])


def test_colour_jitter_changes_colours_only() -> None:
    tf = DetectionTransform(32, train=True, flip=False, seed=0)
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out, pts = tf(image, np.array([[10.0, 12.0, 1.0]]))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert pts.tolist() == [[10.0, 12.0, 1.0]]


def test_dataset_reads_at_model_mpp_with_exact_boxes() -> None:
    level0 = np.full((400, 400, 3), 230, np.uint8)
    level0[196:204, 116:124] = 20  # dark square centred at level-0 (120, 200)
    slide = ArraySlide(level0, mpp=0.25)
    pts = {"s": np.array([[120.0, 200.0, 1.0]])}
    rec = CropRecord("s", 40, 120, 64, 0.5, "mitosis", tumor=1)  # covers level-0 [40, 168) x [120, 248)
    for cache in (False, True):
        ds = DetectionCropDataset([rec], pts, opener=lambda p: slide, box_um=12.5, cache=cache)
        image, target = ds[0]
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and float(image.max()) <= 1.0
        # figure at ((120-40)/2, (200-120)/2) = (40, 40); 12.5 µm box at 0.5 µm/px = 25 px
        assert target["boxes"].tolist() == [[27.5, 27.5, 52.5, 52.5]]
        dark = (image[0] < 0.3).nonzero()
        assert (
            abs(float(dark[:, 1].float().mean()) + 0.5 - 40) <= 1
            and abs(float(dark[:, 0].float().mean()) + 0.5 - 40) <= 1
        )
        assert int(target["tumor"]) == 1 and float(target["foreground"]) == 1.0


def test_dataset_margin_and_random_crop_keep_boxes_on_the_figure() -> None:
    level0 = np.full((300, 300, 3), 230, np.uint8)
    level0[146:154, 146:154] = 10
    slide = ArraySlide(level0, mpp=0.25)
    rec = CropRecord("s", 118, 118, 64, 0.25, "mitosis")
    ds = DetectionCropDataset(
        [rec] * 10,
        {"s": np.array([[150.0, 150.0, 1.0]])},
        opener=lambda p: slide,
        margin=8,
        transform=DetectionTransform(64, train=True, jitter=None, seed=1),
    )
    for i in range(10):
        image, target = ds[i]
        (x1, y1, x2, y2) = target["boxes"][0].tolist()
        dark = (image[0] < 0.2).nonzero().float()
        assert abs((x1 + x2) / 2 - (dark[:, 1].mean() + 0.5)) < 1.0
        assert abs((y1 + y2) / 2 - (dark[:, 0].mean() + 0.5)) < 1.0


def test_dataset_pads_outside_the_slide_white() -> None:
    slide = ArraySlide(np.zeros((50, 50, 3), np.uint8), mpp=0.25)
    ds = DetectionCropDataset([CropRecord("s", 30, 30, 40, 0.25, "random")], {}, opener=lambda p: slide)
    image, target = ds[0]
    assert float(image[:, 35, 35].min()) == 1.0 and float(image[:, 5, 5].max()) == 0.0
    assert target["boxes"].shape == (0, 4) and float(target["foreground"]) == 0.0


def test_collate_to_lists() -> None:
    batch = [
        (torch.zeros(3, 8, 8), {"boxes": torch.zeros(0, 4)}),
        (torch.ones(3, 8, 8), {"boxes": torch.ones(1, 4)}),
    ]
    images, targets = collate_detection(batch)
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == 2
    assert targets[1]["boxes"].shape == (1, 4)


def _write_folder(folder: Path, *, missing_image: bool = False) -> None:
    from mitoscope.io.midogpp import write_midogpp_json
    from mitoscope.io.tiff_writer import write_tiled_tiff

    folder.mkdir(parents=True, exist_ok=True)
    if not missing_image:
        write_tiled_tiff(folder / "r1.tiff", np.full((256, 256, 3), 200, np.uint8), mpp=0.25, pyramid=False)
    write_tiled_tiff(folder / "r2.tiff", np.full((256, 320, 3), 200, np.uint8), mpp=0.25, pyramid=False)
    images = [
        {"file_name": "r1.tiff", "id": 1, "width": 256, "height": 256, "tumor_type": "human melanoma"},
        {"file_name": "r2.tiff", "id": 2, "width": 320, "height": 256, "tumor_type": "canine lymphoma"},
    ]
    anns = [
        {"x": 100, "y": 120, "label": "mitotic figure", "image_id": 1},
        {"x": 50, "y": 60, "label": "hard negative", "image_id": 1},
    ]
    write_midogpp_json(folder / "annotations.json", images, anns)


def test_read_region_folder(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    catalog, infos = read_region_folder(tmp_path)
    assert len(catalog) == 2 and set(catalog["label"]) == {"mitotic figure", "hard negative"}
    assert all(Path(s).is_absolute() and Path(s).is_file() for s in catalog["slide"])
    assert {Path(k).name: (v.width, v.height, v.mpp) for k, v in infos.items()} == {
        "r1.tiff": (256, 256, 0.25),
        "r2.tiff": (320, 256, 0.25),
    }  # r2 has no annotations but is still a region to sample background from
    assert sorted(catalog.attrs["tumors"].values()) == ["canine lymphoma", "human melanoma"]


def test_read_region_folder_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no MIDOG"):
        find_annotation_json(tmp_path)
    _write_folder(tmp_path / "x", missing_image=True)
    with pytest.raises(InputError, match=r"r1\.tiff.*missing"):
        read_region_folder(tmp_path / "x")
