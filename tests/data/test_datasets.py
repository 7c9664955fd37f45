"""PatchDataset: patch files, TIFF stack pages, slide points, masks, caching, reproducible RNG, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from mitoscope.data.datasets import PatchDataset, expert_matrix, read_stack_page
from mitoscope.data.patch_cache import PatchCache
from mitoscope.io.catalog import make_catalog
from mitoscope.io.slide_base import ArraySlide
from mitoscope.utils.errors import InputError


def to_tensor(rgb, mask, rng):
    """Identity-ish transform that records the first random draw (to test per-sample RNG)."""
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255.0
    x = x + float(rng.random()) * 0  # consume the rng
    m = None if mask is None else torch.from_numpy(mask)
    return x, m


def noise_transform(rgb, mask, rng):
    x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255.0
    return x + torch.from_numpy(rng.normal(size=x.shape).astype(np.float32)), None


def _png(path, value, size=24):
    arr = np.full((size, size, 3), value, np.uint8)
    arr[size // 2 - 3 : size // 2 + 3, size // 2 - 3 : size // 2 + 3] = 20  # a dark blob in the centre
    Image.fromarray(arr).save(path)
    return path


def test_patch_file_records_with_targets(tmp_path):
    _png(tmp_path / "a.png", 200)
    _png(tmp_path / "b.png", 100)
    cat = make_catalog(
        [
            {"image": "a.png", "label": "atypical", "experts": (1, 1, 0)},
            {"image": "b.png", "label": "normal", "experts": (0, 0)},
        ]
    )
    ds = PatchDataset(
        cat,
        transform=to_tensor,
        size=24,
        targets={"label", "experts", "hard"},
        root=tmp_path,
        source="cat.csv",
    )
    assert len(ds) == 2
    x, t = ds[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert float(t["label"]) == 1.0 and t["experts"].tolist() == [1.0, 1.0, 0.0] and int(t["hard"]) == 1
    _, t1 = ds[1]
    assert float(t1["label"]) == 0.0 and t1["experts"].tolist() == [0.0, 0.0, -1.0] and int(t1["hard"]) == 0
    assert t1["hard"].dtype == torch.int64


def test_hard_fn_and_expert_width(tmp_path):
    _png(tmp_path / "a.png", 200)
    cat = make_catalog([{"image": str(tmp_path / "a.png"), "label": "atypical", "experts": (1, 0, 1)}])
    ds = PatchDataset(
        cat, transform=to_tensor, size=24, targets={"hard", "experts"}, hard_fn=lambda v, lab: 2, n_experts=4
    )
    _, t = ds[0]
    assert int(t["hard"]) == 2 and t["experts"].tolist() == [1.0, 0.0, 1.0, -1.0]


def test_tiff_stack_page_records(tmp_path):
    stack = np.stack([np.full((16, 16, 3), 10 * i, np.uint8) for i in range(4)])
    tifffile.imwrite(tmp_path / "stack.tiff", stack)
    assert int(read_stack_page(tmp_path / "stack.tiff", 3)[0, 0, 0]) == 30
    cat = make_catalog([{"image": str(tmp_path / "stack.tiff"), "page": p} for p in (2, 0)])
    ds = PatchDataset(cat, transform=to_tensor, size=16, targets=set())
    assert float(ds[0][0][0, 0, 0]) == pytest.approx(20 / 255)
    assert float(ds[1][0][0, 0, 0]) == 0.0
    bad = make_catalog([{"image": str(tmp_path / "stack.tiff"), "page": 9}])
    with pytest.raises(InputError, match="page 9 does not exist"):
        PatchDataset(bad, transform=to_tensor, size=16, targets=set())[0]


def test_real_track2_stack_page(shared_data):
    path = shared_data / "slides" / "midog25_track2_stack_5.tiff"
    rgb = read_stack_page(path, 15)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8


def test_slide_point_records_read_at_mpp(tmp_path):
    arr = np.zeros((200, 200, 3), np.uint8)
    arr[90:110, 90:110] = 255  # a 20 px white square centred at (100, 100)
    slide = ArraySlide(arr, mpp=0.25)
    cat = make_catalog([{"slide": "s1", "x": 100, "y": 100, "label": "normal"}])
    ds = PatchDataset(cat, transform=to_tensor, size=40, mpp=0.5, targets={"label"}, slides={"s1": slide})
    x, _ = ds[0]
    assert x.shape == (3, 40, 40)
    # at 0.5 µm/px the 20 px square covers ~10 px in the middle
    assert float(x[0, 20, 20]) == pytest.approx(1.0) and float(x[0, 5, 5]) == 0.0
    assert 60 <= int((x[0] > 0.5).sum()) <= 150


def test_slide_point_from_file(tmp_path):
    arr = np.full((64, 64, 3), 50, np.uint8)
    Image.fromarray(arr).save(tmp_path / "slide.png")
    cat = make_catalog([{"slide": "slide.png", "x": 32, "y": 32, "label": "atypical"}])
    ds = PatchDataset(cat, transform=to_tensor, size=16, mpp=0.25, targets={"label"}, root=tmp_path)
    with pytest.warns(UserWarning):  # a plain image has no mpp: assumed
        x, _ = ds[0]
    assert x.shape == (3, 16, 16)


def test_mask_target_via_mask_fn(tmp_path):
    _png(tmp_path / "a.png", 220)
    cat = make_catalog([{"image": str(tmp_path / "a.png"), "label": "atypical"}])
    with pytest.raises(ValueError, match="mask_fn"):
        PatchDataset(cat, transform=to_tensor, size=24, targets={"label", "mask"})
    ds = PatchDataset(
        cat, transform=to_tensor, size=24, targets={"label", "mask"}, mask_fn=lambda rgb: rgb[..., 0] < 128
    )
    _, t = ds[0]
    assert t["mask"].shape == (24, 24) and t["mask"].dtype == torch.bool and int(t["mask"].sum()) == 36


def test_bad_file_error_names_file_and_row(tmp_path):
    _png(tmp_path / "ok.png", 1)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cat = make_catalog([{"image": str(tmp_path / "ok.png")}, {"image": str(tmp_path / "broken.png")}])
    ds = PatchDataset(cat, transform=to_tensor, size=24, targets=set(), source="train.csv")
    ds[0]
    with pytest.raises(InputError, match=r"train\.csv, row 1: .*broken\.png"):
        ds[1]
    missing = make_catalog([{"image": str(tmp_path / "nope.png")}])
    with pytest.raises(InputError, match=r"row 0: .*nope\.png: image file not found"):
        PatchDataset(missing, transform=to_tensor, size=24, targets=set())[0]
    nowhere = make_catalog([{"label": "normal"}])
    with pytest.raises(InputError, match="neither an image file nor a slide point"):
        PatchDataset(nowhere, transform=to_tensor, size=24, targets=set())[0]


def test_cache_avoids_second_decode(tmp_path):
    _png(tmp_path / "a.png", 10)
    cat = make_catalog([{"image": str(tmp_path / "a.png")}])
    cache = PatchCache(max_bytes=10_000)
    ds = PatchDataset(cat, transform=to_tensor, size=24, targets=set(), cache=cache)
    first = ds[0][0]
    (tmp_path / "a.png").unlink()  # a second decode would fail
    assert torch.equal(first, ds[0][0]) and cache.hits == 1 and cache.misses == 1


def test_per_sample_rng_is_reproducible_and_changes_with_epoch(tmp_path):
    _png(tmp_path / "a.png", 10)
    cat = make_catalog([{"image": str(tmp_path / "a.png")}] * 2)
    ds = PatchDataset(cat, transform=noise_transform, size=24, targets=set(), rng_seed=5)
    a0, b0 = ds[0][0], ds[1][0]
    assert torch.equal(a0, ds[0][0]) and not torch.equal(a0, b0)
    ds.set_epoch(1)
    assert not torch.equal(a0, ds[0][0])
    ds.set_epoch(0)
    assert torch.equal(a0, ds[0][0])
    # the same in DataLoader workers
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    (batch, _), *_ = list(loader)
    assert torch.equal(batch[0], a0)
    # (index, epoch) items reach persistent workers, which never see set_epoch
    from mitoscope.data.samplers import EpochTaggedSampler, ShardedSequentialSampler

    sampler = EpochTaggedSampler(ShardedSequentialSampler(2))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True
    )
    epoch0 = next(iter(loader))[0]
    sampler.set_epoch(1)
    epoch1 = next(iter(loader))[0]
    assert torch.equal(epoch0[0], a0) and not torch.equal(epoch1[0], a0)
    assert torch.equal(epoch1[0], ds[(0, 1)][0])


def test_expert_matrix_handles_missing_and_nan():
    m = expert_matrix([(1, None, float("nan")), (), (0, -1)])
    assert m.tolist() == [[1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [0.0, -1.0, -1.0]]


def test_patch_cache_budget():
    cache = PatchCache(max_bytes=100)
    cache.put("big", np.zeros(200, np.uint8))
    assert "big" not in cache
    cache.put("a", np.zeros(60, np.uint8))
    cache.put("b", np.zeros(60, np.uint8))
    assert "a" not in cache and "b" in cache and cache.nbytes == 60
    assert not cache.get("b").flags.writeable
