"""Point masks on synthetic and real patches, the mask cache, overlay sheets."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch

from mitoscope.data.masks import (
    MaskCache,
    compute_mask,
    disk_mask,
    mask_overlay_sheet,
    nuclick_mask,
    point_mask,
)
from mitoscope.utils.optional import MissingDependencyError


def _synthetic(shape: str = "disk") -> tuple[np.ndarray, np.ndarray]:
    """Pink stroma, two pale nuclei, one dark 'figure' at the centre (and its truth mask)."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal((230, 170, 205), 6, (128, 128, 3)), 0, 255).astype(np.uint8)
    for cx, cy in ((20, 25), (105, 100)):
        img[disk_mask((128, 128), (cx, cy), 12)] = (150, 120, 190)  # pale interphase nuclei
    if shape == "disk":
        truth = disk_mask((128, 128), (63.5, 63.5), 11)
    else:  # anaphase: two bars above and below the centre, nothing at the centre
        truth = np.zeros((128, 128), bool)
        truth[46:53, 50:78] = True
        truth[75:82, 50:78] = True
    img[truth] = (55, 35, 115)
    return img, truth


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_point_mask_finds_the_central_figure() -> None:
    img, truth = _synthetic()
    m = point_mask(img)
    assert m.dtype == bool and m.shape == truth.shape
    assert _iou(m, truth) > 0.8


def test_point_mask_merges_anaphase_halves() -> None:
    img, truth = _synthetic("anaphase")
    m = point_mask(img)
    assert _iou(m, truth) > 0.7


def test_point_mask_other_point_and_fallback() -> None:
    img, _ = _synthetic()
    m = point_mask(img, (20, 25))
    assert m[25, 20] and not m[64, 64]
    blank = np.full((64, 64, 3), 240, np.uint8)
    fb = point_mask(blank)
    np.testing.assert_array_equal(fb, disk_mask((64, 64), (31.5, 31.5), 10.0))
    with pytest.raises(ValueError, match="outside"):
        point_mask(img, (500, 3))
    with pytest.raises(ValueError, match="RGB"):
        point_mask(img[..., 0])


def test_point_mask_on_real_amibr_patches(shared_data) -> None:
    """On real patches the mask is a nucleus-sized blob at the centre, darker than its surroundings."""
    from PIL import Image

    from mitoscope.data.stain import hematoxylin_channel

    files = sorted((shared_data / "amibr" / "images" / "Atypical").glob("*.png"))[:12]
    files += sorted((shared_data / "amibr" / "images" / "Normal").glob("*.png"))[:12]
    assert files
    at_centre = 0
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        m = point_mask(img)
        assert 40 <= m.sum() <= np.pi * 28**2, f
        h = hematoxylin_channel(img)
        assert h[m].mean() > h[~m].mean(), f
        yy, xx = np.nonzero(m)
        at_centre += np.hypot(xx - 63.5, yy - 63.5).min() <= 10
    assert at_centre >= 0.9 * len(files)


def test_compute_mask_methods() -> None:
    img, _ = _synthetic()
    assert compute_mask(img, "disk").sum() == disk_mask((128, 128), (63.5, 63.5), 10).sum()
    with pytest.raises(ValueError, match="unknown mask method"):
        compute_mask(img, "magic")


def test_nuclick_without_tiatoolbox_raises_clearly() -> None:
    pytest.importorskip("numpy")
    try:
        import tiatoolbox  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="tiatoolbox"):
            nuclick_mask(np.zeros((64, 64, 3), np.uint8))
    else:  # pragma: no cover - only where TIAToolbox is installed
        pytest.skip("tiatoolbox installed")


class _ClickBlob(torch.nn.Module):
    """Stands in for TIAToolbox's NuClick: a logit map that is high within 6 px of the click and at a far
    corner blob, so the adapter must keep the clicked component only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (5, 128, 128) and float(x[:, 3].sum()) == 1.0 and float(x[:, 4].sum()) == 0.0
        yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
        near = (yy - 64) ** 2 + (xx - 64) ** 2 <= 36
        corner = (yy < 10) & (xx < 10)
        return torch.where(near | corner, 5.0, -5.0)[None, None]


def test_nuclick_adapter_with_local_weights(tmp_path, monkeypatch) -> None:
    """The adapter's own logic (TIAToolbox itself cannot be installed beside this torch): the model is loaded
    once with the local weights file, the window is placed at the point and zero-padded, and the clicked
    component is kept."""
    import sys
    import types

    from mitoscope.data import masks as masks_mod

    calls = []

    def get_pretrained_model(name, pretrained_weights=None):
        calls.append((name, pretrained_weights))
        return _ClickBlob(), None

    arch = types.ModuleType("tiatoolbox.models.architecture")
    arch.get_pretrained_model = get_pretrained_model
    for name, mod in {
        "tiatoolbox": types.ModuleType("tiatoolbox"),
        "tiatoolbox.models": types.ModuleType("tiatoolbox.models"),
        "tiatoolbox.models.architecture": arch,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    masks_mod._nuclick_model.cache_clear()
    weights = tmp_path / "nuclick.pth"
    weights.write_bytes(b"weights")
    monkeypatch.setenv(masks_mod.NUCLICK_WEIGHTS_ENV, str(weights))
    try:
        img = np.full((96, 80, 3), 200, np.uint8)
        m1 = nuclick_mask(img, (70.0, 70.0))
        m2 = compute_mask(img, "nuclick", (70.0, 70.0))
        with pytest.raises(FileNotFoundError, match="NuClick weights"):
            nuclick_mask(img, weights=tmp_path / "missing.pth")
    finally:
        masks_mod._nuclick_model.cache_clear()
    assert calls == [(masks_mod.NUCLICK_MODEL, str(weights))]  # loaded once, from the local file
    np.testing.assert_array_equal(m1, m2)
    assert m1.shape == (96, 80)
    # the click's component, not the other blob (image rows and columns 6-15)
    np.testing.assert_array_equal(m1, disk_mask((96, 80), (70, 70), 6))


def test_mask_cache_round_trip(tmp_path) -> None:
    cache = MaskCache(tmp_path / "cache")
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    calls: list[int] = []

    def compute() -> np.ndarray:
        calls.append(1)
        return disk_mask((16, 16), (8, 8), 4)

    first = cache.get_or_compute(image, compute, page=0, method="hematoxylin")
    again = cache.get_or_compute(str(image), compute, page=0, method="hematoxylin")
    np.testing.assert_array_equal(first, again)
    assert len(calls) == 1
    cache.get_or_compute(image, compute, page=1, method="hematoxylin")
    cache.get_or_compute(image, compute, page=0, method="disk")
    assert len(calls) == 3
    assert cache.get(image, page=5) is None
    # a corrupt file is recomputed, not trusted
    cache.path(image, page=0, method="hematoxylin").write_bytes(b"garbage")
    cache.get_or_compute(image, compute, page=0, method="hematoxylin")
    assert len(calls) == 4
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_overlay_sheet(tmp_path) -> None:
    from PIL import Image

    img, truth = _synthetic()
    out = mask_overlay_sheet(
        [img] * 5, [truth] * 5, tmp_path / "s.png", ncols=2, scale=1, titles=list("AAAAN")
    )
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[1] == 2 * (128 + 2) + 2 and sheet.shape[0] == 3 * (128 + 2) + 2
    with pytest.raises(ValueError, match="masks"):
        mask_overlay_sheet([img], [], tmp_path / "t.png")


@pytest.mark.parametrize(
    "name", ["mitoscope.data.masks", "mitoscope.data.stain", "mitoscope.data.transforms"]
)
def test_docstring_examples(name) -> None:
    assert doctest.testmod(importlib.import_module(name)).failed == 0


def test_cached_mask_is_picklable_and_keyed_by_content(tmp_path) -> None:
    import pickle

    from mitoscope.data.masks import CachedMask

    fn = pickle.loads(pickle.dumps(CachedMask(tmp_path / "c")))
    img, _ = _synthetic()
    first = fn(img)
    np.testing.assert_array_equal(first, point_mask(img))
    np.testing.assert_array_equal(fn(img.copy()), first)
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 1
    fn(img[:64, :64].copy())
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 2
    with pytest.raises(ValueError, match="unknown mask method"):
        CachedMask(tmp_path, "magic")
