"""Model registry and factory (after timm ``_registry.py`` and torchvision ``_api.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

ModelBuilder = TypeVar("ModelBuilder", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a model builder under ``name`` (default: the function's name).

    Builders take keyword-only arguments. Registering a name twice raises ``ValueError``.

    Examples:
        >>> @register_model("doc_example_linear")
        ... def _linear(*, features: int = 2) -> nn.Module:
        ...     return nn.Linear(features, 1)
        >>> create_model("doc_example_linear", features=3).in_features
        3
    """

    def wrap(fn: ModelBuilder) -> ModelBuilder:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        return fn

    return wrap


def _ensure_builtin_models() -> None:
    # Importing the package registers the built-in architectures.
    import mitoscope.models.architectures  # noqa: F401


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    _ensure_builtin_models()
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``."""
    _ensure_builtin_models()
    try:
        builder = _MODELS[name]
    except KeyError:
        known = ", ".join(sorted(_MODELS)) or "none"
        raise KeyError(f"unknown model {name!r}; registered models: {known}") from None
    return builder(**kwargs)
