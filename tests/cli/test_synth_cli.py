"""``mitoscope synth``: commands run, write what they say, and fail with one clear line."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from mitoscope.cli.main import app

runner = CliRunner()


def test_synth_help_lists_commands():
    res = runner.invoke(app, ["synth", "--help"])
    assert res.exit_code == 0
    for cmd in ("patches", "regions", "gallery"):
        assert cmd in res.output


def test_synth_patches(tmp_path):
    out = tmp_path / "p"
    res = runner.invoke(app, ["synth", "patches", str(out), "--n", "4", "--domains", "2", "--seed", "3"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "labels.csv")
    assert len(df) == 4
    assert len(list(out.rglob("*.png"))) == 4


def test_synth_regions_and_gallery(tmp_path):
    out = tmp_path / "r"
    res = runner.invoke(
        app,
        ["synth", "regions", str(out), "--n", "2", "--size", "300", "200", "--domains", "2", "--seed", "1"],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "annotations.json").read_text())
    assert [(i["width"], i["height"]) for i in doc["images"]] == [(300, 200), (300, 200)]
    g = tmp_path / "g.png"
    res = runner.invoke(app, ["synth", "gallery", str(g), "--domains", "1"])
    assert res.exit_code == 0, res.output
    assert g.read_bytes()[:4] == b"\x89PNG"


def test_synth_regions_extra_tissue(tmp_path):
    args = ["synth", "regions", "--n", "1", "--size", "256", "256", "--seed", "2"]
    res = runner.invoke(app, [*args[:2], str(tmp_path / "a"), *args[2:], "--extra-tissue", "0.5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*args[:2], str(tmp_path / "b"), *args[2:]])
    assert res.exit_code == 0, res.output
    tiff = "synth_001.tiff"
    assert (tmp_path / "a" / tiff).read_bytes() != (tmp_path / "b" / tiff).read_bytes()
    assert "--extra-tissue" in runner.invoke(app, ["synth", "regions", "--help"]).output


def test_synth_bad_arguments_one_line_no_output(tmp_path):
    cases = [
        ["synth", "patches", str(tmp_path / "a"), "--n", "0"],
        ["synth", "patches", str(tmp_path / "a"), "--n", "2", "--domains", "50"],
        ["synth", "regions", str(tmp_path / "a"), "--n", "1", "--size", "0", "100"],
        ["synth", "regions", str(tmp_path / "a"), "--size", "128", "128", "--extra-tissue", "2"],
        ["synth", "gallery", str(tmp_path / "a.png"), "--domains", "0"],
    ]
    for args in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert "Traceback" not in res.output
        assert res.output.strip().startswith("error:")
        assert len(res.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_synth_existing_output(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "x").write_text("keep")
    res = runner.invoke(app, ["synth", "patches", str(out), "--n", "1"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = runner.invoke(app, ["synth", "patches", str(out), "--n", "1", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "x").exists()


def test_synth_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    for args in (
        ["synth", "patches", str(blocker / "out"), "--n", "1"],
        ["synth", "regions", str(blocker / "out"), "--n", "1", "--size", "128", "128"],
        ["synth", "gallery", str(blocker / "g.png"), "--domains", "1"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, (args, res.output)
        assert res.output.strip().startswith("error:") and "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
