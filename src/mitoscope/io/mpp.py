"""Find the microns-per-pixel of a TIFF page in its metadata (Aperio, OME-XML, resolution tags)."""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

from mitoscope.utils.errors import InputError

_APERIO_MPP = re.compile(r"\bMPP\s*=\s*([0-9.eE+-]+)")
_OME_SIZE = re.compile(r'PhysicalSizeX="([0-9.eE+-]+)"')
_OME_UNIT = re.compile(r'PhysicalSizeXUnit="([^"]+)"')
_OME_TO_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


#: Where :func:`page_mpp_source` found the resolution (said after "from": "0.499 µm/px from the Aperio metadata").
APERIO_SOURCE = "the Aperio metadata"
OME_SOURCE = "the OME-XML metadata"
RESOLUTION_TAGS_SOURCE = "the TIFF resolution tags"


def mpp_from_description(description: str) -> float | None:
    """mpp from an Aperio-like (``|MPP = 0.25``) or OME-XML ImageDescription, else ``None``.

    Examples:
        >>> mpp_from_description("Aperio Image Library|AppMag = 20|MPP = 0.4990|Left = 1")
        0.499
        >>> mpp_from_description('<OME><Pixels PhysicalSizeX="0.25" PhysicalSizeXUnit="µm"/></OME>')
        0.25
        >>> mpp_from_description("nothing here") is None
        True
    """
    return _description_mpp(description)[0]


def _description_mpp(description: str) -> tuple[float | None, str]:
    if not description:
        return None, ""
    match = _APERIO_MPP.search(description)
    if match:
        value = _positive(match.group(1))
        if value is not None:
            return value, APERIO_SOURCE
    match = _OME_SIZE.search(description)
    if match:
        value = _positive(match.group(1))
        unit = _OME_UNIT.search(description)
        factor = _OME_TO_UM.get(unit.group(1), 1.0) if unit else 1.0
        if value is not None:
            return value * factor, OME_SOURCE
    return None, ""


def mpp_from_resolution(tags: Any) -> float | None:
    """mpp from TIFF ``XResolution`` + ``ResolutionUnit`` (2 inch, 3 centimetre); ``None`` without a unit.

    Examples:
        >>> class T(dict):
        ...     pass
        >>> class V:
        ...     def __init__(self, v): self.value = v
        >>> mpp_from_resolution(T(XResolution=V((40000, 1)), ResolutionUnit=V(3)))
        0.25
    """
    try:
        unit = int(tags["ResolutionUnit"].value)
        res = tags["XResolution"].value
    except (KeyError, TypeError, ValueError):
        return None
    pixels = (
        res[0] / res[1]
        if isinstance(res, tuple) and res[1]
        else float(res)
        if not isinstance(res, tuple)
        else 0
    )
    if pixels <= 0:
        return None
    if unit == 3:
        return _round(1e4 / pixels)
    if unit == 2:
        value = 25400.0 / pixels
        # 72 / 96 / 300 dpi are screen or print defaults, not a scan resolution
        return None if value > 50 else _round(value)
    return None


def _positive(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def page_mpp(page: Any) -> float | None:
    """mpp of a tifffile page: description first, then resolution tags."""
    return page_mpp_source(page)[0]


def page_mpp_source(page: Any) -> tuple[float | None, str]:
    """mpp of a tifffile page and where it was found (:data:`APERIO_SOURCE`, …; ``""`` when not found).

    Examples:
        >>> class Page:
        ...     description, tags = "Aperio Image Library|MPP = 0.4990", {}
        >>> page_mpp_source(Page())
        (0.499, 'the Aperio metadata')
    """
    value, source = _description_mpp(getattr(page, "description", "") or "")
    if value is not None:
        return value, source
    value = mpp_from_resolution(page.tags)
    return (value, RESOLUTION_TAGS_SOURCE) if value is not None else (None, "")


def resolve_mpp(
    path: str | os.PathLike[str], found: float | None, source: str, given: float | None
) -> tuple[float, bool, str]:
    """A slide's mpp, whether it is assumed, and where it comes from (worded to follow "0.5 µm/px").

    ``given`` (the user's ``--mpp``) wins over ``found`` (the file's, read ``from source``), with a warning when the
    file has none or says otherwise by more than 5 %. A non-positive ``given``, or no mpp at all, is an
    :class:`~mitoscope.utils.errors.InputError` naming ``path``.

    Examples:
        >>> resolve_mpp("s.svs", 0.499, "the Aperio metadata", None)
        (0.499, False, 'from the Aperio metadata')
        >>> resolve_mpp("s.svs", 0.499, "the Aperio metadata", 0.5)
        (0.5, False, 'as given (the file says 0.499)')
        >>> resolve_mpp("s.tif", None, "", None)
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: s.tif: no resolution (mpp) in the file's metadata; pass the microns per pixel with --mpp (or mpp=)
    """
    if found is not None and found <= 0:
        found = None  # a zero or negative mpp in a file says nothing
    if given is None:
        if found is None:
            raise InputError(
                "no resolution (mpp) in the file's metadata; pass the microns per pixel with --mpp (or mpp=)",
                path=path,
            )
        return float(found), False, f"from {source}"
    if given <= 0:
        raise InputError(f"mpp must be positive, got {given}", path=path)
    if found is None:
        warnings.warn(f"{path}: no mpp in the file; assuming {given:g} µm/px as given", stacklevel=4)
        return float(given), True, "as given"
    if abs(found - given) / found > 0.05:
        warnings.warn(f"{path}: the file says {found:g} µm/px; using the given {given:g} µm/px", stacklevel=4)
    return float(given), False, f"as given (the file says {found:g})"
