"""Alias of :mod:`mitoscope.io.midog_outputs` (the MIDOG Track 1 / Track 2 writers), for callers using this name."""

from __future__ import annotations

from mitoscope.io.midog_outputs import (
    read_stack_page,
    read_track1_json,
    read_track2_json,
    read_track2_stack,
    write_track1_json,
    write_track2_json,
)

__all__ = [
    "read_stack_page",
    "read_track1_json",
    "read_track2_json",
    "read_track2_stack",
    "write_track1_json",
    "write_track2_json",
]
