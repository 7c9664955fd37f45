"""Helpers shared by the readers: reading a table or JSON file, checking columns, finding image files, skipping bad rows."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from mitoscope.utils.errors import InputError


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; an unreadable or malformed file raises :class:`InputError` naming it.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = p.write_text('{"a": 1}')
        >>> read_json(p)
        {'a': 1}
    """
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", path=path) from exc


def read_table(path: str | os.PathLike[str], *, sep: str | None = None) -> pd.DataFrame:
    """Read a CSV (separator sniffed when ``sep`` is None) as strings; ``InputError`` when unreadable.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("a;b\\n1;2\\n")
        >>> read_table(p).columns.tolist()
        ['a', 'b']
    """
    if not os.path.isfile(path):
        raise InputError("file not found", path=path)
    try:
        return pd.read_csv(
            path, sep=sep, engine="python" if sep is None else "c", dtype=str, keep_default_na=False
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"cannot read as a table: {exc}", path=path) from exc


def require_columns(frame: pd.DataFrame, columns: Iterable[str], *, path: object, what: str = "") -> None:
    """Raise ``InputError`` naming the file, the missing columns and the columns found.

    Examples:
        >>> require_columns(pd.DataFrame({"a": [1]}), ["a"], path="x.csv")
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        kind = f" for {what}" if what else ""
        raise InputError(f"missing columns {missing}{kind}; found {list(frame.columns)}", path=path)


def find_files(root: str | os.PathLike[str], *, suffixes: Iterable[str] | None = None) -> dict[str, Path]:
    """Map file name → path for every file under ``root`` (any depth); the first found wins.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "A").mkdir(); _ = (d / "A" / "1.png").write_bytes(b"")
        >>> sorted(find_files(d))
        ['1.png']
    """
    wanted = {s.lower() for s in suffixes} if suffixes else None
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if wanted is not None and Path(name).suffix.lower() not in wanted:
                continue
            found.setdefault(name, Path(dirpath) / name)
    return found


class BadRows:
    """Collects problems per row: raises at once, or (``skip_bad``) remembers them for a report.

    Examples:
        >>> bad = BadRows("x.csv", skip_bad=True)
        >>> bad.add(3, "image missing")
        >>> bad.skipped
        [(3, 'image missing')]
    """

    def __init__(self, path: object, *, skip_bad: bool) -> None:
        self.path = path
        self.skip_bad = skip_bad
        self.skipped: list[tuple[int, str]] = []

    def add(self, row: int, problem: str) -> None:
        """Report a bad row (``row`` as the user sees it in the file: header = row 1)."""
        if not self.skip_bad:
            raise InputError(problem, path=self.path, row=row)
        self.skipped.append((row, problem))

    def finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Attach the skipped rows to ``frame.attrs['skipped']`` and warn with a summary."""
        frame.attrs["skipped"] = [{"row": r, "problem": p} for r, p in self.skipped]
        if self.skipped:
            first = "; ".join(f"row {r}: {p}" for r, p in self.skipped[:3])
            more = f" (and {len(self.skipped) - 3} more)" if len(self.skipped) > 3 else ""
            warnings.warn(f"{self.path}: skipped {len(self.skipped)} bad rows: {first}{more}", stacklevel=3)
        return frame


_TRUE = {"1", "true", "yes", "y", "t", "atypical", "amf"}
_FALSE = {"0", "false", "no", "n", "f", "normal", "nmf"}


def parse_vote(value: object) -> int | None:
    """A vote as 1 (atypical / true), 0 (normal / false) or ``None`` (blank).

    Examples:
        >>> [parse_vote(v) for v in ("AMF", "NMF", "", "True", "Normal")]
        [1, 0, None, 1, 0]
    """
    text = str(value).strip().lower() if value is not None else ""
    if text in ("", "nan", "none"):
        return None
    if text in _TRUE or text.startswith("amf"):
        return 1
    if text in _FALSE or text.startswith("nmf"):
        return 0
    raise ValueError(f"cannot read vote {value!r} (expected Atypical/Normal, AMF/NMF, True/False or 1/0)")
