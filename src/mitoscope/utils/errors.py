"""Exceptions that carry where bad input was found."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: names the file (and row) and what is wrong with it."""

    def __init__(self, message: str, *, path: object = None, row: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
        self.path = path
        self.row = row
