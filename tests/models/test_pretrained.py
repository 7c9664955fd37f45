"""The bundled-model file format: export, checked load, and the errors a damaged or foreign file gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mitoscope.models.checkpoint import ModelContract, is_bundle_path, load_model
from mitoscope.models.pretrained import (
    bundled_path,
    export_bundle,
    load_bundle,
)
from mitoscope.models.registry import register_model
from mitoscope.utils.errors import InputError

ARCH = "test_pretrained_tiny"


class _Tiny(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(self.bn(self.conv(x)).mean(dim=(2, 3)))[:, 0]
        return {"logits": logits, "prob": torch.sigmoid(logits)}


try:

    @register_model(ARCH)
    def _build(*, width: int = 4) -> nn.Module:
        return _Tiny(width)

except ValueError:
    pass


def _export(tmp_path: Path, *, half: bool = True) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = _Tiny().eval()
    contract = ModelContract(ARCH, {"width": 4}, "classification", input_size=16)
    path = export_bundle(model, contract, tmp_path, "tiny", card="# tiny\n", half=half)
    return model, path


def test_round_trip_float32_is_exact_and_float16_close(tmp_path: Path) -> None:
    model, path = _export(tmp_path / "fp32", half=False)
    x = torch.rand(2, 3, 16, 16)
    loaded, contract = load_bundle(path)
    assert contract.architecture == ARCH and contract.input_size == 16
    assert torch.equal(loaded(x)["prob"], model(x)["prob"])
    _, half_path = _export(tmp_path / "fp16")
    info = json.loads(half_path.read_text())
    assert info["dtype"] == "float16" and len(info["sha256"]) == 64
    loaded16, _ = load_bundle(half_path)
    assert next(loaded16.parameters()).dtype == torch.float32
    assert torch.allclose(loaded16(x)["prob"], model(x)["prob"], atol=2e-3)
    assert (half_path.with_suffix(".md")).read_text() == "# tiny\n"


def test_load_model_takes_the_files_by_path(tmp_path: Path) -> None:
    _, path = _export(tmp_path)
    for spec in (path, path.with_suffix(".safetensors")):
        assert is_bundle_path(spec)
        _, contract = load_model(spec)
        assert contract.architecture == ARCH


def test_damaged_weights_are_refused(tmp_path: Path) -> None:
    _, path = _export(tmp_path)
    weights = path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="do not match their contract"):
        load_bundle(path)


def test_weights_that_do_not_fit_the_contract_are_refused(tmp_path: Path) -> None:
    _, path = _export(tmp_path)
    info = json.loads(path.read_text())
    info["contract"]["kwargs"]["width"] = 6
    path.write_text(json.dumps(info))
    with pytest.raises(InputError, match=r"do not fit architecture .*shapes .*\(4,\) vs \(6,\)"):
        load_bundle(path)


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"\x89PNG\r\n\x1a\n" + b"\0" * 32])
def test_a_file_that_is_not_a_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a mitoscope model"):
        load_model(path)


def test_a_json_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    path.with_suffix(".json").write_text('{"format": "something else"}')
    with pytest.raises(InputError, match="not a mitoscope model"):
        load_model(path)


def test_unknown_bundled_name_lists_the_bundled_ones() -> None:
    with pytest.raises(
        InputError, match=r"no bundled model named 'nope'; bundled models: .*mitoscope-classifier"
    ):
        bundled_path("nope")
    with pytest.raises(InputError, match="bundled models"):
        load_model("nope")
