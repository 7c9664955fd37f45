"""``classify_patches``: the library behind ``mitoscope classify`` (inputs, CSV, Track 2 JSON)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from mitoscope.data.sources import load_patch_input
from mitoscope.data.stain_normalization import reference_normalizer
from mitoscope.inference.patches import classify_patches
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.models.registry import register_model

ARCH = "test_patches_mean_red"


class _MeanRed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.k * x[:, 0].mean((1, 2))
        return {"logits": logits, "prob": torch.sigmoid(logits)}


with contextlib.suppress(ValueError):  # registered already
    register_model(ARCH)(lambda: _MeanRed())


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    contract = ModelContract(architecture=ARCH, kwargs={}, task="classification", input_size=16)
    return save_checkpoint(tmp_path / "m.pt", _MeanRed().eval(), contract)


def test_a_stack_gives_pages_and_the_track2_json(tmp_path: Path, model: Path) -> None:
    stack = tmp_path / "stack.tiff"
    tifffile.imwrite(
        stack, np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), np.uint8), photometric="rgb"
    )
    res = classify_patches([stack], tmp_path / "p.csv", model=model, device="cpu", precision="fp32")
    assert list(res.table.columns) == ["file", "page", "p_atypical", "label"]
    assert res.table["page"].tolist() == [0, 1, 2] and res.track2_json == tmp_path / "p.json"
    track2 = json.loads(res.track2_json.read_text())
    assert [r["class"] for r in track2] == res.table["label"].tolist()
    assert pd.read_csv(res.csv)["p_atypical"].round(5).tolist() == res.table["p_atypical"].round(5).tolist()


def test_folders_unreadable_images_and_bad_arguments(tmp_path: Path, model: Path) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(folder / "sub" / "b.png")
    (folder / "broken.png").write_text("no")
    res = classify_patches([folder], tmp_path / "p.csv", model=model, device="cpu", threshold=0.9)
    assert [Path(f).name for f in res.table["file"]] == ["a.png", "b.png"]
    assert [p.name for p, _ in res.unreadable] == ["broken.png"] and res.track2_json is None
    assert res.n_atypical == 1 and res.adapted_on is None
    with pytest.raises(ValueError, match="Track 2 TIFF stack"):
        classify_patches([folder], tmp_path / "q.csv", model=model, track2_json=tmp_path / "q.json")
    with pytest.raises(ValueError, match="rule must be one of"):
        classify_patches([folder], tmp_path / "q.csv", model=model, rule="vote")
    with pytest.raises(FileNotFoundError, match="input not found"):
        load_patch_input(tmp_path / "nothing")
    with pytest.raises(ValueError, match="need stain_normalize"):
        reference_normalizer(None, folder)
    assert not (tmp_path / "q.csv").exists()
