from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mitoscope.data.patch_extraction import extract_patches
from mitoscope.io.catalog import make_catalog
from mitoscope.io.catalog_csv import read_catalog_csv
from mitoscope.io.class_folders import read_class_folders
from mitoscope.io.midog25 import MIDOG25_COLUMNS, read_midog25_csv
from mitoscope.io.tiff_writer import write_tiled_tiff
from mitoscope.utils.errors import InputError


@pytest.fixture()
def slides(tmp_path):
    d = tmp_path / "slides"
    yy, xx = np.mgrid[0:600, 0:500]
    img = np.stack([xx % 256, yy % 256, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    write_tiled_tiff(d / "201.tiff", img, mpp=0.25, compression="deflate", tile=128)
    write_tiled_tiff(d / "sub" / "202.tiff", 255 - img, mpp=0.25, compression="deflate", tile=128)
    return d, img


def test_extract_from_midog25_csv(tmp_path, slides):
    d, img = slides
    csv = tmp_path / "m.csv"
    csv.write_text(
        ",".join(MIDOG25_COLUMNS)
        + "\n1.png,201.tiff,250,300,human melanoma,S,O,Human,AMF,AMF,,AMF"
        + "\n2.png,201.tiff,10,590,human melanoma,S,O,Human,NMF,NMF,,NMF"
        + "\n3.png,202.tiff,100,100,human melanoma,S,O,Human,NMF,AMF,NMF,NMF\n"
    )
    cat = read_midog25_csv(csv)
    out = extract_patches(cat, slides_dir=d, out_dir=tmp_path / "p", size=128)
    assert len(out) == 3
    first = np.asarray(Image.open(out["image"].iloc[0]))
    np.testing.assert_array_equal(first, img[236:364, 186:314])  # centred exactly
    edge = np.asarray(Image.open(out["image"].iloc[1]))
    assert (edge[:, :54] == 0).all() and (edge[74:] == 0).all()  # black padding past the border
    np.testing.assert_array_equal(edge[:74, 54:], img[526:600, 0:74])
    assert out["image"].iloc[0].endswith("Atypical/1.png")
    back = read_catalog_csv(tmp_path / "p" / "patches.csv")
    cols = ["slide", "x", "y", "label", "experts", "patch_id"]
    assert back[cols].values.tolist() == out[cols].values.tolist()
    assert sorted(read_class_folders(tmp_path / "p")["label"]) == ["atypical", "normal", "normal"]
    # resampled to another resolution
    half = extract_patches(cat, slides_dir=d, out_dir=tmp_path / "h", size=64, mpp=0.5)
    assert np.asarray(Image.open(half["image"].iloc[0])).shape == (64, 64, 3)


def test_bad_records_raise_or_skip_and_leave_nothing(tmp_path, slides):
    d, _ = slides
    cat = make_catalog(
        [
            {"slide": "201.tiff", "x": 50, "y": 50, "label": "normal"},
            {"slide": "201.tiff", "x": 900, "y": 50, "label": "normal"},
            {"slide": "missing.tiff", "x": 5, "y": 5, "label": "atypical"},
        ]
    )
    with pytest.raises(InputError, match="outside the slide"):
        extract_patches(cat, slides_dir=d, out_dir=tmp_path / "out", size=32)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    with pytest.warns(UserWarning, match="skipped 2"):
        out = extract_patches(cat, slides_dir=d, out_dir=tmp_path / "out", size=32, skip_bad=True)
    assert len(out) == 1 and len(out.attrs["skipped"]) == 2
    # an unrelated non-empty folder is never overwritten
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="choose a new folder"):
        extract_patches(cat, slides_dir=d, out_dir=other, size=32, skip_bad=True)
    assert (other / "keep.txt").exists()


def test_slide_without_mpp(tmp_path):
    import tifffile

    d = tmp_path / "s"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.zeros((100, 100, 3), np.uint8), tile=(64, 64), metadata=None)
    cat = make_catalog([{"slide": "a.tif", "x": 50, "y": 50, "label": "normal"}])
    with pytest.raises(InputError, match="--mpp"):
        extract_patches(cat, slides_dir=d, out_dir=tmp_path / "o", size=16)
    out = extract_patches(cat, slides_dir=d, out_dir=tmp_path / "o", size=16, slide_mpp=0.25)
    assert len(out) == 1
