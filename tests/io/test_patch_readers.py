from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from mitoscope.io.amibr import read_amibr_csv
from mitoscope.io.catalog import make_catalog
from mitoscope.io.catalog_csv import read_catalog_csv, write_catalog_csv
from mitoscope.io.class_folders import read_atnorm_votes, read_class_folders
from mitoscope.io.midog25 import MIDOG25_COLUMNS, read_midog25_csv
from mitoscope.utils.errors import InputError


def test_real_amibr(shared_data):
    cat = read_amibr_csv(shared_data / "amibr" / "amibr_train.csv")
    assert len(cat) == 2894
    assert (cat["label"] == "atypical").sum() == 648
    assert cat["group"].nunique() == 146 and (cat["group"] == cat["slide"]).all()
    assert set(cat["domain"]) == {"MIDOG21", "TUPAC16"}
    assert cat["experts"].map(len).eq(3).all()
    assert "AMF multipolar" in set(cat["subclass"])
    # the subclass always agrees with the final label
    assert (cat["subclass"].str.startswith("AMF") == (cat["label"] == "atypical")).all()
    assert all(p.endswith(".png") for p in cat["image"].head())


def test_real_atnorm_votes_and_folders(shared_data):
    root = shared_data / "atnorm-md"
    cat = read_atnorm_votes(root / "expert_votes.csv")
    assert len(cat) == 2107 and (cat["label"] == "atypical").sum() == 219
    assert cat["experts"].map(len).eq(5).all()
    assert (cat["group"] == cat["image"]).all()
    folders = read_class_folders(root)
    assert len(folders) == 2107 and (folders["label"] == "atypical").sum() == 219
    # the file is found in the folder that holds it, and that folder agrees with the majority vote
    assert (cat["image"].str.contains("/Atypical/") == (cat["label"] == "atypical")).all()


def test_real_midog25(shared_data):
    cat = read_midog25_csv(shared_data / "annotations" / "MIDOG25_atypical_train.csv")
    assert len(cat) == 11939 and (cat["label"] == "atypical").sum() == 1748
    assert (cat["image"] == "").all() and cat["slide"].str.endswith(".tiff").all()
    assert "canine lymphoma" in set(cat["tumor"])
    agree = cat[cat["experts"].map(lambda v: v[2] is None)]
    assert not agree["hard"].any()


def _png(path, value=100, shape=(8, 8, 3), dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype)).save(path)


def test_midog25_with_patch_folder_and_missing_files(tmp_path):
    header = ",".join(MIDOG25_COLUMNS)
    body = "\n".join(
        f"{i}.png,201.tiff,{10 * i},{20 * i},human melanoma,S,O,Human,AMF,NMF,AMF,AMF" for i in (1, 2, 3)
    )
    csv = tmp_path / "m.csv"
    csv.write_text(header + "\n" + body + "\n")
    _png(tmp_path / "imgs" / "a" / "1.png")
    _png(tmp_path / "imgs" / "2.png")
    with pytest.raises(InputError, match=r"m\.csv, row 4.*3\.png"):
        read_midog25_csv(csv, images_dir=tmp_path / "imgs")
    with pytest.warns(UserWarning, match="skipped 1"):
        cat = read_midog25_csv(csv, images_dir=tmp_path / "imgs", skip_bad=True)
    assert len(cat) == 2 and cat.attrs["skipped"][0]["row"] == 4
    assert cat["image"].iloc[0].endswith("a/1.png") and cat["patch_id"].tolist() == ["1.png", "2.png"]


def test_wrong_columns_and_bad_votes(tmp_path):
    bad = tmp_path / "wrong.csv"
    bad.write_text("file,slide\nx.png,s\n")
    with pytest.raises(InputError, match=r"wrong\.csv.*missing columns"):
        read_amibr_csv(bad)
    with pytest.raises(InputError, match="missing columns"):
        read_midog25_csv(bad)
    with pytest.raises(InputError, match="Filename"):
        read_atnorm_votes(bad)
    votes = tmp_path / "v.csv"
    votes.write_text("Filename,Expert_1,Majority\n1.png,Maybe,Normal\n")
    _png(tmp_path / "Normal" / "1.png")
    with pytest.raises(InputError, match=r"row 2.*Maybe"):
        read_atnorm_votes(votes)
    # a file listed twice would be dropped from scoring (its match is ambiguous): named with both rows instead
    votes.write_text("Filename,Expert_1,Majority\n1.png,Normal,Normal\n1.png,Atypical,Atypical\n")
    with pytest.raises(InputError, match=r"row 3.*'1.png' is listed again \(first on row 2\)"):
        read_atnorm_votes(votes)
    with pytest.raises(InputError, match="not found"):
        read_amibr_csv(tmp_path / "absent.csv")


def test_class_folders_any_depth_and_empty(tmp_path):
    _png(tmp_path / "a" / "b" / "Atypical" / "1.png")
    _png(tmp_path / "a" / "Normal" / "x" / "2.jpg".replace(".jpg", ".png"))
    _png(tmp_path / "a" / "other" / "3.png")
    cat = read_class_folders(tmp_path)
    assert sorted(cat["label"]) == ["atypical", "normal"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        read_class_folders(empty)


def test_catalog_csv_roundtrip_relative_paths(tmp_path):
    _png(tmp_path / "Normal" / "p.png")
    cat = make_catalog(
        [
            {
                "image": "Normal/p.png",
                "label": "normal",
                "experts": (0, 1, None),
                "subclass": "NMF metaphase",
            },
            {"slide": "s.tiff", "x": 1.5, "y": 2, "label": "mitotic figure", "experts": (1,), "page": 3},
        ]
    )
    path = write_catalog_csv(tmp_path / "c.csv", cat)
    back = read_catalog_csv(path)
    assert back["experts"].tolist() == [(0, 1, None), (1,)]
    assert back["image"].iloc[0] == str(tmp_path / "Normal" / "p.png")
    cols = ["slide", "x", "y", "label", "target", "hard", "page", "subclass", "group"]
    assert back[cols].astype(str).values.tolist() == cat[cols].astype(str).values.tolist()
    shutil.rmtree(tmp_path / "Normal")
    with pytest.raises(InputError, match="row 2"):
        read_catalog_csv(path)
