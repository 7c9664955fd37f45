"""Real detection data from AMi-Br patches: mosaics of shifted crops with every centre figure's position known.

AMi-Br patches are 128 × 128 px at 0.25 µm/px, each centred on one mitotic figure among real non-mitotic
nuclei. A mosaic is a ``grid × grid`` arrangement of ``cell``-px cells: a *figure cell* is a ``cell``-px window
of one patch cut at a random offset (so the figure sits anywhere in the inner part of the cell and its
position is exact); a *background cell* is made of ``3 × 3`` tiles cut from the corners of other patches (real
nuclei, at least 11 µm from their patch's figure in a 128 px patch, so no part of a figure shows). Slides are split into train / val / test groups first, so no slide feeds
two splits. Each split is written as tiled TIFF regions + a MIDOG++-format JSON, the same layout
``mitoscope synth regions`` writes and :func:`mitoscope.data.detection.read_region_folder` reads.

**Known limitation — unlabelled positives.** Only the centre figure of an AMi-Br patch is annotated. Another
mitosis can lie near a patch border (mitoses cluster in hot spots); when it falls inside a cut window or a
background quadrant it appears in the mosaic *without* a label. A detector that finds it is scored a false
positive, and training treats it as background. This biases measured precision down a little and teaches the
model to under-call such figures; the effect is small because the windows are cut around the centre and the
quadrants are small, but it is not zero.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mitoscope.io.midogpp import write_midogpp_json
from mitoscope.io.slide_base import as_rgb_uint8
from mitoscope.io.tiff_writer import write_tiled_tiff
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError

AMIBR_MPP = 0.25
TUMOR = "human breast cancer"


@dataclasses.dataclass
class Mosaic:
    """One mosaic image and its figures (``x, y`` centres in mosaic pixels, the patch row each came from)."""

    image: np.ndarray
    points: np.ndarray  # (K, 2) float
    sources: list[int]  # row index (in the patch table) of each point's patch


def read_amibr_table(root: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``amibr_train.csv`` under ``root``: adds ``path`` (absolute image file) and ``group`` (dataset/slide).

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "amibr_train.csv").write_text("file,slide,dataset,label\\nimages/a.png,002.tiff,MIDOG21,Normal\\n")
        >>> read_amibr_table(d).loc[0, "group"]
        'MIDOG21/002.tiff'
    """
    root = Path(root)
    csv = root / "amibr_train.csv"
    if not csv.is_file():
        raise InputError("AMi-Br table not found (expected amibr_train.csv)", path=csv)
    table = pd.read_csv(csv)
    for column in ("file", "slide", "dataset"):
        if column not in table.columns:
            raise InputError(f"missing column {column!r}", path=csv)
    table["path"] = [str(root / f) for f in table["file"]]
    table["group"] = table["dataset"].astype(str) + "/" + table["slide"].astype(str)
    return table


def split_groups(
    groups: Sequence[str], fractions: Mapping[str, float], *, seed: int = 0
) -> dict[str, list[str]]:
    """Assign whole groups (slides) to splits with roughly the given fractions of *groups*; disjoint.

    Examples:
        >>> parts = split_groups([f"s{i}" for i in range(10)], {"train": 0.6, "val": 0.2, "test": 0.2})
        >>> {k: len(v) for k, v in parts.items()}
        {'train': 6, 'val': 2, 'test': 2}
    """
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    names = list(fractions)
    total = float(sum(fractions.values()))
    out: dict[str, list[str]] = {}
    start = 0
    for i, name in enumerate(names):
        last = i == len(names) - 1
        stop = len(order) if last else start + round(fractions[name] / total * len(order))
        out[name] = sorted(order[start:stop])
        start = stop
    return out


#: Tiles per side of a background cell: a third of a cell, cut from a patch corner, keeps clear of the figure
#: at the patch centre (at a 96 px cell and 128 px patches, the nearest tile pixel is 45 px = 11 µm away).
BACKGROUND_TILES = 3


def background_cell(patches: Sequence[np.ndarray], cell: int, rng: np.random.Generator) -> np.ndarray:
    """A ``cell``-px background cell: :data:`BACKGROUND_TILES` ``×`` :data:`BACKGROUND_TILES` tiles, each a
    randomly rotated corner of a random patch, so no tile reaches a patch's centre figure.

    Examples:
        >>> background_cell([np.zeros((128, 128, 3), np.uint8)], 96, np.random.default_rng(0)).shape
        (96, 96, 3)
    """
    tile = -(-cell // BACKGROUND_TILES)
    out = np.zeros((tile * BACKGROUND_TILES, tile * BACKGROUND_TILES, 3), np.uint8)
    for ty in range(BACKGROUND_TILES):
        for tx in range(BACKGROUND_TILES):
            patch = patches[int(rng.integers(len(patches)))]
            h, w = patch.shape[:2]
            corner = int(rng.integers(4))
            sy, sx = (0 if corner < 2 else h - tile), (0 if corner % 2 == 0 else w - tile)
            piece = np.rot90(patch[sy : sy + tile, sx : sx + tile, :3], k=int(rng.integers(4)))
            out[ty * tile : (ty + 1) * tile, tx * tile : (tx + 1) * tile] = piece
    return out[:cell, :cell]


def compose_mosaic(
    patches: Sequence[np.ndarray],
    *,
    grid: int = 6,
    cell: int = 96,
    background_fraction: float = 0.25,
    rng: np.random.Generator,
) -> Mosaic:
    """Arrange ``grid × grid`` cells cut from ``patches`` (each centred on its figure) into one image.

    Figure cells use the patches in order, one per cell; background cells (``background_fraction`` of the
    cells, plus any cells left over when there are fewer patches than figure cells) are corner tiles of random
    patches (:func:`background_cell`). Every patch must be at least ``cell`` px on each side.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> m = compose_mosaic([np.zeros((128, 128, 3), np.uint8)] * 4, grid=2, cell=96,
        ...                    background_fraction=0.0, rng=rng)
        >>> m.image.shape, m.points.shape
        ((192, 192, 3), (4, 2))
    """
    if not patches:
        raise ValueError("no patches to build a mosaic from")
    ph, pw = patches[0].shape[:2]
    if ph < cell or pw < cell:
        raise ValueError(f"patches ({pw}×{ph}) must be at least the cell size {cell}")
    if cell % 2:
        raise ValueError(f"cell size must be even, got {cell}")
    image = np.zeros((grid * cell, grid * cell, 3), np.uint8)
    points: list[tuple[float, float]] = []
    sources: list[int] = []
    n_cells = grid * grid
    n_background = max(round(background_fraction * n_cells), n_cells - len(patches))
    background = (
        set(rng.choice(n_cells, size=n_background, replace=False).tolist()) if n_background else set()
    )
    next_patch = 0
    for index in range(n_cells):
        gy, gx = divmod(index, grid)
        oy0, ox0 = gy * cell, gx * cell
        if index in background:
            image[oy0 : oy0 + cell, ox0 : ox0 + cell] = background_cell(patches, cell, rng)
            continue
        patch_index = next_patch
        next_patch += 1
        patch = patches[patch_index]
        h, w = patch.shape[:2]
        ox = int(rng.integers(0, w - cell + 1))
        oy = int(rng.integers(0, h - cell + 1))
        image[oy0 : oy0 + cell, ox0 : ox0 + cell] = patch[oy : oy + cell, ox : ox + cell, :3]
        points.append((ox0 + w / 2.0 - ox, oy0 + h / 2.0 - oy))
        sources.append(patch_index)
    return Mosaic(image=image, points=np.asarray(points, float).reshape(-1, 2), sources=sources)


def _load_patch(path: str) -> np.ndarray:
    from skimage.io import imread

    try:
        return as_rgb_uint8(imread(path), source=path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read patch image: {exc}", path=path) from exc


def build_mosaics(
    amibr_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fractions: Mapping[str, float] | None = None,
    grid: int = 6,
    cell: int = 96,
    background_fraction: float = 0.25,
    max_patches: int | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write train / val / test mosaic folders (regions + MIDOG++ JSON) from the AMi-Br patches.

    The slides are split with :func:`split_groups` (``fractions``, default 0.7 / 0.15 / 0.15), then
    :func:`write_mosaic_splits` arranges each split's patches.

    Examples:
        >>> build_mosaics("../shared/data/amibr", "/tmp/mosaics", max_patches=40)  # doctest: +SKIP
        {'train': PosixPath('/tmp/mosaics/train'), ...}
    """
    fractions = dict(fractions or {"train": 0.7, "val": 0.15, "test": 0.15})
    table = read_amibr_table(amibr_root)
    rng = np.random.default_rng(seed)
    parts = split_groups(table["group"].tolist(), fractions, seed=seed)
    if max_patches is not None:
        table = table.iloc[rng.permutation(len(table))[: int(max_patches)]].reset_index(drop=True)
    split_of = {g: name for name, groups in parts.items() for g in groups}
    patches = pd.DataFrame(
        {
            "image": table["path"],
            "group": table["group"],
            "split": [split_of[g] for g in table["group"]],
            "label": table["label"] if "label" in table.columns else "",
            "tumor": TUMOR,
        }
    )
    return write_mosaic_splits(
        patches,
        out_dir,
        splits=list(fractions),
        grid=grid,
        cell=cell,
        background_fraction=background_fraction,
        rng=rng,
        description="AMi-Br mosaics",
    )


def write_mosaic_splits(
    patches: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    splits: Sequence[str] = ("train", "val", "test"),
    grid: int = 6,
    cell: int = 96,
    background_fraction: float = 0.25,
    mpp: float = AMIBR_MPP,
    rng: np.random.Generator | None = None,
    description: str = "patch mosaics",
) -> dict[str, Path]:
    """Write one mosaic folder per split from patches centred on a figure.

    Every patch of a split is used once (in shuffled order) as a figure cell; mosaics are named
    ``mosaic_<split>_<n>.tiff``. The patch groups (slides) of each split are listed in
    ``out_dir/<split>/slides.txt``. An existing split folder is left as it is (delete it to rebuild); each
    folder appears atomically.

    Args:
        patches: one row per patch: ``image`` (file), ``group`` (slide), ``split``; optional ``label``
            (``atypical`` marks the annotation) and ``tumor`` (the mosaic's ``tumor_type``).
        out_dir: output folder; gets one sub-folder per split.
        splits: the splits to write (rows of other splits are ignored).
        grid: cells per side.
        cell: cell side in pixels at ``mpp``.
        background_fraction: share of background cells (corner tiles of other patches).
        mpp: µm per pixel of the patches.
        rng: random generator (default: seed 0).
        description: written into each JSON's ``info``.

    Returns:
        ``split name → folder``.

    Raises:
        InputError: a patch file that is missing or unreadable (named).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    per_mosaic = grid * grid - round(background_fraction * grid * grid)
    for split in splits:
        folder = out_dir / split
        written[split] = folder
        if folder.is_dir():
            continue
        rows = patches[patches["split"].astype(str) == split]
        rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
        with atomic_path(folder, suffix="") as tmp:
            tmp.mkdir(parents=True)
            images, annotations = [], []
            for m, start in enumerate(range(0, len(rows), per_mosaic)):
                chunk = rows.iloc[start : start + per_mosaic]
                loaded = [_load_patch(p) for p in chunk["image"]]
                mosaic = compose_mosaic(
                    loaded, grid=grid, cell=cell, background_fraction=background_fraction, rng=rng
                )
                name = f"mosaic_{split}_{m:04d}.tiff"
                write_tiled_tiff(tmp / name, mosaic.image, mpp=mpp, pyramid=False, compression="deflate")
                size = mosaic.image.shape[1], mosaic.image.shape[0]
                tumor = str(chunk["tumor"].iloc[0]) if "tumor" in chunk.columns else ""
                images.append(
                    {"file_name": name, "id": m + 1, "width": size[0], "height": size[1], "tumor_type": tumor}
                )
                for (x, y), src in zip(mosaic.points, mosaic.sources, strict=True):
                    row = chunk.iloc[src]
                    annotations.append(
                        {
                            "x": float(x),
                            "y": float(y),
                            "label": "mitotic figure",
                            "image_id": m + 1,
                            "atypical": str(row.get("label", "")).lower() == "atypical",
                            "source_slide": str(row["group"]),
                        }
                    )
            write_midogpp_json(
                tmp / "annotations.json",
                images,
                annotations,
                info={"description": f"{description} ({split}), mitoscope", "version": "1.0"},
            )
            groups = sorted(set(rows["group"].astype(str)))
            (tmp / "slides.txt").write_text("\n".join(groups) + "\n", encoding="utf-8")
    return written


#: Default split of a patch catalog's slides for detector training (no test part: the user keeps their own).
TRAIN_VAL = {"train": 0.8, "val": 0.2}


def patch_mosaics(
    catalog: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    fractions: Mapping[str, float] | None = None,
    background_fraction: float = 0.5,
    mpp: float = AMIBR_MPP,
    seed: int = 0,
    source: object = None,
) -> dict[str, Path]:
    """Detection data from a catalog of patches centred on figures (AMi-Br CSV, AtNorM-MD, class folders…).

    The patches' slides (``group``, else ``slide``, else each image alone) are split by ``fractions``
    (default :data:`TRAIN_VAL`) so that no slide feeds two splits, and each split is arranged into mosaics
    (:func:`write_mosaic_splits`). Rows labelled ``hard negative`` are left out. Everything is checked before
    anything is written.

    Raises:
        InputError: no patch images, a missing image file (named), fewer than two slides to split.

    Examples:
        >>> patch_mosaics(pd.DataFrame({"image": ["", ""]}), "/tmp/m")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        mitoscope.utils.errors.InputError: no patch images in this catalog ...
    """
    fractions = dict(fractions or TRAIN_VAL)
    rows = catalog[catalog["image"].astype(str) != ""]
    if "label" in rows.columns:
        rows = rows[rows["label"].astype(str) != "hard negative"]
    if rows.empty:
        raise InputError(
            "no patch images in this catalog (a catalog of points on slides is detection data as it is)",
            path=source,
        )
    missing = [p for p in rows["image"].astype(str) if not Path(p).is_file()]
    if missing:
        raise InputError(f"patch image not found ({len(missing)} of {len(rows)} missing)", path=missing[0])
    groups = rows["image"].astype(str)
    for column in ("slide", "group"):
        if column in rows.columns and (rows[column].astype(str) != "").all():
            groups = rows[column].astype(str)
    if groups.nunique() < len(fractions):
        raise InputError(
            f"patches from {groups.nunique()} slide(s): a slide-disjoint {' / '.join(fractions)} split needs at "
            f"least {len(fractions)} (give the patches' slides in a 'slide' or 'group' column)",
            path=source,
        )
    rng = np.random.default_rng(seed)
    parts = split_groups(groups.tolist(), fractions, seed=seed)
    split_of = {g: name for name, members in parts.items() for g in members}
    patches = pd.DataFrame(
        {
            "image": rows["image"].astype(str).to_numpy(),
            "group": groups.to_numpy(),
            "split": [split_of[g] for g in groups],
            "label": rows["label"].astype(str).to_numpy() if "label" in rows.columns else "",
            "tumor": rows["tumor"].astype(str).to_numpy() if "tumor" in rows.columns else "",
        }
    )
    return write_mosaic_splits(
        patches,
        out_dir,
        splits=list(fractions),
        background_fraction=background_fraction,
        mpp=mpp,
        rng=rng,
        description="patch mosaics",
    )
