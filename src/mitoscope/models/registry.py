"""Model registry and factory (after timm ``_registry.py`` and torchvision ``_api.py``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

ModelBuilder = TypeVar("ModelBuilder", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_SIGNATURES: dict[str, inspect.Signature] = {}


def register_model(
    name: str | None = None, *, arguments_of: Callable[..., Any] | None = None
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a model builder under ``name`` (default: the function's name).

    Builders take keyword-only arguments. A builder that forwards ``**kwargs`` to a class names it in
    ``arguments_of``, so :func:`model_accepts` reports that class's arguments. Registering a name twice raises
    ``ValueError``.

    Examples:
        >>> @register_model("doc_example_linear")
        ... def _linear(*, features: int = 2) -> nn.Module:
        ...     return nn.Linear(features, 1)
        >>> create_model("doc_example_linear", features=3).in_features
        3
        >>> model_accepts("doc_example_linear", "features"), model_accepts("doc_example_linear", "bias")
        (True, False)
    """

    def wrap(fn: ModelBuilder) -> ModelBuilder:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        _MODELS[key] = fn
        _SIGNATURES[key] = inspect.signature(arguments_of or fn)
        return fn

    return wrap


def model_accepts(name: str, argument: str) -> bool:
    """Whether the registered model ``name`` takes the keyword ``argument`` (``False`` for an unknown model)."""
    _ensure_builtin_models()
    signature = _SIGNATURES.get(name)
    if signature is None:
        return False
    params = signature.parameters
    return argument in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _ensure_builtin_models() -> None:
    # Importing the package registers the built-in architectures.
    # lazy: the architectures import this registry (cycle)
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
