from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mitoscope.engine.config import ClassifierConfig, load_config
from mitoscope.engine.hpo import (
    DEFAULT_SPACE,
    default_storage,
    parse_space,
    read_tuning_config,
    run_score,
    set_dotted,
    tune_classifier,
)
from mitoscope.utils.errors import InputError

pytest.importorskip("optuna")

RECIPE = {"model": {"name": "atypical_single", "kwargs": {"backbone": "test_resnet"}}, "train": {"epochs": 7}}
SPACE = {
    "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "model.kwargs.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "data.batch_size": [8, 16],
}


class FakeTrain:
    """Stands in for train_classifier: records configs, writes a cv_summary.json whose score depends on lr."""

    def __init__(self) -> None:
        self.configs: list[ClassifierConfig] = []

    def __call__(self, cfg: ClassifierConfig, catalog: pd.DataFrame, out_dir: Path, **kw: Any) -> Path:
        assert kw["resume"] is True and kw["device"] == "cpu"
        self.configs.append(cfg)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        score = 1.0 - abs(math.log10(cfg.optim.lr) + 3.0) / 10.0
        summary = {"folds": [{"fold": 0, "balanced_accuracy": score}], "mean": {"balanced_accuracy": score}}
        (out_dir / "cv_summary.json").write_text(json.dumps(summary))
        return out_dir


def test_parse_space_and_errors() -> None:
    sp = parse_space(SPACE)
    assert sp["optim.lr"].log and sp["data.batch_size"].type == "categorical"
    assert set(parse_space(DEFAULT_SPACE)) == set(DEFAULT_SPACE)
    with pytest.raises(InputError, match="low"):
        parse_space({"optim.lr": {"type": "float", "low": 1.0, "high": 0.1}})
    with pytest.raises(InputError, match="log scale"):
        parse_space({"optim.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}})
    with pytest.raises(InputError, match="unknown type"):
        parse_space({"x": {"type": "complex", "low": 0, "high": 1}})
    with pytest.raises(InputError, match="unknown keys"):
        parse_space({"x": {"type": "float", "low": 0, "high": 1, "lo": 3}})


def test_set_dotted_and_read_config(tmp_path: Path) -> None:
    tree: dict[str, Any] = {"optim": {"lr": 1.0}}
    set_dotted(tree, "model.kwargs.focal_gamma", 2.0)
    assert tree["model"]["kwargs"]["focal_gamma"] == 2.0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**RECIPE, "hpo": {"epochs": 1, "space": SPACE}}))
    recipe, hpo = read_tuning_config(cfg)
    assert "hpo" not in recipe and hpo["epochs"] == 1
    cfg.write_text(yaml.safe_dump({"hpo": {"trials": 3}}))
    with pytest.raises(InputError, match="trials"):
        read_tuning_config(cfg)


def test_run_score_summary_then_oof_predictions(tmp_path: Path) -> None:
    # per-row (per-fold) thresholds: 0.2 >= 0.15 counts as atypical in the second fold
    pd.DataFrame(
        {"target": [1, 1, 0, 0], "p_atypical": [0.9, 0.2, 0.1, 0.3], "threshold": [0.5, 0.15, 0.5, 0.5]}
    ).to_csv(tmp_path / "oof_predictions.csv", index=False)
    assert run_score(tmp_path) == pytest.approx(1.0)
    summary = {"folds": {"fold_0": {"balanced_accuracy": 0.5}}, "oof": {"balanced_accuracy": 0.61}}
    (tmp_path / "cv_summary.json").write_text(json.dumps(summary))
    assert run_score(tmp_path) == pytest.approx(0.61)
    with pytest.raises(InputError, match="no validation"):
        run_score(tmp_path / "empty")


def test_two_trials_write_best_and_resume(tmp_path: Path) -> None:
    catalog = pd.DataFrame({"image": ["a.png"], "label": ["normal"]})
    fake = FakeTrain()
    hpo = {"space": SPACE, "epochs": 2}
    study = tune_classifier(RECIPE, catalog, tmp_path / "out", n_trials=2, hpo=hpo, train_fn=fake)
    assert len(study.trials) == 2 and len(fake.configs) == 2
    # trials are shortened to a holdout of 2 epochs; sampled values reach the config
    for cfg, trial in zip(fake.configs, study.trials, strict=True):
        assert cfg.cv.scheme == "holdout" and cfg.train.epochs == 2
        assert cfg.optim.lr == pytest.approx(trial.params["optim.lr"])
        assert cfg.model.kwargs["dropout"] == pytest.approx(trial.params["model.kwargs.dropout"])
        assert cfg.model.kwargs["backbone"] == "test_resnet"
    out = tmp_path / "out"
    assert (out / "study.sqlite").is_file() and (out / "trials.csv").is_file()
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    assert best["value"] == pytest.approx(study.best_value) and best["n_complete"] == 2
    best_cfg = load_config(out / "best_config.yaml", ClassifierConfig)
    # the best config keeps the full recipe (7 epochs, default CV) with the best values
    assert best_cfg.train.epochs == 7 and best_cfg.cv.scheme == "group_kfold"
    assert best_cfg.optim.lr == pytest.approx(best["params"]["optim.lr"])
    assert best_cfg.data.batch_size == best["params"]["data.batch_size"]

    # resuming: the stored study is loaded, only the missing trial runs
    again = tune_classifier(RECIPE, catalog, out, n_trials=3, hpo=hpo, train_fn=fake)
    assert len(again.trials) == 3 and len(fake.configs) == 3
    assert tune_classifier(RECIPE, catalog, out, n_trials=3, hpo=hpo, train_fn=fake).trials[-1].number == 2
    assert len(fake.configs) == 3


def test_shared_storage_url_and_bad_keys(tmp_path: Path) -> None:
    catalog = pd.DataFrame({"image": ["a.png"], "label": ["normal"]})
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    tune_classifier(
        RECIPE, catalog, tmp_path / "m1", n_trials=1, hpo={"space": SPACE}, storage=url, train_fn=FakeTrain()
    )
    study = tune_classifier(
        RECIPE, catalog, tmp_path / "m2", n_trials=2, hpo={"space": SPACE}, storage=url, train_fn=FakeTrain()
    )
    assert len(study.trials) == 2 and not (tmp_path / "m2" / "study.sqlite").exists()
    assert default_storage(tmp_path).endswith("/study.sqlite")
    with pytest.raises(InputError, match="nope"):
        tune_classifier(
            RECIPE,
            catalog,
            tmp_path / "bad",
            n_trials=1,
            hpo={"space": {"optim.nope": [1, 2]}},
            train_fn=FakeTrain(),
        )


@pytest.mark.slow
def test_two_real_trials_on_tiny_data(tmp_path: Path) -> None:
    """End to end with the real trainer: 2 trials of one holdout epoch on 16 synthetic patches."""
    import numpy as np
    from PIL import Image

    from mitoscope.io.catalog import make_catalog

    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        label = "atypical" if i % 2 else "normal"
        img = rng.integers(0, 100 if label == "normal" else 256, (32, 32, 3), dtype=np.uint8)
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(path)
        rows.append({"image": str(path), "label": label, "slide": f"s{i // 2}"})
    catalog = make_catalog(rows)
    recipe = {
        "model": {"name": "atypical_single", "kwargs": {"backbone": "test_resnet", "hidden": [8]}},
        "data": {"size": 32, "batch_size": 8, "augment": {"color_jitter": None, "hed_jitter": None}},
        "train": {"epochs": 1, "amp": False},
        "cv": {"val_fraction": 0.5},
    }
    study = tune_classifier(recipe, catalog, tmp_path / "hpo", n_trials=2, hpo={"epochs": 1})
    assert len(study.trials) == 2
    assert all(t.value is not None and 0.0 <= t.value <= 1.0 for t in study.trials)
    assert set(study.best_params) == {"optim.lr", "model.kwargs.dropout"}
    assert (tmp_path / "hpo" / "trials" / "trial_0000" / "cv_summary.json").is_file()
    assert load_config(tmp_path / "hpo" / "best_config.yaml", ClassifierConfig).model.kwargs["hidden"] == [8]
