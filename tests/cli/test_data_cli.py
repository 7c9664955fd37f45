from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.io.geojson import read_geojson
from mitoscope.io.midog25 import MIDOG25_COLUMNS
from mitoscope.io.midogpp import read_midogpp_json
from mitoscope.io.sliderunner import read_sliderunner
from mitoscope.io.tiff_writer import write_tiled_tiff

runner = CliRunner()

EXPECTED = {
    "amibr": ("amibr", 2894, {"atypical": 648, "normal": 2246}),
    "atnorm-md": ("atnorm-md", 2107, {"atypical": 219, "normal": 1888}),
    "annotations/MIDOG++.json": ("midog++", 26286, {"hard negative": 14349, "mitotic figure": 11937}),
    "annotations/MIDOG2021.json": ("midog2021", 4435, {"hard negative": 2714, "mitotic figure": 1721}),
    "annotations/MIDOG2021.sqlite": ("sliderunner", 4435, {"hard negative": 2714, "mitotic figure": 1721}),
    "annotations/MIDOG25_atypical_train.csv": ("midog25", 11939, {"atypical": 1748, "normal": 10191}),
    "slides/midog25_track2_stack_5.tiff": ("track2-stack", 16, {"unlabelled": 16}),
}


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_info_json_on_every_real_file(shared_data, rel):
    result = runner.invoke(app, ["data", "info", str(shared_data / rel), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    fmt, rows, labels = EXPECTED[rel]
    assert (summary["format"], summary["rows"], summary["labels"]) == (fmt, rows, labels)
    if rel.startswith("annotations/MIDOG++"):
        assert summary["slides"] == 503
        assert 0.5 < summary["experts"]["fleiss_kappa"] < 0.9
    if rel == "amibr":
        assert summary["groups"] == 146 and summary["experts"]["max_experts"] == 3


def test_info_tables_and_errors(shared_data, tmp_path):
    result = runner.invoke(app, ["data", "info", str(shared_data / "amibr")])
    assert result.exit_code == 0, result.output
    assert "Fleiss" in result.stdout and "AMF multipolar" in result.stdout and "TUPAC16" in result.stdout
    bad = tmp_path / "wrong.csv"
    bad.write_text("file,slide,dataset,x,y,expert1_atypical\n")
    result = runner.invoke(app, ["data", "info", str(bad), "--format", "amibr"])
    assert result.exit_code == 1
    assert "wrong.csv" in result.output and "missing columns" in result.output
    assert "Traceback" not in result.output


def test_extract_patches_command(tmp_path):
    slides = tmp_path / "slides"
    write_tiled_tiff(
        slides / "201.tiff", np.full((400, 400, 3), 180, np.uint8), mpp=0.25, compression="deflate"
    )
    csv = tmp_path / "m.csv"
    csv.write_text(
        ",".join(MIDOG25_COLUMNS)
        + "\n1.png,201.tiff,200,200,human melanoma,S,O,Human,AMF,AMF,,AMF"
        + "\n2.png,201.tiff,390,5,human melanoma,S,O,Human,NMF,NMF,,NMF"
        + "\n3.png,201.tiff,999,5,human melanoma,S,O,Human,NMF,NMF,,NMF\n"
    )
    out = tmp_path / "patches"
    args = ["data", "extract-patches", str(csv), "--slides", str(slides), "--out", str(out), "--size", "64"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "outside the slide" in result.output and not out.exists()
    result = runner.invoke(app, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 patches" in result.stdout and "skipped 1" in result.output
    info = runner.invoke(app, ["data", "info", str(out / "patches.csv"), "--json"])
    assert json.loads(info.stdout)["labels"] == {"atypical": 1, "normal": 1}


def test_convert_midogpp_to_sliderunner_geojson_json_csv(shared_data, tmp_path):
    src = shared_data / "annotations" / "MIDOG2021.json"
    original = read_midogpp_json(src)
    cols = ["slide", "x", "y", "label"]
    db = tmp_path / "out.sqlite"
    result = runner.invoke(app, ["data", "convert", str(src), str(db)])
    assert result.exit_code == 0, result.output
    assert read_sliderunner(db)[cols].values.tolist() == original[cols].values.tolist()
    geo = tmp_path / "out.geojson"
    assert runner.invoke(app, ["data", "convert", str(src), str(geo)]).exit_code == 0
    back = read_geojson(geo)
    assert (
        back[["x", "y", "label", "slide"]].values.tolist()
        == original[["x", "y", "label", "slide"]].values.tolist()
    )
    js = tmp_path / "out.json"
    assert runner.invoke(app, ["data", "convert", str(db), str(js), "--to", "midogpp"]).exit_code == 0
    assert read_midogpp_json(js)[cols].values.tolist() == original[cols].values.tolist()
    csv = tmp_path / "out.csv"
    assert runner.invoke(app, ["data", "convert", str(src), str(csv)]).exit_code == 0
    info = json.loads(runner.invoke(app, ["data", "info", str(csv), "--json"]).stdout)
    assert info["rows"] == 4435
    result = runner.invoke(
        app, ["data", "convert", str(shared_data / "atnorm-md"), str(tmp_path / "x.sqlite")]
    )
    assert result.exit_code == 1 and "not points on a slide" in result.output
    assert not (tmp_path / "x.sqlite").exists()


def _one_error_line(result, *needles: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_info_on_a_real_slide(shared_data):
    svs = shared_data / "slides" / "cmu_small_region.svs"
    result = runner.invoke(app, ["data", "info", str(svs)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Aperio SVS, read by tifffile" in out and "2220 × 2967 px" in out
    assert "0.499 from the Aperio metadata" in out and "mm²" in out
    assert "256 px at 0.5 µm/px, overlap 64 px" in out and "`mitoscope detect`" in out
    summary = json.loads(runner.invoke(app, ["data", "info", str(svs), "--json"]).stdout)
    assert (summary["kind"], summary["width"], summary["height"], summary["mpp"]) == (
        "slide",
        2220,
        2967,
        0.499,
    )
    coarse = json.loads(runner.invoke(app, ["data", "info", str(svs), "--json", "--tile-size", "512"]).stdout)
    assert coarse["tiles"]["total"] < summary["tiles"]["total"]


def test_info_mixes_slides_and_datasets(shared_data, tmp_path):
    svs = shared_data / "slides" / "cmu_small_region.svs"
    stack = shared_data / "slides" / "midog25_track2_stack_5.tiff"  # a TIFF that is a dataset
    result = runner.invoke(app, ["data", "info", str(svs), str(stack), "--json"])
    assert result.exit_code == 0, result.output
    first, second = json.loads(result.stdout)
    assert first["kind"] == "slide" and second["format"] == "track2-stack"
    # A bad one among good ones: its error line, the others' summaries, exit 1.
    result = runner.invoke(app, ["data", "info", str(svs), str(tmp_path / "lost.svs")])
    assert (
        result.exit_code == 1
        and "2220 × 2967" in result.stdout
        and "lost.svs: slide file not found" in result.output
    )


def test_info_and_thumbnail_bad_slides(shared_data, tmp_path):
    import tifffile

    cut = tmp_path / "cut.svs"
    cut.write_bytes((shared_data / "slides" / "cmu_small_region.svs").read_bytes()[:300_000])
    fake = tmp_path / "fake.svs"
    fake.write_text("not a slide")
    nompp = tmp_path / "nompp.tif"
    tifffile.imwrite(nompp, np.full((300, 300, 3), 200, np.uint8), tile=(256, 256), metadata=None)
    cases = [(cut, ("cut.svs", "truncated")), (fake, ("fake.svs", "not a TIFF file")),
             (nompp, ("nompp.tif", "no resolution", "--mpp"))]  # fmt: skip
    for path, needles in cases:
        _one_error_line(runner.invoke(app, ["data", "info", str(path)]), *needles)
        out = tmp_path / f"{path.stem}.png"
        _one_error_line(runner.invoke(app, ["data", "thumbnail", str(path), str(out), "--mask"]), *needles)
        assert not out.exists()
    result = runner.invoke(app, ["data", "info", str(nompp), "--mpp", "0.5", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["mpp_source"] == "as given"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cut.svs",
        "fake.svs",
        "nompp.tif",
    ]  # nothing written


def test_thumbnail_command(shared_data, tmp_path):
    from PIL import Image

    svs = shared_data / "slides" / "cmu_small_region.svs"
    out = tmp_path / "cmu.png"
    result = runner.invoke(
        app, ["data", "thumbnail", str(svs), str(out), "--mask", "--tiles", "--size", "600"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "wrote" in result.stdout and "tissue outlined" in result.stdout and "detector tiles" in result.stdout
    )
    with Image.open(out) as im:
        assert im.size == (449, 600)
        drawn = np.asarray(im.convert("RGB"))
    assert np.all(drawn == (10, 92, 255), axis=2).sum() > 500  # the tissue outline
    _one_error_line(runner.invoke(app, ["data", "thumbnail", str(svs), str(tmp_path / "t.gif")]), "t.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmu.png"]
