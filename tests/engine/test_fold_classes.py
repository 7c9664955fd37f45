"""Training stops, before any fold trains, when the set or a fold's train/validation part lacks a class."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mitoscope.engine.classifier_training import train_classifier
from mitoscope.engine.config import ClassifierConfig, load_config
from mitoscope.engine.crossval import Fold, check_fold_classes, class_counts
from mitoscope.io.catalog import make_catalog
from mitoscope.utils.errors import InputError

TINY = ["model.kwargs.backbone=test_resnet", "data.size=32", "data.batch_size=6", "train.epochs=1"]


def _patches(root, labels, domains=None):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, label in enumerate(labels):
        path = root / f"p{i:03d}.png"
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(path)
        row = {"image": str(path), "slide": f"s{i}", "label": label}
        if domains is not None:
            row["domain"] = domains[i]
        rows.append(row)
    return make_catalog(rows)


def _no_training_happened(out):
    assert not list(out.glob("fold_*")) if out.exists() else True


def test_one_class_set_is_refused_before_training(tmp_path):
    cat = _patches(tmp_path / "p", ["normal"] * 12)
    cfg = load_config(None, ClassifierConfig, TINY)
    with pytest.raises(InputError, match=r"needs both classes.*12 normal and 0 atypical"):
        train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    _no_training_happened(tmp_path / "run")


def test_fold_with_one_class_train_part_is_named_with_counts(tmp_path):
    # labels follow the domains: with leave-one-domain-out, fold 2 tests d2, validates on d0 (atypical only)
    # and trains on d1 (normal only)
    labels = ["atypical" if i % 3 == 0 else "normal" for i in range(18)]
    cat = _patches(tmp_path / "p", labels, domains=[f"d{i % 3}" for i in range(18)])
    cfg = load_config(None, ClassifierConfig, [*TINY, "cv.scheme=lodo", "cv.folds=[2]"])
    with pytest.raises(InputError) as info:
        train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    msg = str(info.value)
    assert "fold 2" in msg
    assert "train has 6 normal / 0 atypical" in msg and "val has 0 normal / 6 atypical" in msg
    _no_training_happened(tmp_path / "run")


def test_check_fold_classes_empty_and_one_class_parts():
    cat = make_catalog([{"image": str(i), "label": ["normal", "atypical"][i % 2]} for i in range(6)])
    assert class_counts(cat, np.arange(6)) == {"normal": 3, "atypical": 3}
    check_fold_classes(cat, [Fold(0, np.array([0, 1, 2]), np.array([3, 4]))])  # both classes everywhere
    empty_val = Fold(3, np.array([0, 1, 2, 3]), np.zeros(0, dtype=np.int64), name="holdout")
    one_class_val = Fold(4, np.array([0, 1]), np.array([2, 4]))
    with pytest.raises(InputError) as info:
        check_fold_classes(cat, [empty_val, one_class_val])
    msg = str(info.value)
    assert "fold 3 (holdout): val has 0 normal / 0 atypical" in msg
    assert "fold 4: val has 2 normal / 0 atypical" in msg
    assert "train has" not in msg  # the train parts are fine and are not blamed
