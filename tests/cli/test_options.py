"""``--set key=value``: typed settings for the less common options of a command."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mitoscope.cli.options import parse_settings


@dataclasses.dataclass
class Extra:
    overlap: int = 64
    ratio: float = 0.5
    tissue: bool = True
    threads: int | None = None
    reference: Path | None = None
    reader: str = "thread"


def test_values_take_their_field_type() -> None:
    got = parse_settings(
        ["overlap=32", "ratio=1e-1", "tissue=no", "threads=2", "reference=ref.json", "reader=process"],
        Extra(),
    )
    assert got == Extra(32, 0.1, False, 2, Path("ref.json"), "process")
    assert parse_settings(["threads=none", "keep-going=1"][:1], Extra()).threads is None
    assert parse_settings([], Extra()) == Extra()


@pytest.mark.parametrize(
    ("item", "message"),
    [("overlap", "expected key=value"), ("zoom=2", "unknown key; choose from overlap"),
     ("overlap=a", "not a valid int"), ("tissue=maybe", "not a valid bool")],
)  # fmt: skip
def test_bad_items_are_named(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_settings([item], Extra())
