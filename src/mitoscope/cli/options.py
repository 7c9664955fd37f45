"""The options the commands share, each defined once with one name, and ``--set key=value`` for the rest.

A command keeps about ten options in its help; less common settings are fields of a small dataclass that
``--set`` fills (:func:`parse_settings`), listed in the ``--set`` help of that command.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer

T = TypeVar("T")

DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N."
VERIFIER_HELP = (
    "The detector's verification stage: auto (the one a bundled detector names), none (the detector alone), or "
    "a bundled name / checkpoint / RUN folder of a mitotic-figure classifier."
)
WORKERS_HELP = "Image readers working ahead of the model (0: in the main thread)"


def out_option(help: str) -> Any:
    """``--out/-o`` (required)."""
    return typer.Option(..., "--out", "-o", help=help)


def model_option(default: str | None, help: str) -> Any:
    """``--model/-m``: a bundled model's name, a checkpoint or a training RUN folder."""
    return typer.Option(default, "--model", "-m", help=help)


PRECISION_HELP = "auto (bf16 on a CPU with native bf16, fp16 on CUDA, else fp32), fp32, bf16 or fp16."


def precision_option() -> Any:
    """``--precision``: the models' arithmetic (one vocabulary for every model)."""
    return typer.Option("auto", "--precision", help=PRECISION_HELP)


def device_option(default: str = "auto", help: str = DEVICE_HELP) -> Any:
    """``--device``."""
    return typer.Option(default, "--device", help=help)


def verifier_option() -> Any:
    """``--verifier``: auto, none or a classifier for the detector's verification stage."""
    return typer.Option("auto", "--verifier", help=VERIFIER_HELP)


def workers_option(default: int | None, detail: str = "") -> Any:
    """``--workers``: how many readers work ahead of the model (one name for every command)."""
    return typer.Option(default, "--workers", min=0, help=f"{WORKERS_HELP}{detail}.")


def batch_size_option(default: int, what: str) -> Any:
    """``--batch-size``."""
    return typer.Option(default, "--batch-size", min=1, help=f"{what} per forward pass.")


def mpp_option(help: str = "Microns per pixel of slides whose files do not store it.") -> Any:
    """``--mpp``."""
    return typer.Option(None, "--mpp", help=help)


def threshold_option(help: str, *, probability: bool = False) -> Any:
    """``--threshold`` (``probability``: bounded to [0, 1])."""
    if probability:
        return typer.Option(None, "--threshold", min=0.0, max=1.0, help=help)
    return typer.Option(None, "--threshold", help=help)


def tta_option() -> Any:
    """``--tta``: the classifier averages the 8 dihedral views."""
    return typer.Option(
        False, "--tta", help="Average the 8 dihedral views (rotations x flips) of each patch."
    )


def resume_option(help: str) -> Any:
    """``--resume/--no-resume``."""
    return typer.Option(True, "--resume/--no-resume", help=help)


def json_option(help: str) -> Any:
    """``--json``: where to write a JSON copy of the result."""
    return typer.Option(None, "--json", help=help)


def set_option(keys: str) -> Any:
    """``--set key=value`` (repeatable) for the settings listed in ``keys``."""
    return typer.Option([], "--set", "-s", help=f"Less common settings as key=value (repeatable): {keys}")


def _convert(key: str, text: str, kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args and len(args) < len(typing.get_args(kind)):  # X | None
        if text.lower() in ("", "none", "null"):
            return None
        kind = args[0]
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes", "on")
        if kind in (int, float, Path):
            return kind(text)
    except ValueError:
        raise ValueError(f"--set {key}={text}: not a valid {kind.__name__}") from None
    return text


def parse_settings(items: Sequence[str], defaults: T) -> T:
    """``defaults`` (a dataclass) with the ``key=value`` items of ``--set`` applied, each converted to its type.

    Examples:
        >>> @dataclasses.dataclass
        ... class Extra:
        ...     overlap: int = 64
        ...     tissue: bool = True
        ...     threads: int | None = None
        >>> parse_settings(["overlap=32", "tissue=false"], Extra())
        Extra(overlap=32, tissue=False, threads=None)
        >>> parse_settings(["zoom=2"], Extra())
        Traceback (most recent call last):
        ...
        ValueError: --set zoom=2: unknown key; choose from overlap, tissue, threads
    """
    hints = typing.get_type_hints(type(defaults))
    names = [f.name for f in dataclasses.fields(defaults)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        if key not in names:
            raise ValueError(f"--set {item}: unknown key; choose from {', '.join(names)}")
        changes[key] = _convert(key, text.strip(), hints[key])
    return dataclasses.replace(defaults, **changes)  # type: ignore[type-var]


def recipe_option(default: Any, examples: str) -> Any:
    """``--config/-c``: a recipe, a YAML file or a bundled name."""
    return typer.Option(
        default, "--config", "-c", help=f"Recipe: a YAML file or a bundled name ({examples})."
    )


def overrides_option(example: str) -> Any:
    """``--set/-s key.path=value`` (repeatable): override a recipe value."""
    return typer.Option(
        [], "--set", "-s", help=f"Override a recipe value, e.g. --set {example} (repeatable)."
    )


#: Where the tile options' defaults come from (``data info`` and ``data thumbnail`` count and draw the tiles).
TILES_NOTE = "defaults: `mitoscope detect` with the CPU detector"


def tile_size_option() -> Any:
    """``--tile-size``: the detector's tile edge."""
    return typer.Option(256, "--tile-size", min=16, help=f"Detector tile edge in px ({TILES_NOTE}).")


def tile_mpp_option() -> Any:
    """``--tile-mpp``: the detector's tile resolution."""
    return typer.Option(0.5, "--tile-mpp", min=0.01, help="Detector tile resolution in µm/px.")


def overlap_option() -> Any:
    """``--overlap``: between the detector's tiles."""
    return typer.Option(64, "--overlap", min=0, help="Overlap between detector tiles in px.")


def tile_settings(tile_size: int, tile_mpp: float, overlap: int) -> Any:
    """The :class:`~mitoscope.inference.slide_info.TileSettings` of ``--tile-size``, ``--tile-mpp`` and
    ``--overlap``; an ``InputError`` unless the overlap is smaller than the tile.

    Examples:
        >>> tile_settings(256, 0.5, 64).describe()
        '256 px tiles at 0.5 µm/px, overlap 64 px, ≥ 1% tissue per tile'
        >>> tile_settings(64, 0.5, 64)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        mitoscope.utils.errors.InputError: --overlap must be in [0, --tile-size), got 64 for 64 px tiles
    """
    from mitoscope.inference.slide_info import TileSettings
    from mitoscope.utils.errors import InputError

    if not 0 <= overlap < tile_size:
        raise InputError(f"--overlap must be in [0, --tile-size), got {overlap} for {tile_size} px tiles")
    return TileSettings(size=tile_size, mpp=tile_mpp, overlap=overlap)
