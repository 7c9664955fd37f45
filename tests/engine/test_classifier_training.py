"""End-to-end classifier cross-validation on tiny synthetic patches (test_resnet backbone, 32 px, 1-2 epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mitoscope.engine.classifier_training import train_classifier
from mitoscope.engine.config import ClassifierConfig, load_config
from mitoscope.io.catalog import make_catalog
from mitoscope.io.catalog_csv import read_catalog_csv
from mitoscope.models.checkpoint import load_model, read_checkpoint
from mitoscope.utils.errors import InputError


def write_patches(root, n=36, n_slides=9, size=40, seed=0):
    """Separable synthetic patches: atypical ones have a large dark blob, normal ones a small one."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        atypical = i % 3 == 0
        arr = rng.integers(170, 230, (size, size, 3), dtype=np.uint8)
        r = 12 if atypical else 5
        c = size // 2
        arr[c - r : c + r, c - r : c + r] = (70, 30, 120)
        Image.fromarray(arr).save(root / f"p{i:03d}.png")
        votes = (1, 1, 0) if atypical and i % 2 else ((1, 1, 1) if atypical else (0, 0, 0))
        rows.append(
            {
                "image": str(root / f"p{i:03d}.png"),
                "slide": f"s{i % n_slides}",
                "label": "atypical" if atypical else "normal",
                "experts": votes,
                "domain": f"d{(i // 3) % 3}",  # both classes in every domain (slides stay in one domain)
            }
        )
    return make_catalog(rows)


TINY = [
    "model.kwargs.backbone=test_resnet",
    "data.size=32",
    "data.batch_size=6",
    "data.augment.hed_jitter=null",
    "data.augment.max_angle=0",
    "optim.lr=3e-3",
    "cv.n_splits=3",
]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    cat = write_patches(root / "patches")
    cfg = load_config(None, ClassifierConfig, [*TINY, "model.name=atypical_single", "train.epochs=2"])
    out = train_classifier(cfg, cat, root / "run", device="cpu", progress=False)
    return cfg, cat, out


def test_run_directory_layout(single_run):
    _, _, out = single_run
    for name in ("config.yaml", "cv_summary.json", "oof_predictions.csv", "ensemble.json"):
        assert (out / name).is_file(), name
    for k in range(3):
        for name in ("best.pt", "last.pt", "model.pt", "history.csv", "metrics.json", "predictions.csv"):
            assert (out / f"fold_{k}" / name).is_file(), (k, name)
    assert not list(out.rglob("*.tmp"))


def test_oof_predictions_cover_each_labelled_row_once(single_run):
    _, cat, out = single_run
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert sorted(oof["row"]) == list(range(len(cat)))
    assert set(oof["part"]) == {"test"}
    assert oof["p_atypical"].between(0, 1).all()
    assert (oof["target"].to_numpy() == cat["target"].to_numpy()[oof["row"].to_numpy()]).all()
    summary = json.loads((out / "cv_summary.json").read_text())
    assert summary["folds_finished"] == [0, 1, 2] and summary["oof"]["n"] == len(cat)
    assert 0.0 <= summary["oof"]["balanced_accuracy"] <= 1.0


def test_oof_predictions_read_back_as_a_catalog_from_another_directory(tmp_path, monkeypatch):
    cat = write_patches(tmp_path / "data" / "patches", n=18)
    monkeypatch.chdir(tmp_path / "data")
    cat["image"] = [str(Path(p).relative_to(tmp_path / "data")) for p in cat["image"]]  # as a user types them
    overrides = [*TINY, "model.name=atypical_single", "train.epochs=1", "cv.scheme=holdout"]
    cfg = load_config(None, ClassifierConfig, overrides)
    out = train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    oof = read_catalog_csv(out / "oof_predictions.csv")  # checks that every image is found
    assert len(oof) > 0 and all(Path(p).is_file() for p in oof["image"])


def test_threshold_chosen_on_validation_is_stored_in_the_contract(single_run):
    _, _, out = single_run
    for k in range(3):
        metrics = json.loads((out / f"fold_{k}" / "metrics.json").read_text())
        preds = pd.read_csv(out / f"fold_{k}" / "predictions.csv")
        val = preds[preds["part"] == "val"]
        from mitoscope.engine.crossval import choose_threshold

        expected = choose_threshold(val["target"], val["p_atypical"])
        model, contract = load_model(out / f"fold_{k}" / "model.pt")
        assert contract.thresholds["default"] == pytest.approx(expected)
        assert metrics["threshold"] == pytest.approx(expected)
        assert contract.task == "classification" and contract.input_size == 32
        assert contract.config["model"]["name"] == "atypical_single"
        assert model(torch.zeros(2, 3, 32, 32))["prob"].shape == (2,)


def test_ensemble_file_lists_fold_models(single_run):
    _, _, out = single_run
    # balance defaults to "sampler": no pos_weight; check the ensemble file instead
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["models"] == [f"fold_{k}/model.pt" for k in range(3)] and spec["rule"] == "mean"
    from mitoscope.engine.ensemble import load_ensemble

    ens = load_ensemble(out)
    assert len(ens.models) == 3


def test_rerun_skips_finished_folds_and_resumes_an_interrupted_one(single_run, caplog):
    cfg, cat, out = single_run
    stamps = {k: (out / f"fold_{k}" / "model.pt").stat().st_mtime_ns for k in range(3)}
    # fold 1 "interrupted" after its last epoch: metrics missing, last.pt present -> no retraining, just finishing
    (out / "fold_1" / "metrics.json").unlink()
    history_before = pd.read_csv(out / "fold_1" / "history.csv")
    train_classifier(cfg, cat, out, device="cpu", progress=False)
    assert (out / "fold_0" / "model.pt").stat().st_mtime_ns == stamps[0]
    assert (out / "fold_2" / "model.pt").stat().st_mtime_ns == stamps[2]
    assert (out / "fold_1" / "metrics.json").is_file()
    pd.testing.assert_frame_equal(history_before, pd.read_csv(out / "fold_1" / "history.csv"))
    # a changed recipe is reported when resuming
    changed = load_config(None, ClassifierConfig, [*TINY, "model.name=atypical_single", "train.epochs=3"])
    with caplog.at_level("WARNING", logger="mitoscope.engine.classifier_training"):
        train_classifier(changed, cat, out, device="cpu", progress=False, folds=[0])
    assert "train.epochs: 2 -> 3" in caplog.text


def test_multitask_exports_model_without_decoders(tmp_path):
    """Also runs the CPU speed options: bf16 autocast, channels-last and a frozen stem + first stage."""
    cat = write_patches(tmp_path / "p", n=24, n_slides=9)  # 6 slides: a fold trained on one class
    speed = ["train.cpu_bf16=true", "train.channels_last=true", "model.kwargs.frozen_stages=2"]
    cfg = load_config(
        None,
        ClassifierConfig,
        [
            *TINY,
            "model.name=atypical_multitask",
            "train.epochs=1",
            "data.balance=pos_weight",
            "cv.folds=[0]",
            "data.mask_method=disk",
            f"data.mask_cache={tmp_path / 'masks'}",
            *speed,
        ],
    )
    out = train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    # the auxiliary masks by the configured method, kept on disk for the next fold or run
    from mitoscope.data.masks import disk_mask

    cached = sorted((tmp_path / "masks").rglob("*.npy"))
    assert cached and all((np.load(f) == disk_mask((40, 40), (19.5, 19.5), 10.0)).all() for f in cached)
    full = read_checkpoint(out / "fold_0" / "best.pt")
    small = read_checkpoint(out / "fold_0" / "model.pt")
    assert (
        full["contract"]["kwargs"]["aux_heads"] is True and small["contract"]["kwargs"]["aux_heads"] is False
    )
    assert len(small["state_dict"]) < len(full["state_dict"])
    # pos_weight = n_normal / n_atypical of the fold's training part
    from mitoscope.engine.crossval import make_folds

    y = cat["target"].to_numpy()[make_folds(cat, scheme="group_kfold", n_splits=3)[0].train]
    assert full["contract"]["kwargs"]["pos_weight"] == pytest.approx((y == 0).sum() / max((y == 1).sum(), 1))
    model, _ = load_model(out / "fold_0" / "model.pt")
    assert model(torch.zeros(1, 3, 32, 32))["prob"].shape == (1,)
    assert json.loads((out / "ensemble.json").read_text())["models"] == ["fold_0/model.pt"]
    assert np.isfinite(pd.read_csv(out / "fold_0" / "history.csv")["train_loss"]).all()


@pytest.mark.slow
def test_experts_model_with_four_hardness_classes_and_lodo(tmp_path):
    cat = write_patches(tmp_path / "p", n=24, n_slides=9)  # 6 slides: a fold trained on one class
    cfg = load_config(
        None,
        ClassifierConfig,
        [
            *TINY,
            "model.name=atypical_experts",
            "model.kwargs.hardness_classes=4",
            "train.epochs=1",
            "cv.scheme=lodo",
            "cv.folds=[2]",
            "cv.ensemble=majority",
            "threshold.fixed=0.5",
            "data.num_workers=1",  # persistent reader workers
        ],
    )
    out = train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    _, contract = load_model(out / "fold_2" / "model.pt")
    assert contract.thresholds["default"] == 0.5 and contract.kwargs["hardness_classes"] == 4
    assert json.loads((out / "ensemble.json").read_text())["rule"] == "majority"


def test_single_model_trains_on_the_share_of_expert_votes(tmp_path):
    cat = write_patches(tmp_path / "p", n=18, n_slides=9)
    overrides = [*TINY, "model.name=atypical_single", "model.kwargs.soft_labels=true", "train.epochs=1"]
    cfg = load_config(None, ClassifierConfig, [*overrides, "cv.folds=[0]"])
    out = train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    model, contract = load_model(out / "fold_0" / "model.pt")
    assert contract.kwargs["soft_labels"] is True and model.required_targets == {"label", "experts"}
    no_votes = cat.assign(experts=[()] * len(cat))  # a source without votes trains on the label
    out = train_classifier(cfg, no_votes, tmp_path / "run_no_votes", device="cpu", progress=False)
    assert (out / "fold_0" / "model.pt").is_file()


def test_training_on_unanimous_records_keeps_every_record_for_validation_and_test(tmp_path, caplog):
    cat = write_patches(tmp_path / "p", n=18, n_slides=9)
    disputed = cat["experts"].map(lambda v: len(set(v)) > 1).to_numpy()
    assert disputed.any()
    cfg = load_config(
        None, ClassifierConfig, [*TINY, "train.epochs=1", "cv.folds=[0]", "data.train_records=unanimous"]
    )
    with caplog.at_level("INFO", logger="mitoscope.engine.classifier_training"):
        out = train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    fold = json.loads((out / "fold_0" / "metrics.json").read_text())
    message = next(r.getMessage() for r in caplog.records if "the experts agree on" in r.getMessage())
    kept, total = (int(w) for w in message.split("the ")[1].split(" records")[0].split(" of "))
    assert (kept, total - kept) == (fold["n_train"], fold["n_train_left_out"])
    assert 0 < kept < total
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert disputed[oof["catalog_index"].to_numpy()].any()  # disputed records are still scored
    no_votes = cat.assign(experts=[()] * len(cat))
    with pytest.raises(ValueError, match="votes of several experts"):
        train_classifier(cfg, no_votes, tmp_path / "run_no_votes", device="cpu", progress=False)


def test_weight_average_is_what_the_fold_exports(tmp_path):
    cat = write_patches(tmp_path / "p", n=18, n_slides=9)
    # one epoch: the best epoch is the last, so the export must be the final average, not the raw weights
    cfg = load_config(
        None, ClassifierConfig, [*TINY, "train.epochs=1", "train.ema_decay=0.9", "cv.folds=[0]"]
    )
    out = train_classifier(cfg, cat, tmp_path / "run", device="cpu", progress=False)
    last = read_checkpoint(out / "fold_0" / "last.pt")
    average = last["extra"]["weight_average"]["module"]
    exported = load_model(out / "fold_0" / "model.pt")[0].state_dict()
    assert all(torch.equal(exported[k], v) for k, v in average.items())
    assert any(not torch.equal(last["state_dict"][k], v) for k, v in average.items() if v.is_floating_point())


def test_keep_last_exports_the_end_of_the_schedule(tmp_path):
    cat = write_patches(tmp_path / "p", n=18, n_slides=9)
    overrides = [*TINY, "train.epochs=3", "train.patience=1", "train.keep=last", "cv.folds=[0]"]
    out = train_classifier(
        load_config(None, ClassifierConfig, overrides), cat, tmp_path / "run", device="cpu"
    )
    fold = json.loads((out / "fold_0" / "metrics.json").read_text())
    # patience is ignored: all three epochs run and the last (index 2) is exported
    assert [fold["epochs_run"], fold["kept_epoch"], fold["stopped_early"]] == [3, 2, False]
    last = read_checkpoint(out / "fold_0" / "last.pt")["state_dict"]
    exported = load_model(out / "fold_0" / "model.pt")[0].state_dict()
    assert all(torch.equal(exported[k], v) for k, v in last.items())


def test_a_verifier_trains_on_detection_labels(tmp_path):
    cat = write_patches(tmp_path / "p", n=12, n_slides=4)
    cat["label"] = cat["label"].map({"normal": "hard negative", "atypical": "mitotic figure"})
    cfg = load_config(None, ClassifierConfig, [*TINY, "train.epochs=1", "cv.folds=[0]"])
    out = train_classifier(cfg, cat, tmp_path / "run", device="cpu")
    _, contract = load_model(out / "fold_0" / "model.pt")
    assert contract.class_names == ("hard negative", "mitotic figure")


def test_bad_inputs(tmp_path):
    cat = make_catalog([{"image": "a.png", "label": "mitotic figure"}, {"image": "b.png", "label": "normal"}])
    with pytest.raises(InputError, match="'normal'/'atypical' labels"):
        train_classifier(ClassifierConfig(), cat, tmp_path / "r", device="cpu")
    cat = write_patches(tmp_path / "p", n=12, n_slides=4)
    cfg = load_config(None, ClassifierConfig, [*TINY, "train.epochs=1"])
    with pytest.raises(InputError, match=r"no fold \[7\]"):
        train_classifier(cfg, cat, tmp_path / "r", device="cpu", folds=[7])
