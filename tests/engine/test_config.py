"""Typed YAML configs: defaults, nesting, overrides, unknown keys, round trip."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from mitoscope.engine.config import (
    ClassifierConfig,
    ConfigError,
    load_config,
    parse_overrides,
    save_config,
)

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_and_partial_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  name: atypical_multitask\n  kwargs: {backbone: resnet18}\ntrain:\n  epochs: 7\n"
    )
    cfg = load_config(path, ClassifierConfig)
    assert cfg.model.name == "atypical_multitask" and cfg.model.kwargs == {"backbone": "resnet18"}
    assert cfg.train.epochs == 7 and cfg.train.seed == 0 and cfg.optim.name == "adamw"


def test_overrides_are_yaml_typed_and_nested(tmp_path):
    cfg = load_config(
        {"optim": {"lr": 1e-3}},
        ClassifierConfig,
        [
            "optim.lr=3e-5",
            "train.patience=4",
            "train.amp=false",
            "model.kwargs.pretrained=offline",
            "model.kwargs.loss.gamma=2",
            "cv.folds=[0, 2]",
            "train.loss_weights.loss_seg=0.5",
            "data.mean=[0.5, 0.5, 0.5]",
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-5) and isinstance(cfg.optim.lr, float)
    assert cfg.train.patience == 4 and cfg.train.amp is False
    assert cfg.model.kwargs == {"pretrained": "offline", "loss": {"gamma": 2}}
    assert cfg.cv.folds == [0, 2] and cfg.train.loss_weights == {"loss_seg": 0.5}
    assert cfg.data.mean == [0.5, 0.5, 0.5]


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'optim\.learning_rate'"):
        load_config(path, ClassifierConfig)
    path.write_text("tran:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'tran'"):
        load_config(path, ClassifierConfig)


def test_unknown_or_malformed_override():
    with pytest.raises(ConfigError, match=r"--set.*unknown key 'train\.epoch'"):
        load_config(None, ClassifierConfig, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(None, ClassifierConfig, ["train.epochs"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(None, ClassifierConfig, ["train.epochs.x=3"])


def test_type_and_choice_errors():
    with pytest.raises(ConfigError, match=r"'train\.epochs' must be an integer"):
        load_config(None, ClassifierConfig, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"'cv.scheme': 'loo' is not one of"):
        load_config(None, ClassifierConfig, ["cv.scheme=loo"])
    with pytest.raises(ConfigError, match="must be true or false"):
        load_config({"train": {"amp": "yes please"}}, ClassifierConfig)


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(path, ClassifierConfig).optim.lr == pytest.approx(1e-4)


def test_round_trip(tmp_path):
    cfg = load_config(
        None, ClassifierConfig, ["model.kwargs.backbone=resnet18", "cv.folds=[1]", "data.std=[0.5]"]
    )
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text())["model"]["kwargs"] == {"backbone": "resnet18"}
    assert load_config(path, ClassifierConfig) == cfg
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", ClassifierConfig)
    bad = tmp_path / "b.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad, ClassifierConfig)


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d="]) == {"a.b": 1, "c": [1, 2], "d": ""}


@dataclasses.dataclass
class Inner:
    k: int = 1


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    name: str = "x"


def test_works_for_other_dataclasses():
    assert load_config({"inner": {"k": 5}}, Outer, ["name=y"]) == Outer(Inner(5), "y")


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("classifier-*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(recipe):
    cfg = load_config(recipe, ClassifierConfig)
    assert cfg.model.name.startswith("atypical_")


EXPERIMENTAL = ("ema_decay", "mixup_alpha", "sharpness", "scale_jitter", "train_records", "keep")


def _keys(tree: object) -> set[str]:
    if isinstance(tree, dict):
        return set(tree) | {k for v in tree.values() for k in _keys(v)}
    return set()


@pytest.mark.parametrize(
    "recipe", sorted((ROOT / "src/mitoscope/configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_recipes_speak_to_users(recipe):
    """A recipe opens with what it is and what it measured, points to a doc that exists outside the wheel by
    its name in the repository, and neither cites the experiment log nor sets an option measurements rejected."""
    text = recipe.read_text()
    header = text.split("\nmodel:", 1)[0]
    assert header.startswith("# ") and all(line.startswith("#") for line in header.splitlines())
    assert "docs/training.md in the mitoscope repository" in header
    assert "benchmarks" not in text and not re.search(r"\brule \d", text, re.IGNORECASE)
    assert not _keys(yaml.safe_load(text)) & set(EXPERIMENTAL)
