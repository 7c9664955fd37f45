"""AMi-Br mosaics: exact figure positions, background cells, slide-disjoint splits, readable output folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mitoscope.data.mosaic import build_mosaics, compose_mosaic, read_amibr_table, split_groups


def _marked_patch(i: int, size: int = 128) -> np.ndarray:
    """A patch whose centre pixel has a unique colour (id ``i``) and whose corners are plain."""
    patch = np.full((size, size, 3), 200, np.uint8)
    patch[size // 2, size // 2] = (i % 256, i // 256, 7)
    return patch


def test_mosaic_positions_are_exact() -> None:
    rng = np.random.default_rng(0)
    patches = [_marked_patch(i) for i in range(12)]
    m = compose_mosaic(patches, grid=4, cell=96, background_fraction=0.25, rng=rng)
    assert m.image.shape == (384, 384, 3)
    assert len(m.points) == 12 and m.sources == list(range(12))
    for (x, y), src in zip(m.points, m.sources, strict=True):
        # the patch centre (64, 64) has pixel centre (64.5, 64.5) in continuous coordinates
        px, py = round(x), round(y)
        assert tuple(m.image[py, px]) == (src % 256, src // 256, 7)
    # every marker appears exactly where a point says, nowhere else
    marked = np.argwhere(m.image[..., 2] == 7)
    assert sorted(map(tuple, marked[:, ::-1].tolist())) == sorted((round(x), round(y)) for x, y in m.points)


def test_points_fall_inside_their_cell_and_positions_vary() -> None:
    rng = np.random.default_rng(1)
    m = compose_mosaic(
        [_marked_patch(i) for i in range(36)], grid=6, cell=96, background_fraction=0.0, rng=rng
    )
    cells = {(int(x // 96), int(y // 96)) for x, y in m.points}
    assert len(cells) == 36
    offsets = {(x % 96, y % 96) for x, y in m.points}
    assert len(offsets) > 10
    assert all(32 <= ox <= 64 and 32 <= oy <= 64 for ox, oy in offsets)


def test_background_cells_hold_no_annotated_centre() -> None:
    rng = np.random.default_rng(2)
    m = compose_mosaic(
        [_marked_patch(i) for i in range(3)], grid=3, cell=96, background_fraction=0.5, rng=rng
    )
    assert len(m.points) == 3  # fewer patches than figure cells: the rest are background
    assert int((m.image[..., 2] == 7).sum()) == 3  # background tiles never include a patch centre


def _distance_patch(size: int = 128) -> np.ndarray:
    """A patch whose pixels hold their distance (px) from the patch centre, where the figure is."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    d = np.hypot(yy - size / 2, xx - size / 2)
    return np.repeat(np.clip(d, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_background_cells_keep_clear_of_every_figure() -> None:
    """No background pixel lies within 11 µm (44 px) of its source patch's figure: a figure's arms and halves
    reach about 6 µm, and the old quadrant cells put four patches' near-centre corners together at the cell
    centre."""
    rng = np.random.default_rng(3)
    m = compose_mosaic([_distance_patch()] * 2, grid=4, cell=96, background_fraction=1.0, rng=rng)
    assert len(m.points) == 0
    assert int(m.image.min()) >= 44
    tiles = {m.image[y : y + 32, x : x + 32].tobytes() for y in range(0, 384, 32) for x in range(0, 384, 32)}
    assert len(tiles) == 4  # all four orientations (on this symmetric patch, corners and rotations coincide)


def test_compose_rejects_bad_sizes() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least the cell size"):
        compose_mosaic([np.zeros((64, 64, 3), np.uint8)], grid=2, cell=96, rng=rng)
    with pytest.raises(ValueError, match="no patches"):
        compose_mosaic([], grid=2, cell=96, rng=rng)


def test_split_groups_disjoint_and_complete() -> None:
    groups = [f"g{i % 17}" for i in range(100)]
    parts = split_groups(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    seen = [g for part in parts.values() for g in part]
    assert sorted(seen) == sorted(set(groups)) and len(seen) == len(set(seen))
    assert len(parts["train"]) == 12


def _fake_amibr(root: Path, n_slides: int = 6, per_slide: int = 5) -> None:
    from skimage.io import imsave

    (root / "images").mkdir(parents=True)
    lines = ["file,slide,dataset,uid,x,y,label"]
    k = 0
    for s in range(n_slides):
        for _ in range(per_slide):
            imsave(root / "images" / f"p{k}.png", _marked_patch(k), check_contrast=False)
            lines.append(
                f"images/p{k}.png,{s:03d}.tiff,MIDOG21,{k},0,0,{'Atypical' if k % 3 == 0 else 'Normal'}"
            )
            k += 1
    (root / "amibr_train.csv").write_text("\n".join(lines) + "\n")


def test_build_mosaics_writes_readable_slide_disjoint_folders(tmp_path: Path) -> None:
    from mitoscope.data.detection import read_region_folder
    from mitoscope.io.slides import open_slide

    _fake_amibr(tmp_path / "amibr")
    out = build_mosaics(
        tmp_path / "amibr", tmp_path / "mosaics", grid=3, cell=96, background_fraction=0.3, seed=0
    )
    assert set(out) == {"train", "val", "test"}
    slides = {k: set((v / "slides.txt").read_text().split()) for k, v in out.items()}
    assert not (slides["train"] & slides["val"]) and not (slides["train"] & slides["test"])
    assert not (slides["val"] & slides["test"])
    total = 0
    table = read_amibr_table(tmp_path / "amibr")
    for split, folder in out.items():
        catalog, infos = read_region_folder(folder)
        total += len(catalog)
        doc = json.loads((folder / "annotations.json").read_text())
        assert {a["source_slide"] for a in doc["annotations"]} <= slides[split]
        assert all(img["tumor_type"] == "human breast cancer" for img in doc["images"])
        for path, info in infos.items():
            assert (info.width, info.height, info.mpp) == (288, 288, 0.25)
            with open_slide(path) as slide:
                image = slide.read_rect(0, 0, 288, 288)
            for x, y in catalog.loc[catalog["slide"] == path, ["x", "y"]].to_numpy():
                uid = image[int(y), int(x)]  # lossless TIFF: the centre marker is where the annotation says
                assert uid[2] == 7
                assert table.loc[int(uid[0]) + 256 * int(uid[1]), "group"] in slides[split]
    assert total == len(table)  # every patch used exactly once


def test_build_mosaics_keeps_existing_folders(tmp_path: Path) -> None:
    _fake_amibr(tmp_path / "amibr", n_slides=3, per_slide=2)
    first = build_mosaics(tmp_path / "amibr", tmp_path / "m", grid=2, cell=96, seed=0)
    stamp = (first["train"] / "annotations.json").stat().st_mtime_ns
    build_mosaics(tmp_path / "amibr", tmp_path / "m", grid=2, cell=96, seed=1)
    assert (first["train"] / "annotations.json").stat().st_mtime_ns == stamp


def test_real_amibr_mosaic(shared_data: Path, tmp_path: Path) -> None:
    from mitoscope.data.detection import read_region_folder

    out = build_mosaics(shared_data / "amibr", tmp_path / "m", max_patches=40, seed=0)
    counts = {k: len(read_region_folder(v)[0]) for k, v in out.items()}
    assert sum(counts.values()) == 40 and counts["train"] > counts["test"]


def _class_folders(root: Path, n: int) -> Path:
    from PIL import Image

    for i in range(n):
        folder = root / ("Atypical" if i % 3 == 0 else "Normal")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_marked_patch(i)).save(folder / f"p{i}.png")
    return root


def test_patch_mosaics_from_class_folders_split_by_patch_and_checked(tmp_path: Path) -> None:
    from mitoscope.data.detection import read_region_folder
    from mitoscope.data.mosaic import patch_mosaics
    from mitoscope.data.sources import load_catalog
    from mitoscope.utils.errors import InputError

    catalog = load_catalog(_class_folders(tmp_path / "patches", 20))
    out = patch_mosaics(catalog, tmp_path / "m", seed=0)
    counts = {k: len(read_region_folder(v)[0]) for k, v in out.items()}
    assert sorted(counts) == ["train", "val"] and sum(counts.values()) == 20 and counts["val"] == 4
    train_slides = set((out["train"] / "slides.txt").read_text().split())
    assert not train_slides & set((out["val"] / "slides.txt").read_text().split())

    gone = catalog.copy()
    gone.loc[3, "image"] = str(tmp_path / "patches" / "gone.png")
    with pytest.raises(InputError, match=r"gone\.png: patch image not found \(1 of 20 missing\)"):
        patch_mosaics(gone, tmp_path / "m2")
    assert not (tmp_path / "m2").exists()
    one = catalog.assign(slide="s1", group="s1")
    with pytest.raises(InputError, match="patches from 1 slide"):
        patch_mosaics(one, tmp_path / "m3")


def test_detection_sources_turn_patch_catalogs_into_mosaics(tmp_path: Path) -> None:
    from mitoscope.engine.detector_training import detection_sources

    patches = _class_folders(tmp_path / "patches", 10)
    train, val = detection_sources([patches], tmp_path / "run")
    assert [Path(p).name for p in train] == ["train"] and [Path(p).name for p in val] == ["val"]
    assert Path(train[0]).parent == tmp_path / "run" / "mosaics" / "patches"
    # a region folder passes through unchanged, and nothing is validated from it
    train2, val2 = detection_sources([train[0]], tmp_path / "run2")
    assert train2 == [train[0]] and val2 == []
