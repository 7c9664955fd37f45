"""``mitoscope detect`` on bad input: absurd mpp, empty slides, model files that are not checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.io.tiff_writer import write_tiled_tiff

from .test_detect_cli import BLOBS, paint, save_blob_checkpoint


@pytest.fixture()
def checkpoint(tmp_path):
    return save_blob_checkpoint(tmp_path / "best.pt")


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("mpp", ["0", "-0.25", "nan", "25", "0.01"])
def test_absurd_mpp_option_fails_naming_the_slide(tmp_path, checkpoint, mpp):
    slide = write_tiled_tiff(tmp_path / "case.tiff", paint((256, 256), BLOBS[:1]), mpp=0.25, tile=128,
                             compression="deflate")  # fmt: skip
    out = tmp_path / "out"
    res = run(
        "detect",
        "--model",
        checkpoint,
        slide,
        "--out",
        out,
        "--device",
        "cpu",
        "--workers",
        "0",
        "--mpp",
        mpp,
    )
    assert res.exit_code == 1, res.output
    assert "case.tiff" in res.output and "mpp" in res.output and "not plausible" in res.output
    assert not (out / "case.done.json").exists()


def test_absurd_mpp_in_the_file_fails_and_mpp_option_rescues(tmp_path, checkpoint):
    # 50 px per cm in the resolution tags: 200 µm/px
    path = tmp_path / "coarse.tif"
    tifffile.imwrite(path, paint((256, 256), BLOBS[:1]), photometric="rgb", resolution=(50, 50),
                     resolutionunit="CENTIMETER")  # fmt: skip
    out = tmp_path / "out"
    res = run("detect", "--model", checkpoint, path, "--out", out, "--device", "cpu", "--workers", "0")
    assert res.exit_code == 1
    assert "coarse.tif" in res.output and "200" in res.output and "--mpp" in res.output
    res = run("detect", "--model", checkpoint, path, "--out", out, "--device", "cpu", "--workers", "0", "--mpp", "0.25",
              "--set", "tissue=false")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out / "coarse.csv")) == 1


@pytest.mark.parametrize("reader", ["thread", "process"])
def test_all_background_slide_gives_empty_outputs(tmp_path, checkpoint, reader):
    glass = np.full((600, 700, 3), 242, np.uint8)
    slide = write_tiled_tiff(tmp_path / "glass.tiff", glass, mpp=0.25, tile=128, compression="deflate")
    out = tmp_path / "out"
    res = run(
        "detect",
        "--model",
        checkpoint,
        slide,
        "--out",
        out,
        "--device",
        "cpu",
        "--workers",
        "1",
        "--set",
        f"reader={reader}",
    )
    assert res.exit_code == 0, res.output
    assert "no tissue" in res.output
    table = pd.read_csv(out / "glass.csv")
    assert len(table) == 0 and "x" in table.columns
    assert json.loads((out / "glass.midog.json").read_text())["points"] == []
    done = json.loads((out / "glass.done.json").read_text())
    assert done["n_detections"] == 0 and done["tiles_processed"] == 0 and done["tiles_total"] > 0


def test_black_padding_only_slide_gives_empty_outputs(tmp_path, checkpoint):
    slide = write_tiled_tiff(tmp_path / "black.tiff", np.zeros((300, 300, 3), np.uint8), mpp=0.25, tile=128,
                             compression="deflate")  # fmt: skip
    out = tmp_path / "out"
    res = run("detect", "--model", checkpoint, slide, "--out", out, "--device", "cpu", "--workers", "0")
    assert res.exit_code == 0, res.output
    assert (out / "black.done.json").is_file() and len(pd.read_csv(out / "black.csv")) == 0


def _not_checkpoints(tmp_path, checkpoint):
    files = {}
    (tmp_path / "text.pt").write_text("hello\nworld\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    files["text"] = tmp_path / "text.pt"
    files["empty"] = tmp_path / "empty.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "state_dict.pt")
    files["state_dict"] = tmp_path / "state_dict.pt"
    payload = torch.load(checkpoint, weights_only=False)
    payload["contract"] = {"x": 1}
    torch.save(payload, tmp_path / "bad_contract.pt")
    files["bad_contract"] = tmp_path / "bad_contract.pt"
    payload.pop("contract")
    torch.save(payload, tmp_path / "no_contract.pt")
    files["no_contract"] = tmp_path / "no_contract.pt"
    png = tmp_path / "picture.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    files["png"] = png
    return files


def test_model_that_is_not_a_checkpoint_gives_one_error_line(tmp_path, checkpoint):
    slide = write_tiled_tiff(tmp_path / "case.tiff", paint((256, 256), BLOBS[:1]), mpp=0.25, tile=128,
                             compression="deflate")  # fmt: skip
    for kind, model in _not_checkpoints(tmp_path, checkpoint).items():
        res = run(
            "detect", "--model", model, slide, "--out", tmp_path / "out", "--device", "cpu", "--workers", "0"
        )
        assert res.exit_code == 1, (kind, res.output)
        assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), kind
        line = one_error_line(res.output)
        assert model.name in line, (kind, line)
    assert not (tmp_path / "out").exists()
