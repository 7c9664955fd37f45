"""How every command reports bad input: one ``error:`` line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

T = TypeVar("T")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (torch and pickle messages may span several; ``KeyError`` unquoted).

    Examples:
        >>> one_line(ValueError("bad\\n  value"))
        'bad value'
        >>> one_line(KeyError("missing"))
        'missing'
    """
    raw = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(raw).split())
    return text or type(exc).__name__


def fail(exc: BaseException | str, *, code: int = 1, prefix: str = "") -> NoReturn:
    """Print ``error: <prefix><message>`` on stderr and exit with ``code``."""
    message = exc if isinstance(exc, str) else one_line(exc)
    typer.secho(f"error: {prefix}{message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def input_errors() -> tuple[type[BaseException], ...]:
    """What the library raises for bad input: caught by the commands and reported with :func:`fail`."""
    from mitoscope.utils.errors import InputError
    from mitoscope.utils.optional import MissingDependencyError

    return (InputError, MissingDependencyError, ValueError, FileNotFoundError)


def run_reported(
    action: Callable[[], T],
    errors: tuple[type[BaseException], ...] = (ValueError, OSError),
    *,
    unusable_model: bool = False,
) -> T:
    """``action()`` (a library call) with the ``errors`` it raises for bad input (``InputError`` is a
    ``ValueError``) reported by :func:`fail`: one ``error:`` line and exit code 1, not a traceback.
    ``unusable_model``: any other exception too (a model file torch cannot use), named by its type.

    Examples:
        >>> run_reported(lambda: 2 + 2)
        4
    """
    try:
        return action()
    except errors as exc:
        fail(exc)
    except Exception as exc:
        if not unusable_model:
            raise
        fail(f"{type(exc).__name__}: {one_line(exc)}")


def quietly(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` without warnings, where the command reports what they would say itself.

    Examples:
        >>> quietly(int, "7")
        7
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)
