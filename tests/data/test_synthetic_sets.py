"""Synthetic patch sets, region sets and the gallery: files, labels, determinism, errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mitoscope.data.synthetic import list_domains, make_gallery, make_patch_set, make_region_set
from mitoscope.data.synthetic.gallery import CELL, LABEL_W, gallery_rows
from mitoscope.data.synthetic.patches import AMIBR_COLUMNS, LABEL_COLUMNS
from mitoscope.utils.errors import InputError


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _no_leftovers(parent: Path) -> None:
    assert [p.name for p in parent.iterdir() if p.name.startswith(".")] == []


def test_patch_set_layout_labels_and_determinism(tmp_path):
    a = make_patch_set(tmp_path / "a", n=10, domains=2, seed=5, atypical_fraction=0.5)
    b = make_patch_set(tmp_path / "b", n=10, domains=2, seed=5, atypical_fraction=0.5)
    c = make_patch_set(tmp_path / "c", n=10, domains=2, seed=6, atypical_fraction=0.5)
    assert _hashes(a) == _hashes(b)
    assert _hashes(a) != _hashes(c)
    df = pd.read_csv(a / "labels.csv")
    assert tuple(df.columns) == LABEL_COLUMNS
    assert len(df) == 10 and df.uid.is_unique
    pngs = sorted(str(p.relative_to(a)) for p in a.rglob("*.png"))
    assert pngs == sorted(df.file)
    for row in df.itertuples():
        assert row.file.startswith(f"{row.label}/")
        votes = [row.expert1_atypical, row.expert2_atypical, row.expert3_atypical]
        assert row.majority_atypical == (sum(votes) >= 2)
        assert row.label == ("Atypical" if row.majority_atypical else "Normal")
        assert row.expert1_label[:3] in ("NMF", "AMF")
    img = np.asarray(Image.open(a / df.file[0]))
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert set(df.domain) == set(list_domains()[:2])
    assert df.slide.nunique() > 2  # several slides, so group splits are possible
    assert df.groupby("slide").domain.nunique().max() == 1
    assert (df.dataset == df.domain).all()
    _no_leftovers(tmp_path)


def test_patch_set_columns_match_real_amibr(shared_data):
    real = pd.read_csv(shared_data / "amibr" / "amibr_train.csv", nrows=2)
    assert tuple(real.columns) == AMIBR_COLUMNS
    assert LABEL_COLUMNS[: len(AMIBR_COLUMNS)] == AMIBR_COLUMNS
    assert LABEL_COLUMNS[-2:] == ("domain", "tumor")


def test_patch_set_size_option(tmp_path):
    out = make_patch_set(tmp_path / "p", n=2, domains=1, seed=0, size=64)
    df = pd.read_csv(out / "labels.csv")
    assert Image.open(out / df.file[0]).size == (64, 64)


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": -3}, {"domains": 0}, {"domains": 99}, {"size": 0}, {"atypical_fraction": -0.1}],
)
def test_patch_set_bad_arguments_leave_nothing(tmp_path, kwargs):
    args = {"n": 2, "domains": 1, "seed": 0, **kwargs}
    with pytest.raises(InputError):
        make_patch_set(tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        make_patch_set(out, n=1, domains=1, seed=0)
    assert (out / "keep.txt").read_text() == "mine"
    make_patch_set(out, n=1, domains=1, seed=0, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "labels.csv").is_file()
    _no_leftovers(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    make_patch_set(empty, n=1, domains=1, seed=0)  # an empty folder is fine
    assert (empty / "labels.csv").is_file()


def test_output_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        make_region_set(f, n=1, size=(128, 128), domains=1, seed=0)


def test_region_set_files_annotations_and_determinism(tmp_path):
    import tifffile

    a = make_region_set(tmp_path / "a", n=3, size=(384, 256), domains=2, seed=11)
    b = make_region_set(tmp_path / "b", n=3, size=(384, 256), domains=2, seed=11)
    assert _hashes(a) == _hashes(b)
    doc = json.loads((a / "annotations.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["mitotic figure", "not mitotic figure"]
    names = sorted(p.name for p in a.glob("*.tiff"))
    assert names == ["synth_001.tiff", "synth_002.tiff", "synth_003.tiff"]
    assert [im["file_name"] for im in doc["images"]] == names
    domains = [im["domain"] for im in doc["images"]]
    assert domains == [list_domains()[0], list_domains()[1], list_domains()[0]]
    for im in doc["images"]:
        assert (im["width"], im["height"]) == (384, 256) and im["tumor_type"]
        with tifffile.TiffFile(a / im["file_name"]) as tif:
            page = tif.pages[0]
            assert page.is_tiled and page.shape[:2] == (256, 384)
            xres = page.tags["XResolution"].value
            unit = page.tags["ResolutionUnit"].value
            assert int(unit) == 3  # centimetre
            assert abs(1e4 * xres[1] / xres[0] - 0.25) < 1e-6
            assert "MPP = 0.25" in page.description
    anns = doc["annotations"]
    assert len({a_["id"] for a_ in anns}) == len(anns)
    for ann in anns:
        x1, y1, x2, y2 = ann["bbox"]
        assert (x2 - x1, y2 - y1) == (50, 50)
        assert x1 >= 0 and x2 <= 384 and y1 >= 0 and y2 <= 256
        assert ann["category_id"] in (1, 2) and len(ann["labels"]) == 3
        assert ("atypical" in ann) == (ann["category_id"] == 1)
    atyp = pd.read_csv(a / "atypical.csv")
    assert list(atyp.columns) == ["image", "x", "y", "atypical"]
    mitoses = [x for x in anns if x["category_id"] == 1]
    assert len(atyp) == len(mitoses)
    assert int(atyp.atypical.sum()) == sum(bool(x["atypical"]) for x in mitoses)
    _no_leftovers(tmp_path)


def test_region_set_mpp_reads_back_with_open_slide(tmp_path):
    slides = pytest.importorskip("mitoscope.io.slides")
    out = make_region_set(tmp_path / "r", n=1, size=(300, 200), domains=1, seed=0)
    s = slides.open_slide(out / "synth_001.tiff")
    assert s.dimensions == (300, 200)
    assert abs(s.mpp - 0.25) < 1e-6


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"size": (10, 500)}, {"size": (500, -1)}, {"domains": 42}])
def test_region_set_bad_arguments_leave_nothing(tmp_path, kwargs):
    args = {"n": 1, "size": (256, 256), "domains": 1, "seed": 0, **kwargs}
    with pytest.raises(InputError):
        make_region_set(tmp_path / "out", **args)
    assert list(tmp_path.iterdir()) == []


def test_gallery_png(tmp_path):
    path = make_gallery(tmp_path / "g.png", domains=2, seed=0)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(path)
    assert img.size[0] == LABEL_W + 2 * CELL
    assert img.size[1] > CELL * len(gallery_rows())
    assert len(data) > 50_000  # real image content, not a blank sheet
    arr = np.asarray(img.convert("RGB"))
    assert arr[:, LABEL_W:].std() > 20
    with pytest.raises(InputError):
        make_gallery(tmp_path / "h.png", domains=0)
    assert not (tmp_path / "h.png").exists()


def test_outputs_load_with_the_package_readers(tmp_path):
    sources = pytest.importorskip("mitoscope.data.sources")
    p = make_patch_set(tmp_path / "p", n=6, domains=2, seed=2, atypical_fraction=0.5)
    cat = sources.load_catalog(p)
    df = pd.read_csv(p / "labels.csv")
    assert len(cat) == 6
    assert sorted(cat.label) == sorted(df.label.str.lower())
    assert set(cat.domain) == set(df.domain)
    r = make_region_set(tmp_path / "r", n=2, size=(512, 512), domains=1, seed=4)
    doc = json.loads((r / "annotations.json").read_text())
    rcat = sources.load_catalog(r / "annotations.json")
    assert len(rcat) == len(doc["annotations"])
    assert int((rcat.label == "mitotic figure").sum()) == len(pd.read_csv(r / "atypical.csv"))


def test_workers_and_progress_do_not_change_output(tmp_path):
    calls = []
    a = make_patch_set(tmp_path / "a", n=6, domains=2, seed=9)
    b = make_patch_set(
        tmp_path / "b", n=6, domains=2, seed=9, workers=2, progress=lambda d, t: calls.append((d, t))
    )
    assert _hashes(a) == _hashes(b)
    assert calls[-1] == (6, 6) and len(calls) == 6
    r1 = make_region_set(tmp_path / "r1", n=2, size=(200, 200), domains=2, seed=1)
    r2 = make_region_set(tmp_path / "r2", n=2, size=(200, 200), domains=2, seed=1, workers=2)
    assert _hashes(r1) == _hashes(r2)
    with pytest.raises(InputError, match="workers"):
        make_patch_set(tmp_path / "c", n=1, workers=0)
