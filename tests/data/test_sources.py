from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mitoscope.data.sources import detect_source, load_catalog
from mitoscope.io.catalog import CATALOG_COLUMNS
from mitoscope.io.geojson import write_geojson
from mitoscope.utils.errors import InputError

# path under shared/data, format, rows, positives
REAL = [
    ("amibr", "amibr", 2894, 648),
    ("amibr/amibr_train.csv", "amibr", 2894, 648),
    ("atnorm-md", "atnorm-md", 2107, 219),
    ("annotations/MIDOG++.json", "midog++", 26286, 11937),
    ("annotations/MIDOG2021.json", "midog2021", 4435, 1721),
    ("annotations/MIDOG2021.sqlite", "sliderunner", 4435, 1721),
    ("annotations/MIDOG25_atypical_train.csv", "midog25", 11939, 1748),
    ("slides/midog25_track2_stack_5.tiff", "track2-stack", 16, 0),
]


@pytest.mark.parametrize(("rel", "fmt", "rows", "positives"), REAL)
def test_every_real_file(shared_data, rel, fmt, rows, positives):
    path = shared_data / rel
    assert detect_source(path) == fmt
    cat = load_catalog(path)
    assert list(cat.columns[: len(CATALOG_COLUMNS)]) == list(CATALOG_COLUMNS)
    assert len(cat) == rows and int((cat["target"] == 1).sum()) == positives
    assert cat.attrs["format"] == fmt


def test_midogpp_finds_its_xvalidation_csv(shared_data):
    cat = load_catalog(shared_data / "annotations" / "MIDOG++.json")
    assert cat["slide"].nunique() == 503 and (cat["scanner"] != "").all() and "split" in cat


def test_folders_and_ambiguity(shared_data, tmp_path):
    with pytest.raises(InputError, match="several datasets"):
        detect_source(shared_data / "annotations")
    cat = load_catalog(shared_data / "annotations", format="midog25")
    assert len(cat) == 11939
    for sub, value in (("Atypical", 10), ("Normal", 200)):
        (tmp_path / "set" / sub).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(tmp_path / "set" / sub / "a.png")
    assert detect_source(tmp_path / "set") == "class-folders"
    assert load_catalog(tmp_path / "set")["label"].tolist() == ["atypical", "normal"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no recognised dataset"):
        detect_source(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(InputError, match="unrecognised"):
        load_catalog(tmp_path / "x.csv")
    with pytest.raises(InputError, match="not found"):
        load_catalog(tmp_path / "nope.csv")


def test_geojson_and_dataframe_sources(tmp_path):
    det = pd.DataFrame(
        {"x": [1.0, 2.0], "y": [3.0, 4.0], "score": [0.9, 0.2], "label": ["mitotic figure", "hard negative"]}
    )
    path = write_geojson(tmp_path / "s1.geojson", det)
    cat = load_catalog(path)
    assert cat.attrs["format"] == "geojson"
    assert cat[["slide", "x", "label"]].values.tolist() == [
        ["s1", 1.0, "mitotic figure"],
        ["s1", 2.0, "hard negative"],
    ]
    assert load_catalog(cat) is cat
    bad = tmp_path / "b.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]},
         "properties": {"classification": {"name": "Tumor"}}}]}))  # fmt: skip
    with pytest.raises(InputError, match="Tumor"):
        load_catalog(bad)


def test_skip_bad_rows_reported(tmp_path):
    (tmp_path / "Normal").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "Normal" / "1.png")
    csv = tmp_path / "expert_votes.csv"
    csv.write_text(
        "Filename,Expert_1,Expert_2,Majority\n1.png,Normal,Normal,Normal\n2.png,Normal,Atypical,Atypical\n"
    )
    with pytest.raises(InputError, match=r"row 3.*2\.png"):
        load_catalog(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1"):
        cat = load_catalog(tmp_path, skip_bad=True)
    assert len(cat) == 1 and cat.attrs["skipped"] == [
        {"row": 3, "problem": cat.attrs["skipped"][0]["problem"]}
    ]


def test_agreement_statistics(tmp_path):
    from sklearn.metrics import cohen_kappa_score

    from mitoscope.data.sources import fleiss_kappa, pairwise_agreement, summarize_catalog

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    votes = [tuple(int(t) if rng.random() < 0.8 else 1 - int(t) for _ in range(3)) for t in truth]
    pairs = pairwise_agreement(votes)
    a = [v[0] for v in votes]
    b = [v[1] for v in votes]
    assert pairs[0]["pair"] == "expert1-expert2"
    assert pairs[0]["cohen_kappa"] == pytest.approx(cohen_kappa_score(a, b))
    assert pairs[0]["agreement"] == pytest.approx(np.mean(np.array(a) == np.array(b)))
    # Fleiss' κ: perfect agreement 1, and the textbook value for a small table
    assert fleiss_kappa([(1, 1, 1), (0, 0, 0)]) == 1.0
    assert fleiss_kappa([(1, 1, 1), (0, 0, 0), (1, 0, 1), (0, 0, 1)]) == pytest.approx(1 / 3)
    # missing third votes are allowed (MIDOG25: expert 3 only where 1 and 2 disagree)
    assert 0 < fleiss_kappa([(1, 1, None), (0, 0, None), (1, 0, 1), (0, 1, 0)]) < 1
    cat = load_catalog(_votes_csv_dir(tmp_path))
    summary = summarize_catalog(cat)
    assert summary["experts"]["max_experts"] == 2 and summary["hard"] == 1


def _votes_csv_dir(d):
    for sub in ("Normal", "Atypical"):
        (d / sub).mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "Normal" / "1.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "Atypical" / "2.png")
    (d / "expert_votes.csv").write_text(
        "Filename,Expert_1,Expert_2,Majority\n1.png,Normal,Normal,Normal\n2.png,Atypical,Normal,Atypical\n"
    )
    return d
