"""A labelled contact sheet: one row per figure kind, one column per domain, to judge realism."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mitoscope.data.synthetic.domains import jitter_style, select_domains
from mitoscope.data.synthetic.experts import FigureSpec, sample_imposter, sample_mitosis
from mitoscope.data.synthetic.figures import ATYPICAL_KINDS, IMPOSTER_KINDS, NORMAL_KINDS
from mitoscope.data.synthetic.output import check_count
from mitoscope.data.synthetic.patches import render_patch
from mitoscope.utils.atomic import atomic_path
from mitoscope.utils.errors import InputError

CELL = 128
LABEL_W = 150
HEADER_H = 36


def gallery_rows() -> list[tuple[str, str]]:
    """(row title, kind) of the gallery in order: normal, atypical, imposters, plain nuclei.

    Examples:
        >>> gallery_rows()[0]
        ('normal: prophase', 'prophase')
    """
    rows = [(f"normal: {k}", k) for k in NORMAL_KINDS]
    rows += [(f"atypical: {k}", k) for k in ATYPICAL_KINDS]
    rows += [(f"imposter: {k}", k) for k in IMPOSTER_KINDS]
    rows.append(("plain nucleus", "nucleus"))
    return rows


def _spec(rng: np.random.Generator, kind: str) -> FigureSpec:
    if kind in IMPOSTER_KINDS:
        return sample_imposter(rng, kind=kind)
    if kind == "nucleus":
        return FigureSpec("nucleus", False, 0.0, 0.0, (), False, ())
    spec = sample_mitosis(rng, 0.5, kind=kind)
    # show clear cases: typical severity for atypical kinds, no strays on normal ones
    sev = 0.7 if kind in ATYPICAL_KINDS else 0.0
    return FigureSpec(spec.kind, True, spec.latent, sev, spec.votes, spec.atypical, spec.subclasses)


def render_gallery(*, domains: int | list[str] = 6, seed: int = 0) -> np.ndarray:
    """The gallery as an RGB uint8 array.

    Examples:
        >>> render_gallery(domains=1, seed=0).shape[2]
        3
    """
    from PIL import Image, ImageDraw, ImageFont

    styles = select_domains(domains)
    rows = gallery_rows()
    w = LABEL_W + CELL * len(styles)
    h = HEADER_H + CELL * len(rows)
    sheet = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for j, style in enumerate(styles):
        head = "\n".join(style.name.rsplit("_", 1)) if len(style.name) > 14 else style.name
        draw.multiline_text((LABEL_W + j * CELL + 3, 2), head, fill=(0, 0, 0), font=font, spacing=1)
    for i, (title, kind) in enumerate(rows):
        y = HEADER_H + i * CELL
        draw.text((4, y + CELL // 2 - 8), title, fill=(0, 0, 0), font=font)
        for j, style in enumerate(styles):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), 3, i, j]))
            patch = render_patch(_spec(rng, kind), jitter_style(style, rng), rng, size=CELL)
            sheet.paste(Image.fromarray(patch), (LABEL_W + j * CELL, y))
    return np.asarray(sheet)


def make_gallery(path: str | os.PathLike[str], *, domains: int | list[str] = 6, seed: int = 0) -> Path:
    """Write the gallery PNG (rows = kinds, columns = domains) atomically and return its path.

    Examples:
        >>> import tempfile, pathlib
        >>> p = make_gallery(pathlib.Path(tempfile.mkdtemp()) / "g.png", domains=1)
        >>> p.suffix
        '.png'
    """
    from PIL import Image

    if isinstance(domains, int):
        check_count("domains", domains)
    out = Path(path)
    if out.exists() and out.is_dir():
        raise InputError("gallery output is a folder, expected a .png file", path=out)
    image = render_gallery(domains=domains, seed=seed)
    try:
        with atomic_path(out, suffix=".png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG", compress_level=6)
    except OSError as exc:
        raise InputError(f"cannot write gallery: {exc.strerror or exc}", path=out) from exc
    return out
