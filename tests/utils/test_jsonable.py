"""utils.jsonable: one NaN policy for every JSON file mitoscope writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mitoscope.utils.jsonable import to_jsonable


def test_nan_and_inf_become_null_everywhere() -> None:
    data = {
        "nan": math.nan,
        "inf": math.inf,
        "neg": -math.inf,
        "np": np.float32("nan"),
        "array": np.array([1.0, np.nan, -np.inf]),
        "nested": [{"x": (math.nan, 0.5)}],
    }
    out = to_jsonable(data)
    assert out == {
        "nan": None,
        "inf": None,
        "neg": None,
        "np": None,
        "array": [1.0, None, None],
        "nested": [{"x": [None, 0.5]}],
    }
    json.dumps(out, allow_nan=False)  # strict JSON


def test_numpy_torch_and_paths_become_python() -> None:
    out = to_jsonable(
        {
            1: np.int64(3),
            "f": np.float64(0.25),
            "b": np.bool_(False),
            "m": np.arange(4).reshape(2, 2),
            "t": torch.tensor([1.5, 2.0]),
            "p": Path("runs") / "a",
            "s": {7},
        }
    )
    assert out == {
        "1": 3,
        "f": 0.25,
        "b": False,
        "m": [[0, 1], [2, 3]],
        "t": [1.5, 2.0],
        "p": "runs/a",
        "s": [7],
    }
    assert type(out["1"]) is int and type(out["f"]) is float and type(out["b"]) is bool


def test_plain_values_pass_and_unknown_objects_still_fail_in_json() -> None:
    assert to_jsonable({"a": "x", "b": None, "c": True, "d": 2}) == {"a": "x", "b": None, "c": True, "d": 2}
    with pytest.raises(TypeError):
        json.dumps(to_jsonable({"o": object()}))
