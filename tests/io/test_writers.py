from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
import tifffile

from mitoscope.io.geojson import read_geojson, write_geojson
from mitoscope.io.midog_outputs import (
    read_stack_page,
    read_track1_json,
    read_track2_json,
    read_track2_stack,
    write_track1_json,
    write_track2_json,
)
from mitoscope.io.midogpp import read_midogpp_json
from mitoscope.io.sliderunner import (
    catalog_to_detections,
    read_sliderunner,
    read_sliderunner_detections,
    write_sliderunner,
)
from mitoscope.utils.errors import InputError


def _detections(n: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.integers(0, 5000, n).astype(float) + 0.5 * (np.arange(n) % 2),
            "y": rng.integers(0, 5000, n).astype(float),
            "score": rng.random(n),
            "label": ["mitotic figure", "hard negative", "atypical"] * (n // 3),
            "p_atypical": rng.random(n),
        }
    )


def test_real_sliderunner_matches_json(shared_data):
    ann = shared_data / "annotations"
    db = read_sliderunner(ann / "MIDOG2021.sqlite")
    js = read_midogpp_json(ann / "MIDOG2021.json")
    assert db["label"].value_counts().to_dict() == {"hard negative": 2714, "mitotic figure": 1721}
    assert db["slide"].nunique() == 150
    # same records in the same order; the JSON's 50-px boxes round half-pixel centres
    assert (db["slide"].values == js["slide"].values).all() and (
        db["label"].values == js["label"].values
    ).all()
    assert np.abs(db["x"].values - js["x"].values).max() <= 0.5
    assert db["experts"].map(len).eq(3).all() and db["hard"].any()


def test_sliderunner_writer_same_schema_and_roundtrip(shared_data, tmp_path):
    dets = {"001.tiff": _detections(), "002.tiff": _detections(3, seed=1)}
    path = write_sliderunner(tmp_path / "p.sqlite", dets, slide_dims={"001.tiff": (7215, 5412)})

    def schema(p):
        with sqlite3.connect(p) as conn:
            return [
                r[0]
                for r in conn.execute("select sql from sqlite_master where sql is not null order by rowid")
            ]

    assert schema(path) == schema(shared_data / "annotations" / "MIDOG2021.sqlite")
    with sqlite3.connect(path) as conn:
        assert conn.execute("select width, height from Slides where filename='001.tiff'").fetchone() == (
            7215,
            5412,
        )
        assert conn.execute("select count(*) from Annotations where guid is null").fetchone() == (0,)
        names = [r[0] for r in conn.execute("select name from Classes order by uid")]
    assert names == ["mitotic figure", "not mitotic figure", "atypical"]
    back = read_sliderunner_detections(path)
    for slide, frame in dets.items():
        pd.testing.assert_frame_equal(back[slide], frame, check_dtype=False)
    cat = read_sliderunner(path)
    assert len(cat) == 9 and set(cat["label"]) == {"mitotic figure", "hard negative", "atypical"}
    # and the real database survives a catalog -> SlideRunner -> catalog trip unchanged
    real = read_sliderunner(shared_data / "annotations" / "MIDOG2021.sqlite")
    again = read_sliderunner(write_sliderunner(tmp_path / "r.sqlite", catalog_to_detections(real)))
    cols = ["slide", "x", "y", "label"]
    assert again[cols].values.tolist() == real[cols].values.tolist()


def test_sliderunner_bad_inputs(tmp_path):
    junk = tmp_path / "j.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(InputError, match=r"j\.sqlite"):
        read_sliderunner(junk)
    other = tmp_path / "o.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("create table t (a)")
    with pytest.raises(InputError, match="not a SlideRunner database"):
        read_sliderunner(other)
    with pytest.raises(InputError, match="columns"):
        write_sliderunner(tmp_path / "w.sqlite", {"a": pd.DataFrame({"x": [1]})})
    assert not (tmp_path / "w.sqlite").exists()


def test_real_track2_stack(shared_data):
    path = shared_data / "slides" / "midog25_track2_stack_5.tiff"
    cat = read_track2_stack(path)
    assert len(cat) == 16 and cat["page"].tolist() == list(range(16))
    assert (cat["label"] == "unlabelled").all()
    first = read_stack_page(path, 0)
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(read_stack_page(path, 5), tifffile.imread(path, key=5))
    with pytest.raises(InputError, match="page 16"):
        read_stack_page(path, 16)


def test_track2_json_roundtrip(tmp_path):
    probs = [0.1, 0.5, 0.97, 0.0]
    path = write_track2_json(tmp_path / "t2.json", probs)
    raw = json.loads(path.read_text())
    assert raw[0] == {"class": "normal", "confidence": 0.1} and raw[1]["class"] == "atypical"
    back = read_track2_json(path)
    assert back["p_atypical"].tolist() == probs and back["page"].tolist() == [0, 1, 2, 3]
    with pytest.raises(InputError, match="page 1"):
        write_track2_json(tmp_path / "bad.json", [0.2, 1.5])
    assert not (tmp_path / "bad.json").exists()


def test_track1_json_millimetres_roundtrip(tmp_path):
    dets = _detections()
    path = write_track1_json(tmp_path / "t1.json", dets, mpp=0.25)
    raw = json.loads(path.read_text())
    assert raw["type"] == "Multiple points" and raw["version"] == {"major": 1, "minor": 0}
    keep = dets[dets["label"] != "hard negative"].reset_index(drop=True)
    assert len(raw["points"]) == len(keep)
    first = raw["points"][0]
    assert first["name"] == "mitotic figure"
    assert first["point"] == pytest.approx([keep.x[0] * 0.25 / 1000, keep.y[0] * 0.25 / 1000, 0])
    back = read_track1_json(path, mpp=0.25)
    np.testing.assert_allclose(back[["x", "y", "score"]].values, keep[["x", "y", "score"]].values, atol=1e-6)
    with pytest.raises(InputError, match="mpp"):
        write_track1_json(tmp_path / "x.json", dets, mpp=0)


def test_geojson_roundtrip_and_qupath_shape(tmp_path):
    dets = _detections()
    dets["slide"] = "001.tiff"
    path = write_geojson(tmp_path / "d.geojson", dets, class_colors={"atypical": (1, 2, 3)})
    raw = json.loads(path.read_text())
    assert raw["type"] == "FeatureCollection" and len(raw["features"]) == 6
    props = raw["features"][2]["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"] == {"name": "atypical", "color": [1, 2, 3]}
    assert set(props["measurements"]) == {"score", "p_atypical"}
    back = read_geojson(path)
    pd.testing.assert_frame_equal(back, dets[back.columns.tolist()], check_dtype=False)
    assert back.columns.tolist() == ["x", "y", "score", "label", "p_atypical", "slide"]


def test_geojson_reads_qupath_exports_and_rejects_junk(tmp_path):
    qupath = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]},
             "properties": {"objectType": "annotation", "classification": {"name": "mitotic figure", "colorRGB": -1}}},
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 4]]]},
             "properties": {"objectType": "detection", "measurements": [{"name": "score", "value": 0.5}]}},
        ],
    }  # fmt: skip
    path = tmp_path / "q.geojson"
    path.write_text(json.dumps(qupath))
    back = read_geojson(path)
    assert back[["x", "y"]].values.tolist() == [[1, 2], [3, 4], [2, 2]]
    assert back["label"].tolist() == ["mitotic figure", "mitotic figure", ""]
    assert back["score"].iloc[2] == 0.5
    path.write_text('{"type": "Nope"}')
    with pytest.raises(InputError, match="not GeoJSON"):
        read_geojson(path)
