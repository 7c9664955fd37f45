"""How every command reports bad input: one ``error:`` line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

from typing import NoReturn

import typer


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
