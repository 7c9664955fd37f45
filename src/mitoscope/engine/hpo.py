"""Hyper-parameter search for the classifier recipe with Optuna.

Each trial copies the base configuration, sets the sampled values (dotted keys such as ``optim.lr`` or
``model.kwargs.dropout``), shortens the run (one holdout split, optionally fewer epochs) and trains it; the
objective is the validation balanced accuracy the run reports. The study lives in a database
(``sqlite:///DIR/study.sqlite`` by default; any SQLAlchemy URL, e.g. PostgreSQL, lets several machines share
it) and is resumed when it exists: ``n_trials`` is the total number of finished trials wanted.

The search space comes from the ``hpo.space`` section of the configuration file (stripped before the recipe is
parsed) or from :data:`DEFAULT_SPACE`::

    hpo:
      epochs: 3            # epochs per trial (default: the recipe's)
      scheme: holdout      # cv scheme of a trial (default holdout; "recipe" keeps the recipe's)
      space:
        optim.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
        model.kwargs.dropout: {type: float, low: 0.0, high: 0.5}
        model.kwargs.focal_gamma: {type: categorical, choices: [0.0, 1.0, 2.0]}
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mitoscope.engine.classifier_training import train_classifier
from mitoscope.engine.config import ClassifierConfig, load_config, recipe_path, save_config
from mitoscope.metrics.classification import classification_report
from mitoscope.models.registry import list_models, model_accepts
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable
from mitoscope.utils.optional import optional_import

logger = logging.getLogger(__name__)

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "model.kwargs.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "model.kwargs.alpha": {"type": "float", "low": 0.25, "high": 0.9},
    "model.kwargs.gamma": {"type": "float", "low": 0.0, "high": 3.0},
}
STUDY_FILE = "study.sqlite"
BEST_PARAMS_FILE = "best_params.yaml"
BEST_CONFIG_FILE = "best_config.yaml"
TRIALS_FILE = "trials.csv"

TrainFn = Callable[..., Path]


@dataclasses.dataclass(frozen=True)
class SearchParam:
    """One dimension of the search space."""

    name: str
    type: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw a value with an ``optuna.Trial``."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            step = int(self.step) if self.step else 1
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step, log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)  # type: ignore[arg-type]


def default_space(model_name: str) -> dict[str, dict[str, Any]]:
    """:data:`DEFAULT_SPACE` restricted to what the model builder accepts.

    Learning rate always; ``dropout`` and the focal-loss ``alpha``/``gamma`` only when the registered builder
    of ``model_name`` takes them (``atypical_experts`` trains with a focal loss, the others with BCE).

    Examples:
        >>> sorted(default_space("atypical_experts"))
        ['model.kwargs.alpha', 'model.kwargs.dropout', 'model.kwargs.gamma', 'optim.lr']
        >>> sorted(default_space("atypical_single"))
        ['model.kwargs.dropout', 'optim.lr']
    """
    if model_name not in list_models():
        return {k: v for k, v in DEFAULT_SPACE.items() if not k.startswith("model.")}
    out = {}
    for key, spec in DEFAULT_SPACE.items():
        if key.startswith("model.kwargs.") and not model_accepts(
            model_name, key.removeprefix("model.kwargs.")
        ):
            continue
        out[key] = spec
    return out


def parse_space(space: Mapping[str, Any], *, where: object = "hpo.space") -> dict[str, SearchParam]:
    """Validate a search-space mapping ``{dotted.key: {type, low, high[, log, step] | choices}}``.

    A bare list is shorthand for a categorical choice.

    Examples:
        >>> sp = parse_space({"optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        ...                   "data.batch_size": [16, 32]})
        >>> sp["optim.lr"].log, sp["data.batch_size"].choices
        (True, (16, 32))
    """
    if not isinstance(space, Mapping) or not space:
        raise InputError("the search space must be a non-empty mapping", path=where)
    out: dict[str, SearchParam] = {}
    for name, spec in space.items():
        if isinstance(spec, list | tuple):
            spec = {"type": "categorical", "choices": list(spec)}
        if not isinstance(spec, Mapping):
            raise InputError(f"search-space entry {name!r} must be a mapping or a list", path=where)
        kind = str(spec.get("type", "categorical" if "choices" in spec else "float"))
        unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
        if unknown:
            raise InputError(f"search-space entry {name!r} has unknown keys {sorted(unknown)}", path=where)
        if kind == "categorical":
            choices = tuple(spec.get("choices") or ())
            if not choices:
                raise InputError(f"categorical entry {name!r} needs 'choices'", path=where)
            out[name] = SearchParam(name, kind, choices=choices)
        elif kind in ("float", "int"):
            if "low" not in spec or "high" not in spec:
                raise InputError(f"{kind} entry {name!r} needs 'low' and 'high'", path=where)
            low, high = float(spec["low"]), float(spec["high"])
            if not low < high:
                raise InputError(f"entry {name!r}: low ({low}) must be below high ({high})", path=where)
            log = bool(spec.get("log", False))
            if log and low <= 0:
                raise InputError(f"entry {name!r}: a log scale needs low > 0", path=where)
            step = spec.get("step")
            out[name] = SearchParam(name, kind, low, high, log, None if step is None else float(step))
        else:
            raise InputError(f"entry {name!r}: unknown type {kind!r} (float, int, categorical)", path=where)
    return out


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``key="a.b"``, creating mappings on the way.

    Examples:
        >>> t = {"optim": {"lr": 1.0}}
        >>> set_dotted(t, "optim.lr", 0.1); set_dotted(t, "model.kwargs.dropout", 0.2)
        >>> t
        {'optim': {'lr': 0.1}, 'model': {'kwargs': {'dropout': 0.2}}}
    """
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise InputError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def read_tuning_config(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a recipe YAML and split it into ``(recipe_dict, hpo_section)``.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "c.yaml"
        >>> _ = p.write_text("optim: {lr: 0.001}\\nhpo: {epochs: 2}\\n")
        >>> read_tuning_config(p)
        ({'optim': {'lr': 0.001}}, {'epochs': 2})
    """
    path = recipe_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML ({exc})", path=path) from exc
    if not isinstance(raw, dict):
        raise InputError("the top level must be a mapping", path=path)
    hpo = raw.pop("hpo", None) or {}
    if not isinstance(hpo, dict):
        raise InputError("the 'hpo' section must be a mapping", path=path)
    unknown = set(hpo) - {"space", "epochs", "scheme", "max_steps_per_epoch", "metric"}
    if unknown:
        raise InputError(f"unknown keys in the 'hpo' section: {sorted(unknown)}", path=path)
    return raw, hpo


def default_storage(out_dir: str | os.PathLike[str]) -> str:
    """``sqlite:///<out_dir>/study.sqlite`` (absolute path).

    Examples:
        >>> default_storage("/tmp/hpo")
        'sqlite:////tmp/hpo/study.sqlite'
    """
    return f"sqlite:///{Path(out_dir).resolve() / STUDY_FILE}"


def _find_metric(tree: Any, metric: str) -> float | None:
    """First finite ``metric`` value in a nested summary, preferring mean/overall/oof entries."""
    if isinstance(tree, Mapping):
        for key in ("oof", "overall", "mean", "val", "validation", "summary"):
            if key in tree:
                found = _find_metric(tree[key], metric)
                if found is not None:
                    return found
        value = tree.get(metric)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        if isinstance(value, Mapping):
            for key in ("mean", "value"):
                v = value.get(key)
                if isinstance(v, int | float) and math.isfinite(v):
                    return float(v)
        for v in tree.values():
            if isinstance(v, Mapping | list):
                found = _find_metric(v, metric)
                if found is not None:
                    return found
    elif isinstance(tree, list):
        values = [_find_metric(v, metric) for v in tree]
        finite = [v for v in values if v is not None]
        if finite:
            return float(sum(finite) / len(finite))
    return None


def run_score(run_dir: str | os.PathLike[str], metric: str = "balanced_accuracy") -> float:
    """Validation ``metric`` of a finished training run.

    Reads ``cv_summary.json`` (the pooled out-of-fold value, each prediction at its own fold's threshold),
    else recomputes it from ``oof_predictions.csv`` (``target``, ``p_atypical`` and an optional per-row
    ``threshold``, default 0.5).

    Examples:
        >>> import tempfile, pathlib, json
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "cv_summary.json").write_text(json.dumps({"oof": {"balanced_accuracy": 0.7}}))
        >>> run_score(d)
        0.7
    """
    run_dir = Path(run_dir)
    summary = run_dir / "cv_summary.json"
    if summary.is_file():
        found = _find_metric(json.loads(summary.read_text(encoding="utf-8")), metric)
        if found is not None:
            return found
    oof = run_dir / "oof_predictions.csv"
    if oof.is_file():
        frame = pd.read_csv(oof)
        label_col = next((c for c in ("target", "label") if c in frame), None)
        prob_col = next((c for c in ("p_atypical", "prob") if c in frame), None)
        if label_col and prob_col and len(frame):
            frame = frame[frame[label_col].astype(str).isin(["0", "1", "atypical", "normal"])]
            probs = frame[prob_col].to_numpy(dtype=float)
            thr = frame["threshold"].to_numpy(dtype=float) if "threshold" in frame else 0.5
            preds = (probs >= thr).astype(int)
            rep = classification_report(frame[label_col].tolist(), probs, preds=preds)
            value = rep.get(metric)
            if isinstance(value, float) and math.isfinite(value):
                return value
    raise InputError(
        f"no validation {metric!r} found in the run (cv_summary.json / oof_predictions.csv)", path=run_dir
    )


def _trial_config(
    recipe: Mapping[str, Any], params: Mapping[str, Any], hpo: Mapping[str, Any]
) -> dict[str, Any]:
    cfg = copy.deepcopy(dict(recipe))
    for key, value in params.items():
        set_dotted(cfg, key, value)
    scheme = hpo.get("scheme", "holdout")
    if scheme != "recipe":
        set_dotted(cfg, "cv.scheme", scheme)
    if hpo.get("epochs") is not None:
        set_dotted(cfg, "train.epochs", int(hpo["epochs"]))
    if hpo.get("max_steps_per_epoch") is not None:
        set_dotted(cfg, "train.max_steps_per_epoch", int(hpo["max_steps_per_epoch"]))
    return cfg


def _default_train_fn() -> TrainFn:
    return train_classifier


def tune_classifier(
    recipe: Mapping[str, Any],
    catalog: pd.DataFrame,
    out_dir: str | os.PathLike[str],
    *,
    n_trials: int,
    hpo: Mapping[str, Any] | None = None,
    storage: str | None = None,
    study_name: str = "mitoscope-classifier",
    device: str = "cpu",
    seed: int = 0,
    train_fn: TrainFn | None = None,
) -> Any:
    """Run (or resume) an Optuna study over the classifier recipe and write the best parameters and config.

    Args:
        recipe: the recipe as a plain dict (the YAML without its ``hpo`` section).
        catalog: training catalog (a mitoscope catalog with labels and groups).
        out_dir: where trials, ``study.sqlite``, ``trials.csv``, ``best_params.yaml`` and ``best_config.yaml``
            go.
        n_trials: total number of finished trials wanted (finished trials of a resumed study count).
        hpo: the ``hpo`` section (``space``, ``epochs``, ``scheme``, ``max_steps_per_epoch``, ``metric``).
        storage: database URL (default ``sqlite:///OUT/study.sqlite``).
        study_name: name of the study in the storage.
        device: training device.
        seed: sampler seed.
        train_fn: ``train_fn(config, catalog, run_dir, device=, resume=) -> run_dir`` (default
            :func:`mitoscope.engine.classifier_training.train_classifier`).

    Returns:
        The ``optuna.Study``.

    Examples:
        >>> study = tune_classifier(recipe, catalog, "hpo_out", n_trials=20)  # doctest: +SKIP
        >>> study.best_params  # doctest: +SKIP
    """
    optuna = optional_import("optuna", extra="hpo", purpose="hyper-parameter search")

    hpo = dict(hpo or {})
    model_name = str((recipe.get("model") or {}).get("name", "atypical_single"))
    space = parse_space(hpo.get("space") or default_space(model_name))
    metric = str(hpo.get("metric", "balanced_accuracy"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out)
    load_config(recipe, ClassifierConfig)  # fail early on a bad recipe
    probe = {k: _probe_value(p) for k, p in space.items()}
    load_config(_trial_config(recipe, probe, hpo), ClassifierConfig)  # every searched key must exist
    train = train_fn or _default_train_fn()

    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        load_if_exists=True,
    )

    def objective(trial: Any) -> float:
        params = {name: p.suggest(trial) for name, p in space.items()}
        cfg = load_config(_trial_config(recipe, params, hpo), ClassifierConfig)
        run_dir = out / "trials" / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        result_dir = train(cfg, catalog, run_dir, device=device, resume=True)
        score = run_score(result_dir or run_dir, metric)
        logger.info("trial %d: %s = %.4f with %s", trial.number, metric, score, params)
        return score

    done = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    remaining = max(0, int(n_trials) - done)
    if remaining:
        study.optimize(objective, n_trials=remaining, catch=(FloatingPointError,))
    write_results(
        study, recipe, out, save_config=save_config, load=lambda d: load_config(d, ClassifierConfig)
    )
    return study


def _probe_value(p: SearchParam) -> Any:
    if p.type == "categorical":
        return p.choices[0]
    return int(p.low) if p.type == "int" else float(p.low)  # type: ignore[arg-type]


def write_results(
    study: Any,
    recipe: Mapping[str, Any],
    out_dir: Path,
    *,
    save_config: Callable[[Any, Path], Path],
    load: Callable[[dict[str, Any]], Any],
) -> None:
    """Write ``trials.csv``, and ``best_params.yaml`` + ``best_config.yaml`` once a trial has finished."""
    frame = study.trials_dataframe()
    text = frame.to_csv(index=False) if not frame.empty else ""
    write_text_atomic(out_dir / TRIALS_FILE, text)
    completed = [t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    if not completed:
        return
    best = study.best_trial
    payload = {
        "value": float(best.value),
        "trial": int(best.number),
        "params": to_jsonable(dict(best.params)),
        "n_complete": len(completed),
        "run_dir": best.user_attrs.get("run_dir"),
    }
    write_text_atomic(out_dir / BEST_PARAMS_FILE, yaml.safe_dump(payload, sort_keys=False))
    cfg = copy.deepcopy(dict(recipe))
    for key, value in best.params.items():
        set_dotted(cfg, key, value)
    save_config(load(cfg), out_dir / BEST_CONFIG_FILE)
