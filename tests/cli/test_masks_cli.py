"""``mitoscope data masks``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from mitoscope.cli.main import app

runner = CliRunner()


def test_masks_on_a_plain_folder(tmp_path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        img = np.clip(rng.normal(220, 10, (64, 64, 3)), 0, 255).astype(np.uint8)
        img[26:38, 26:38] = (50, 30, 110)
        Image.fromarray(img).save(folder / f"p{i}.png")
    out = tmp_path / "sheet.png"
    res = runner.invoke(
        app, ["data", "masks", str(folder), "--out", str(out), "--n", "2", "--cache", str(tmp_path / "c")]
    )
    assert res.exit_code == 0, res.output
    assert out.is_file() and "2 patches" in res.output
    assert list((tmp_path / "c").rglob("*.npy"))


def test_masks_on_real_amibr_csv(tmp_path, shared_data, monkeypatch) -> None:
    out = tmp_path / "sheet.png"
    monkeypatch.chdir(shared_data)
    src = Path("amibr") / "amibr_train.csv"  # relative, as in the README's example
    res = runner.invoke(app, ["data", "masks", str(src), "--out", str(out), "--n", "4", "--ncols", "2"])
    assert res.exit_code == 0, res.output
    w, h = Image.open(out).size
    assert (w, h) == (2 * (256 + 2) + 2, 2 * (256 + 2) + 2)


def test_masks_errors_are_one_line(tmp_path) -> None:
    res = runner.invoke(app, ["data", "masks", str(tmp_path / "missing"), "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 1 and "no such file" in res.output and "Traceback" not in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["data", "masks", str(empty), "--out", str(tmp_path / "s.png")])
    assert res.exit_code == 1 and "error" in res.output
    res = runner.invoke(app, ["data", "masks", str(empty), "--out", str(tmp_path / "s.png"), "--method", "x"])
    assert res.exit_code == 2
