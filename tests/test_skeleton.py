"""The package skeleton: registry, checkpoint contract, atomic writes, array slide (catalog: io/test_catalog.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mitoscope.io.slide_base import ArraySlide, as_rgb_uint8
from mitoscope.models.checkpoint import ModelContract, load_model, read_checkpoint, save_checkpoint
from mitoscope.models.registry import create_model, register_model
from mitoscope.utils.atomic import atomic_path, write_text_atomic
from mitoscope.utils.errors import InputError


@register_model("_test_tiny_linear")
def _tiny(*, features: int = 4) -> nn.Module:
    return nn.Linear(features, 2)


def test_registry_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("_test_tiny_linear")(_tiny)


def test_create_unknown_model_names_known_ones() -> None:
    with pytest.raises(KeyError, match="_test_tiny_linear"):
        create_model("no-such-model")


def test_checkpoint_round_trip_keeps_contract(tmp_path: Path) -> None:
    model = create_model("_test_tiny_linear", features=3)
    contract = ModelContract(
        architecture="_test_tiny_linear",
        kwargs={"features": 3},
        task="classification",
        input_size=64,
        thresholds={"default": 0.37},
    )
    save_checkpoint(tmp_path / "m.pt", model, contract)
    loaded, got = load_model(tmp_path / "m.pt")
    assert got == contract
    x = torch.randn(2, 3)
    assert torch.equal(loaded(x), model.eval()(x))


def test_checkpoint_rejects_foreign_file(tmp_path: Path) -> None:
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(InputError, match="not a mitoscope checkpoint"):
        read_checkpoint(tmp_path / "x.pt")
    with pytest.raises(InputError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize(
    ("x", "y", "w", "h", "mpp"),
    [
        (0, 0, 16, 16, None),
        (-8, -8, 16, 16, None),
        (90, 70, 20, 20, None),
        (0, 0, 10, 10, 0.5),
        (60, 40, 30, 30, 1.0),
    ],
)
def test_array_slide_read_rect_matches_numpy(x: int, y: int, w: int, h: int, mpp: float | None) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    slide = ArraySlide(arr, mpp=0.25)
    out = slide.read_rect(x, y, w, h, mpp=mpp)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    if mpp is None:
        padded = np.pad(arr, ((20, 20), (20, 20), (0, 0)))
        assert np.array_equal(out, padded[y + 20 : y + 20 + h, x + 20 : x + 20 + w])
    else:
        factor = round(mpp / 0.25)
        inside = arr[y : y + h * factor, x : x + w * factor].astype(float)
        block = inside[: (inside.shape[0] // factor) * factor, : (inside.shape[1] // factor) * factor]
        mean = block.reshape(block.shape[0] // factor, factor, block.shape[1] // factor, factor, 3).mean(
            (1, 3)
        )
        assert np.abs(out[: mean.shape[0], : mean.shape[1]].astype(float) - mean).mean() < 20


def test_as_rgb_uint8_converts_grey_rgba_and_16bit() -> None:
    assert as_rgb_uint8(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)
    assert as_rgb_uint8(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)
    assert as_rgb_uint8(np.full((4, 4, 3), 65535, np.uint16)).max() == 255
    with pytest.raises(ValueError, match=r"bad\.png"):
        as_rgb_uint8(np.zeros((4, 4, 5)), source="bad.png")


class _Exploit:
    """Pickles to a call of ``os.system`` — what a malicious model file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "format": "mitoscope-checkpoint",
        "version": 1,
        "contract": {},
        "state_dict": {},
        "x": _Exploit(marker),
    }
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="refusing to load"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_checkpoint_of_other_architecture_or_version_gives_clear_error(tmp_path: Path) -> None:
    model = create_model("_test_tiny_linear", features=3)
    contract = ModelContract(
        architecture="_test_tiny_linear", kwargs={"features": 3}, task="classification", input_size=64
    )
    path = save_checkpoint(tmp_path / "m.pt", model, contract)
    payload = read_checkpoint(path)
    payload["contract"]["kwargs"] = {"features": 5}
    torch.save(payload, tmp_path / "wrong_shape.pt")
    with pytest.raises(InputError, match="do not fit architecture '_test_tiny_linear'"):
        load_model(tmp_path / "wrong_shape.pt")
    payload["contract"]["architecture"] = "no-such-architecture"
    torch.save(payload, tmp_path / "unknown.pt")
    with pytest.raises(InputError, match="cannot build architecture 'no-such-architecture'"):
        load_model(tmp_path / "unknown.pt")
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(InputError, match="version 99 is not supported"):
        read_checkpoint(tmp_path / "future.pt")
