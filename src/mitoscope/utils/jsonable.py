"""One way to make Python, NumPy and path values strict JSON, the same for every file mitoscope writes."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values, recursively.

    The policy: NaN and ±inf become ``None`` (``null``: strict JSON, which ``json.dumps`` would otherwise write as
    the non-standard ``NaN`` / ``Infinity``); NumPy scalars and arrays (and anything else with ``tolist()``, such
    as torch tensors) become Python numbers and lists; paths become strings; mappings become dicts with string
    keys; lists, tuples and sets become lists. Other values (str, int, bool, None, …) are returned unchanged, so
    ``json.dumps`` still rejects what it cannot write.

    Args:
        obj: a value, typically a nested dict of metrics or settings.

    Returns:
        The same structure, ready for ``json.dumps(..., allow_nan=False)``.

    Examples:
        >>> import json
        >>> from pathlib import PurePosixPath
        >>> json.dumps(to_jsonable({"a": float("nan"), "b": (np.float32(1.5), np.int64(2)), 3: np.array([np.inf])}))
        '{"a": null, "b": [1.5, 2], "3": [null]}'
        >>> to_jsonable({"run": PurePosixPath("runs/a"), "ok": np.bool_(True)})
        {'run': 'runs/a', 'ok': True}
    """
    if isinstance(obj, float):  # also np.float64, a float subclass
        return float(obj) if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic | np.ndarray) or hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    return obj
