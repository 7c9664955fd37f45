from __future__ import annotations

import json

import pytest

from mitoscope.io.midogpp import catalog_to_midogpp, read_midogpp_json, write_midogpp_json
from mitoscope.utils.errors import InputError


def test_real_midogpp_counts(shared_data):
    ann = shared_data / "annotations"
    cat = read_midogpp_json(ann / "MIDOG++.json", xvalidation_csv=ann / "MIDOG++_datasets_xvalidation.csv")
    counts = cat["label"].value_counts()
    assert counts["mitotic figure"] == 11937
    assert counts["hard negative"] == 14349
    assert cat["slide"].nunique() == 503
    # the lymphoma naming differs between the two files; both map to one name and every case gets its domain
    assert "canine lymphosarcoma" not in set(cat["tumor"])
    assert (cat["scanner"] != "").all() and (cat["species"] != "").all()
    assert set(cat["split"]) == {"train", "test"}
    assert (cat["group"] == cat["slide"]).all()
    first = cat.iloc[0]
    assert (first["x"], first["y"]) == (4361.0, 371.0)
    assert cat["experts"].map(len).isin([2, 3]).all()
    three = cat[cat["experts"].map(len) == 3]
    assert three["hard"].any() and not cat[cat["experts"].map(len) == 2]["hard"].any()


def test_real_midog2021_json(shared_data):
    cat = read_midogpp_json(shared_data / "annotations" / "MIDOG2021.json")
    assert cat["label"].value_counts().to_dict() == {"hard negative": 2714, "mitotic figure": 1721}
    assert cat["slide"].nunique() == 150
    assert cat["source"].iloc[0] == "midog2021"
    assert set(cat["scanner"]) == {"Hamamatsu XR", "Hamamatsu S360", "Aperio ScanScope CS2"}


def test_write_read_roundtrip_keeps_extra_keys(tmp_path):
    images = [
        {
            "file_name": "001.tiff",
            "id": 1,
            "width": 1000,
            "height": 800,
            "tumor_type": "canine lymphosarcoma",
        },
        {"file_name": "002.tiff", "id": 2, "width": 900, "height": 700, "tumor_type": "human melanoma"},
    ]
    anns = [
        {"bbox": [10, 20, 60, 70], "category_id": 1, "image_id": 1, "labels": [1, 1, 2], "atypical": True},
        {"x": 500, "y": 400, "label": "hard negative", "image_id": 2, "labels": [2, 2]},
        {"x": 100, "y": 100, "label": "mitotic figure", "image_id": 2, "atypical": False, "note": "x"},
    ]
    path = write_midogpp_json(tmp_path / "m.json", images, anns, info={"description": "t"})
    raw = json.loads(path.read_text())
    assert raw["annotations"][2]["note"] == "x" and raw["info"] == {"description": "t"}
    cat = read_midogpp_json(path)
    assert cat[["slide", "x", "y", "label"]].values.tolist() == [
        ["001.tiff", 35.0, 45.0, "mitotic figure"],
        ["002.tiff", 500.0, 400.0, "hard negative"],
        ["002.tiff", 100.0, 100.0, "mitotic figure"],
    ]
    assert cat["experts"].tolist() == [(1, 1, 0), (0, 0), ()]
    assert cat["subclass"].tolist() == ["atypical", "", "normal"]
    assert cat["tumor"].tolist()[0] == "canine lymphoma"
    # catalog -> JSON -> catalog gives the same records back
    imgs2, anns2 = catalog_to_midogpp(cat)
    again = read_midogpp_json(write_midogpp_json(tmp_path / "m2.json", imgs2, anns2))
    cols = ["slide", "x", "y", "label", "experts", "subclass", "tumor"]
    assert again[cols].values.tolist() == cat[cols].values.tolist()


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json"):
        read_midogpp_json(bad)
    bad.write_text(
        json.dumps({"images": [], "annotations": [{"bbox": [0, 0, 1, 1], "image_id": 5, "category_id": 1}]})
    )
    with pytest.raises(InputError, match="annotation 0"):
        read_midogpp_json(bad)
    with pytest.raises(InputError, match="image_id"):
        write_midogpp_json(
            tmp_path / "o.json",
            [{"file_name": "a", "id": 1}],
            [{"x": 1, "y": 1, "label": "mitotic figure", "image_id": 3}],
        )
    with pytest.raises(InputError, match="label"):
        write_midogpp_json(
            tmp_path / "o.json",
            [{"file_name": "a", "id": 1}],
            [{"x": 1, "y": 1, "label": "cat", "image_id": 1}],
        )
    assert not (tmp_path / "o.json").exists()
