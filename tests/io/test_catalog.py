"""The catalog shape every reader builds: defaults, derived columns, unknown labels."""

from __future__ import annotations

import math

import pytest

from mitoscope.io.catalog import CATALOG_COLUMNS, make_catalog, validate_catalog


def test_catalog_defaults_and_derived_columns() -> None:
    cat = make_catalog(
        [
            {"slide": "s1", "x": 10, "y": 20, "label": "mitotic figure", "experts": (1, 1, 1)},
            {"image": "p.png", "label": "normal", "experts": (0, None, 1)},
        ]
    )
    validate_catalog(cat)
    assert tuple(cat.columns) == CATALOG_COLUMNS
    assert cat["target"].tolist() == [1, 0]
    assert cat["hard"].tolist() == [False, True]
    assert cat["group"].tolist() == ["s1", "p.png"]
    assert math.isnan(cat.loc[1, "x"])
    with pytest.raises(ValueError, match="unknown label"):
        make_catalog([{"label": "weird"}])
