from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from mitoscope.data.stain import STAIN_TTA_SCALES, stain_views
from mitoscope.data.transforms import build_patch_transform, tta_views
from mitoscope.inference.classify import Classifier
from mitoscope.io.catalog import make_catalog
from mitoscope.io.slide_base import ArraySlide
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from tiny_models import TINY_CLASSIFIER, tiny_classifier

ARCH = TINY_CLASSIFIER
SIZE = 32
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _contract(threshold: float = 0.5, config: dict | None = None) -> ModelContract:
    return ModelContract(
        architecture=ARCH,
        kwargs={},
        task="classification",
        input_size=SIZE,
        mpp=0.5,
        mean=MEAN,
        std=STD,
        thresholds={"default": threshold},
        config=config or {},
    )


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "model.pt", tiny_classifier(0), _contract(0.45))


@pytest.fixture()
def patches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(7)]


def _reference(
    model: nn.Module, images: list[np.ndarray], *, tta: bool = False, crop: int | None = None
) -> np.ndarray:
    tf = build_patch_transform(train=False, size=SIZE, mean=MEAN, std=STD, crop=crop)
    x = torch.stack([tf(im)[0] for im in images])
    with torch.no_grad():
        if not tta:
            return model(x)["prob"].numpy()
        logits = torch.stack([torch.logit(model(v)["prob"].clamp(1e-6, 1 - 1e-6)) for v in tta_views(x)])
        return torch.sigmoid(logits.mean(0)).numpy()


def test_predict_arrays_matches_model_and_batching(ckpt: Path, patches: list[np.ndarray]) -> None:
    clf = Classifier.from_path(ckpt, precision="fp32")
    assert clf.threshold == pytest.approx(0.45) and clf.input_size == SIZE and clf.mpp == 0.5
    probs = clf.predict_arrays(patches, batch_size=3)
    assert probs.shape == (7,) and ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs, _reference(tiny_classifier(0), patches), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.predict_arrays(patches, batch_size=64), probs, rtol=1e-5, atol=1e-6)
    full = clf.predict_arrays_full(patches)
    assert full.label.tolist() == (probs >= 0.45).astype(int).tolist()
    # grey and RGBA input is accepted
    grey = clf.predict_arrays([patches[0][..., 0], np.dstack([patches[0], np.full((48, 48), 255, np.uint8)])])
    assert grey.shape == (2,)
    assert clf.predict_arrays([]).shape == (0,)


def test_tta_averages_eight_views(ckpt: Path, patches: list[np.ndarray]) -> None:
    plain = Classifier.from_path(ckpt, precision="fp32").predict_arrays(patches)
    tta = Classifier.from_path(ckpt, tta=True, precision="fp32").predict_arrays(patches)
    np.testing.assert_allclose(tta, _reference(tiny_classifier(0), patches, tta=True), rtol=1e-5, atol=1e-6)
    assert not np.allclose(tta, plain)
    by_prob = Classifier.from_path(ckpt, tta=True, tta_reduce="prob", precision="fp32").predict_arrays(
        patches
    )
    tf = build_patch_transform(train=False, size=SIZE, mean=MEAN, std=STD)
    x = torch.stack([tf(im)[0] for im in patches])
    with torch.no_grad():
        mean_prob = torch.stack([tiny_classifier(0)(v)["prob"] for v in tta_views(x)]).mean(0).numpy()
    np.testing.assert_allclose(by_prob, mean_prob, rtol=1e-6, atol=1e-7)
    # a dihedral view of an input gets the same TTA prediction (patches at the model size: resampling to
    # 8-bit pixels is rotation-equivariant only up to rounding)
    square = [p[:SIZE, :SIZE] for p in patches]
    rotated = [np.rot90(p).copy() for p in square]
    clf = Classifier.from_path(ckpt, tta=True, precision="fp32")
    np.testing.assert_allclose(clf.predict_arrays(rotated), clf.predict_arrays(square), atol=1e-5)


def test_stain_tta_averages_restained_dihedral_views(ckpt: Path, patches: list[np.ndarray]) -> None:
    clf = Classifier.from_path(ckpt, tta=True, stain_tta=True, precision="fp32")
    got = clf.predict_arrays(patches)
    pixels = torch.stack(
        [
            build_patch_transform(train=False, size=SIZE, mean=MEAN, std=STD, normalize=False)(p)[0]
            for p in patches
        ]
    )
    x = [((v.permute(0, 3, 1, 2).float() / 255) - MEAN[0]) / STD[0] for v in stain_views(pixels)]
    with torch.no_grad():
        logits = [
            torch.logit(tiny_classifier(0)(view)["prob"].clamp(1e-6, 1 - 1e-6))
            for v in x
            for view in tta_views(v)
        ]
    assert len(logits) == 8 * (1 + len(STAIN_TTA_SCALES))
    np.testing.assert_allclose(got, torch.sigmoid(torch.stack(logits).mean(0)).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(
        got, Classifier.from_path(ckpt, tta=True, precision="fp32").predict_arrays(patches)
    )
    stain_only = Classifier.from_path(ckpt, stain_tta=True, precision="fp32").predict_arrays(patches)
    assert not np.allclose(stain_only, got)
    # normalised float batches cannot be re-stained
    with pytest.raises(ValueError, match="uint8"):
        clf.predict_batch(torch.zeros(1, 3, SIZE, SIZE))


def test_bf16_precision_is_close_to_fp32(ckpt: Path, patches: list[np.ndarray]) -> None:
    exact = Classifier.from_path(ckpt, precision="fp32").predict_arrays(patches)
    bf16 = Classifier.from_path(ckpt, precision="bf16")
    assert bf16.precision == "bf16"
    probs = bf16.predict_arrays(patches)
    assert probs.dtype == np.float64 or probs.dtype == np.float32
    np.testing.assert_allclose(probs, exact, atol=0.02)
    assert not np.array_equal(probs, exact)  # it really ran in bf16


def test_precision_choices(ckpt: Path) -> None:
    from mitoscope.utils.precision import resolve_precision

    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") in ("bf16", "fp32")
    with pytest.raises(ValueError, match="needs a GPU"):
        Classifier.from_path(ckpt, precision="fp16")


def test_contract_crop_is_applied(tmp_path: Path, patches: list[np.ndarray]) -> None:
    path = save_checkpoint(
        tmp_path / "c.pt", tiny_classifier(0), _contract(config={"data": {"augment": {"crop": 40}}})
    )
    probs = Classifier.from_path(path, precision="fp32").predict_arrays(patches)
    np.testing.assert_allclose(probs, _reference(tiny_classifier(0), patches, crop=40), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_predict_catalog_files_and_stack(
    tmp_path: Path, ckpt: Path, patches: list[np.ndarray], num_workers: int
) -> None:
    files = []
    for i, p in enumerate(patches[:4]):
        files.append(tmp_path / f"p{i}.png")
        Image.fromarray(p).save(files[-1])
    stack = tmp_path / "stack.tiff"
    tifffile.imwrite(stack, np.stack(patches[4:]))
    rows = [{"image": str(f), "label": "normal"} for f in files]
    rows += [{"image": str(stack), "page": k} for k in range(3)]
    catalog = make_catalog(rows)
    catalog.index = pd.RangeIndex(10, 17)
    clf = Classifier.from_path(ckpt)
    out = clf.predict_catalog(catalog, batch_size=3, num_workers=num_workers)
    assert list(out.index) == list(catalog.index)
    assert {"image", "page", "p_atypical", "label", "votes"} <= set(out.columns)
    np.testing.assert_allclose(out["p_atypical"], clf.predict_arrays(patches), rtol=1e-5, atol=1e-6)
    assert out["label"].tolist() == ["atypical" if p >= 0.45 else "normal" for p in out["p_atypical"]]
    assert out["page"].tolist() == [-1] * 4 + [0, 1, 2]


def test_predict_catalog_bad_file_names_row(tmp_path: Path, ckpt: Path) -> None:
    catalog = make_catalog([{"image": str(tmp_path / "missing.png")}])
    with pytest.raises(ValueError, match=r"missing\.png"):
        Classifier.from_path(ckpt).predict_catalog(catalog)


def test_classify_points_reads_at_contract_mpp(ckpt: Path) -> None:
    rng = np.random.default_rng(1)
    region = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    slide = ArraySlide(region, mpp=0.25)  # the classifier wants 0.5 µm/px: 64 px of slide per 32 px crop
    points = pd.DataFrame({"x": [100.0, 20.0, 235.0], "y": [100.0, 150.0, 5.0]})
    clf = Classifier.from_path(ckpt)
    probs, labels = clf.classify_points(slide, points, batch_size=2, return_labels=True)
    crops = [slide.read_centered(x, y, SIZE, mpp=0.5) for x, y in zip(points.x, points.y, strict=True)]
    np.testing.assert_allclose(probs, clf.predict_arrays(crops), rtol=1e-5, atol=1e-6)
    assert labels.tolist() == (probs >= 0.45).astype(int).tolist()
    assert clf.classify_points(slide, points.iloc[:0]).shape == (0,)
    with pytest.raises(ValueError, match="'y'"):
        clf.classify_points(slide, points[["x"]])


def test_run_directory_ensemble(tmp_path: Path, patches: list[np.ndarray]) -> None:
    run = tmp_path / "run"
    for k in range(3):
        save_checkpoint(run / f"fold_{k}" / "best.pt", tiny_classifier(k), _contract(0.5))
    clf = Classifier.from_path(run, precision="fp32")
    assert len(clf.ensemble) == 3 and clf.ensemble.rule == "majority"
    full = clf.predict_arrays_full(patches)
    refs = np.stack([_reference(tiny_classifier(k), patches) for k in range(3)], axis=1)
    np.testing.assert_allclose(full.member_probs, refs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.prob, refs.mean(1), rtol=1e-5, atol=1e-6)
    assert full.votes.tolist() == (refs >= 0.5).sum(1).tolist()
    assert full.label.tolist() == (full.votes >= 2).astype(int).tolist()
    catalog = make_catalog([{"image": "x"}])
    assert Classifier.from_path(run, rule="mean").ensemble.rule == "mean"
    assert catalog.shape[0] == 1
