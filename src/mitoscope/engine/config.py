"""Typed run configurations loaded from YAML and overridable from the command line (after timm ``args.yaml``).

A configuration is a tree of dataclasses. :func:`load_config` fills it from a YAML file (or a dict), applies
``a.b=value`` overrides (the value is parsed with ``yaml.safe_load``, so ``lr=1e-4`` is a float and
``kwargs.pretrained=false`` a bool), checks every key, and returns the dataclass. :func:`save_config` writes the
resolved configuration beside a run so that it can be reproduced.

Fields typed ``dict[...]`` are open: any key may appear below them (e.g. ``model.kwargs.backbone``).
Every other key must be a field of the dataclass, otherwise :class:`ConfigError` names the key and the file.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


# --------------------------------------------------------------------------------------------------------------
# The sections every training recipe shares (classifier and detector); ``None`` switches a setting off
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig:
    """Which registered model to build and with which keyword arguments."""

    name: str = "atypical_single"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (``warmup_epochs`` of linear warm-up, then cosine or constant).

    Shared by every task (:func:`mitoscope.engine.training.build_optimizer`, ``build_scheduler``); a recipe's
    defaults may differ (the detector's: Adam, 1e-5, no weight decay, constant).
    """

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: Literal["cosine", "none"] = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01


@dataclasses.dataclass
class TrainConfig:
    """Epochs, early stopping, seeds, mixed precision and task weights (shared by every task; ``None``: off).

    ``patience``: epochs without improvement of ``monitor`` before stopping. ``amp``: float16 autocast on CUDA.
    ``cpu_bf16``: bfloat16 autocast on the CPU (worth it on CPUs with native bf16, e.g. AVX512-BF16 or AMX).
    ``channels_last``: NHWC memory format for the model. ``ema_decay``: evaluate and keep an exponential moving
    average of the weights (e.g. 0.995; :class:`mitoscope.engine.loop.WeightAverage`).
    ``keep``: export the epoch with the best ``monitor`` (``"best"``) or the last epoch of the full schedule
    (``"last"``: no early stopping; validation then only sets the threshold). ``threads``: torch's CPU threads
    (``None``: torch's default).
    """

    epochs: int = 10
    patience: int | None = None
    monitor: str = "balanced_accuracy"
    seed: int = 0
    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool = False
    grad_clip: float | None = None
    loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    max_steps_per_epoch: int | None = None
    ema_decay: float | None = None
    keep: Literal["best", "last"] = "best"
    threads: int | None = None


# --------------------------------------------------------------------------------------------------------------
# The classifier recipe
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DataConfig:
    """How records become tensors.

    ``balance`` chooses how the class imbalance is handled: ``"sampler"`` draws class-balanced batches,
    ``"pos_weight"`` weights the positive class of the loss by the negative/positive ratio (passed to the model
    builder as ``pos_weight`` when it accepts one), ``"none"`` does nothing.
    ``augment`` is passed as keyword arguments to ``build_patch_transform`` (unknown keys raise there).
    ``mean``/``std`` default to the backbone's normalisation when left empty.
    ``mask_method`` makes the auxiliary masks of multi-task models from the point annotation
    (:func:`mitoscope.data.masks.compute_mask`: ``hematoxylin``, ``nuclick`` or ``disk``); ``mask_cache`` is a
    folder that keeps them on disk between epochs, folds and runs (worth it for NuClick).
    ``train_records``: ``"unanimous"`` trains only on the records every expert who voted agrees on (label-noise
    filtering by consensus); validation and test parts keep every record.
    """

    size: int = 128
    mpp: float = 0.25
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    cache_mb: int = 512
    balance: Literal["sampler", "pos_weight", "none"] = "sampler"
    augment: dict[str, Any] = dataclasses.field(default_factory=dict)
    mean: list[float] | None = None
    std: list[float] | None = None
    mask_method: Literal["hematoxylin", "nuclick", "disk"] = "hematoxylin"
    mask_cache: str | None = None
    train_records: Literal["all", "unanimous"] = "all"


@dataclasses.dataclass
class CVConfig:
    """Cross-validation scheme.

    ``group_kfold``: stratified k-fold over groups (slides); ``label_hardness_kfold``: the same, stratified over
    label × hardness; ``lodo``: leave one ``domain_column`` value out; ``holdout``: one split with
    ``val_fraction`` of the groups for validation; ``split``: the catalog's ``split`` column (``train``/``val``)
    decides; ``group_kfold_val``: k folds that validate on one part and
    train on the rest (no test part; ``folds`` picks how many models to train). ``ensemble`` is how ``classify``
    combines the fold models.
    """

    scheme: Literal["group_kfold", "label_hardness_kfold", "lodo", "holdout", "group_kfold_val", "split"] = (
        "group_kfold"
    )
    n_splits: int = 5
    domain_column: str = "domain"
    val_fraction: float = 0.2
    folds: list[int] | None = None
    ensemble: Literal["majority", "mean"] = "mean"


@dataclasses.dataclass
class ThresholdConfig:
    """How the decision threshold is chosen on validation data (``fixed`` skips the search)."""

    metric: Literal["balanced_accuracy", "f1", "youden", "equal_error"] = "balanced_accuracy"
    fixed: float | None = None


@dataclasses.dataclass
class ClassifierConfig:
    """A complete atypical-vs-normal classifier recipe (see ``configs/classifier-*.yaml``).

    Examples:
        >>> cfg = load_config({"train": {"epochs": 3}}, ClassifierConfig, ["optim.lr=3e-4"])
        >>> cfg.train.epochs, cfg.optim.lr, cfg.model.name
        (3, 0.0003, 'atypical_single')
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    cv: CVConfig = dataclasses.field(default_factory=CVConfig)
    threshold: ThresholdConfig = dataclasses.field(default_factory=ThresholdConfig)


# --------------------------------------------------------------------------------------------------------------
# Loading, overriding, saving
# --------------------------------------------------------------------------------------------------------------


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None,
    cls: type[T],
    overrides: Sequence[str] = (),
) -> T:
    """Build the dataclass ``cls`` from a YAML file or mapping, then apply ``key.path=value`` overrides.

    Missing keys keep the dataclass defaults. Unknown keys, wrong types and malformed overrides raise
    :class:`ConfigError` naming the key and the file (or ``--set`` for overrides).

    Args:
        source: path of a YAML file, a mapping, or ``None`` for the defaults.
        cls: the configuration dataclass (e.g. :class:`ClassifierConfig`).
        overrides: strings ``"a.b=value"``; ``value`` is parsed with ``yaml.safe_load``.

    Returns:
        An instance of ``cls``.

    Examples:
        >>> cfg = load_config(None, ClassifierConfig, ["model.kwargs.backbone=resnet18", "cv.folds=[0, 1]"])
        >>> cfg.model.kwargs, cfg.cv.folds
        ({'backbone': 'resnet18'}, [0, 1])
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    origin: object
    if source is None:
        raw: Any = {}
        origin = "<defaults>"
    elif isinstance(source, Mapping):
        raw = _plain(source)
        origin = "<dict>"
    else:
        path = recipe_path(source)
        origin = path
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML ({exc})", path=path) from exc
        if raw is None:
            raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(raw).__name__}", path=origin)
    for item in overrides:
        key, value = _parse_override(item)
        _check_path(cls, key.split("."), item)
        _set_path(raw, key.split("."), value, item)
    return _build(cls, raw, "", origin)


RECIPES = Path(__file__).resolve().parents[1] / "configs"


def recipe_path(source: str | os.PathLike[str]) -> Path:
    """A recipe file: ``source`` itself when it is a file, else the bundled recipe of that name.

    The recipes in ``configs/`` ship inside the package, so ``classifier-cpu`` (or ``classifier-cpu.yaml``)
    works wherever mitoscope is installed.

    Examples:
        >>> recipe_path("classifier-cpu").name
        'classifier-cpu.yaml'
        >>> recipe_path("no-such-recipe")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mitoscope.engine.config.ConfigError: no-such-recipe: configuration file not found; bundled recipes: ...
    """
    path = Path(source)
    if path.is_file():
        return path
    bundled = RECIPES / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if (len(path.parts) == 1 or path.parent.name == "configs") and bundled.is_file():
        return bundled
    names = ", ".join(sorted(f.stem for f in RECIPES.glob("*.yaml")))
    raise ConfigError(f"configuration file not found; bundled recipes: {names}", path=path)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain (YAML-safe) dict of a configuration dataclass.

    Examples:
        >>> config_to_dict(ClassifierConfig())["optim"]["name"]
        'adamw'
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError("config_to_dict expects a dataclass instance")
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved configuration ``cfg`` as YAML to ``path`` (atomically).

    Examples:
        >>> import tempfile, pathlib
        >>> p = save_config(ClassifierConfig(), pathlib.Path(tempfile.mkdtemp()) / "config.yaml")
        >>> load_config(p, ClassifierConfig) == ClassifierConfig()
        True
    """
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    return write_text_atomic(path, text)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``a.b=value`` strings into ``{"a.b": value}`` (values through ``yaml.safe_load``).

    Examples:
        >>> parse_overrides(["train.epochs=2", "model.name=atypical_single"])
        {'train.epochs': 2, 'model.name': 'atypical_single'}
    """
    return dict(_parse_override(item) for item in items)


# --------------------------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------------------------


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value", path="--set")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key", path="--set")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value ({exc})", path="--set") from exc
    return key, value


def _check_path(cls: type, parts: list[str], item: str) -> None:
    """Raise unless ``parts`` names a field of ``cls`` (anything goes below an open ``dict`` field)."""
    current: Any = cls
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(current)
        names = {f.name for f in dataclasses.fields(current)}
        if part not in names:
            where = ".".join(parts[:i]) or "top level"
            raise ConfigError(
                f"override {item!r}: unknown key {'.'.join(parts[: i + 1])!r} (known in {where}: "
                f"{', '.join(sorted(names))})",
                path="--set",
            )
        tp = _strip_optional(hints[part])
        if dataclasses.is_dataclass(tp):
            current = tp
            continue
        if i < len(parts) - 1 and typing.get_origin(tp) not in (dict, Mapping) and tp is not Any:
            raise ConfigError(
                f"override {item!r}: {'.'.join(parts[: i + 1])!r} is a value, not a section", path="--set"
            )
        return


def _set_path(raw: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section", path="--set")
        node = child
    node[parts[-1]] = value


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _build(cls: type[T], raw: Any, prefix: str, origin: object, base: Any = None) -> T:
    """``cls`` from the mapping ``raw``; keys it lacks keep ``base``'s values (else the class defaults)."""
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'top level'!r} must be a mapping, got {raw!r}", path=origin)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"unknown key {prefix + unknown[0]!r} in {where} (known: {', '.join(sorted(fields))})",
            path=origin,
        )
    values = {}
    for name in raw:
        default = _default_of(fields[name])
        if dataclasses.is_dataclass(default) and isinstance(raw[name], dict):
            # a section starts from the recipe's own default for it (e.g. the detector's Adam), not the class's
            values[name] = _build(type(default), raw[name], prefix + name + ".", origin, base=default)
        else:
            values[name] = _coerce(hints[name], raw[name], prefix + name, origin)
    if base is not None:
        return dataclasses.replace(base, **values)
    return cls(**values)


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _coerce(tp: Any, value: Any, key: str, origin: object) -> Any:
    if tp is Any:
        return value
    ori = typing.get_origin(tp)
    args = typing.get_args(tp)
    if ori in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, origin)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key!r}: {value!r} does not match {_type_name(tp)}", path=origin)
    if ori is Literal:
        if value not in args:
            raise ConfigError(f"{key!r}: {value!r} is not one of {list(args)}", path=origin)
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, {} if value is None else value, key + ".", origin)
    if ori in (dict, Mapping):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key!r} must be a mapping, got {value!r}", path=origin)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{key}.{k}", origin) for k, v in value.items()}
    if ori in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key!r} must be a list, got {value!r}", path=origin)
        if ori is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key!r} must have {len(args)} items, got {value!r}", path=origin)
            return tuple(
                _coerce(a, v, f"{key}[{i}]", origin) for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        et = args[0] if args else Any
        items = [_coerce(et, v, f"{key}[{i}]", origin) for i, v in enumerate(value)]
        return tuple(items) if ori is tuple else items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key!r} must be true or false, got {value!r}", path=origin)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key!r} must be an integer, got {value!r}", path=origin)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{key!r} must be a number, got {value!r}", path=origin)
        try:
            return float(value)  # YAML reads "1e-4" (no dot) as a string
        except ValueError:
            raise ConfigError(f"{key!r} must be a number, got {value!r}", path=origin) from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key!r} must be a string, got {value!r}", path=origin)
        return value
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
