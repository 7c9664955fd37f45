from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import mitoscope.engine.hpo as hpo
from mitoscope.cli.main import app
from mitoscope.engine.config import ClassifierConfig, load_config

pytest.importorskip("optuna")
runner = CliRunner()


def _folders(root: Path, n: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = "Atypical" if i % 2 else "Normal"
        (root / cls).mkdir(parents=True, exist_ok=True)
        hi = 256 if cls == "Atypical" else 100
        Image.fromarray(rng.integers(0, hi, (32, 32, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def _config(path: Path, **hpo_section: Any) -> Path:
    cfg = {
        "model": {"name": "atypical_single", "kwargs": {"backbone": "test_resnet", "hidden": [8]}},
        "data": {"size": 32, "batch_size": 8, "augment": {"color_jitter": None, "hed_jitter": None}},
        "train": {"epochs": 5, "amp": False},
        "cv": {"val_fraction": 0.5},
        "hpo": {
            "space": {"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            **hpo_section,
        },
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_tune_with_stub_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[ClassifierConfig] = []

    def fake_train(cfg: ClassifierConfig, catalog: Any, out_dir: Path, **kw: Any) -> Path:
        calls.append(cfg)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "cv_summary.json").write_text(
            json.dumps({"oof": {"balanced_accuracy": cfg.optim.lr * 10}})
        )
        return Path(out_dir)

    monkeypatch.setattr(hpo, "_default_train_fn", lambda: fake_train)
    data = _folders(tmp_path / "data")
    cfg = _config(tmp_path / "c.yaml", epochs=1)
    out = tmp_path / "hpo"
    args = [
        "tune",
        "classifier",
        "--config",
        str(cfg),
        "--data",
        str(data),
        "--out",
        str(out),
        "--trials",
        "2",
    ]
    res = runner.invoke(app, [*args, "--set", "optim.weight_decay=0.01"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 2 and all(c.train.epochs == 1 and c.optim.weight_decay == 0.01 for c in calls)
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    assert best["value"] == pytest.approx(max(c.optim.lr * 10 for c in calls))
    assert load_config(out / "best_config.yaml", ClassifierConfig).train.epochs == 5
    assert "best #" in res.output
    # rerun with --trials 3: resumes the stored study, one more trial
    res = runner.invoke(app, [*args[:-1], "3", "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert len(calls) == 3 and calls[-1].train.epochs == 2


def test_tune_errors(tmp_path: Path) -> None:
    data = _folders(tmp_path / "data", n=4)
    res = runner.invoke(
        app,
        ["tune", "classifier", "-c", str(tmp_path / "nope.yaml"), "-d", str(data), "-o", str(tmp_path / "o")],
    )
    assert res.exit_code == 1 and "not found" in res.output and "Traceback" not in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"hpo": {"space": {"optim.lr": {"type": "float", "low": 1, "high": 0.1}}}}))
    res = runner.invoke(
        app, ["tune", "classifier", "-c", str(bad), "-d", str(data), "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 1 and "low" in res.output


@pytest.mark.slow
def test_tune_real_training(tmp_path: Path) -> None:
    data = _folders(tmp_path / "data")
    cfg = _config(tmp_path / "c.yaml", epochs=1)
    out = tmp_path / "hpo"
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    res = runner.invoke(
        app,
        [
            "tune",
            "classifier",
            "-c",
            str(cfg),
            "-d",
            str(data),
            "-o",
            str(out),
            "-n",
            "2",
            "--storage",
            storage,
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "shared.db").is_file() and not (out / "study.sqlite").exists()
    best = yaml.safe_load((out / "best_params.yaml").read_text())
    assert 0.0 <= best["value"] <= 1.0 and set(best["params"]) == {"optim.lr"}
