"""Patch sets: 128×128 PNGs centred on a mitotic figure, labelled by three simulated experts.

The output mirrors AMi-Br: ``Atypical/`` and ``Normal/`` folders and a ``labels.csv`` with the AMi-Br
columns plus ``domain`` and ``tumor``. Patches come from several synthetic slides per domain. The
``dataset`` column holds the domain name too (AMi-Br's ``dataset`` — MIDOG21 / TUPAC16 — is its
source domain, so a reader mapping ``dataset`` to the catalog's ``domain`` gets the synthetic domain).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mitoscope.data.synthetic.domains import (
    DomainStyle,
    get_domain,
    jitter_style,
    list_domains,
    select_domains,
)
from mitoscope.data.synthetic.experts import FigureSpec, sample_mitosis
from mitoscope.data.synthetic.output import Progress, check_count, prepared_output, run_jobs, save_png
from mitoscope.data.synthetic.region import render_canvas
from mitoscope.utils.errors import InputError

AMIBR_COLUMNS: tuple[str, ...] = (
    "file", "slide", "dataset", "uid", "x", "y", "expert1_label", "expert2_label",
    "expert1_atypical", "expert2_atypical", "expert3_atypical", "majority_atypical", "label",
)  # fmt: skip
LABEL_COLUMNS: tuple[str, ...] = (*AMIBR_COLUMNS, "domain", "tumor")
#: Context rendered around a patch so that border cells are complete.
MARGIN = 32
SLIDES_PER_DOMAIN = 4


def render_patch(
    spec: FigureSpec,
    style: DomainStyle,
    rng: np.random.Generator,
    *,
    size: int = 128,
    offset: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Render a size×size RGB patch with the figure ``spec`` at its centre (+ ``offset``).

    Examples:
        >>> from mitoscope.data.synthetic.domains import get_domain
        >>> from mitoscope.data.synthetic.experts import sample_mitosis
        >>> rng = np.random.default_rng(0)
        >>> render_patch(sample_mitosis(rng, 0.5), get_domain(0), rng, size=64).shape
        (64, 64, 3)
    """
    full = size + 2 * MARGIN
    c = (full - 1) / 2.0
    img = render_canvas((full, full), style, rng, [(c + offset[0], c + offset[1], spec)])
    return img[MARGIN : MARGIN + size, MARGIN : MARGIN + size]


def _slide_style(seed: int, name: str, slide_no: int) -> DomainStyle:
    """The jittered style of one synthetic slide (a pure function of its identity)."""
    dom_idx = list_domains().index(name)
    srng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, dom_idx, slide_no]))
    return jitter_style(get_domain(name), srng)


def _patch_job(
    i: int, child: np.random.SeedSequence, name: str, seed: int, size: int, atypical_fraction: float
) -> tuple[dict, np.ndarray]:
    """Render patch ``i``: its labels.csv row and its image."""
    rng = np.random.default_rng(child)
    style = get_domain(name)
    slide_no = int(rng.integers(SLIDES_PER_DOMAIN))
    spec = sample_mitosis(rng, atypical_fraction)
    label = "Atypical" if spec.atypical else "Normal"
    uid = i + 1
    img = render_patch(
        spec, _slide_style(seed, name, slide_no), rng, size=size, offset=tuple(rng.normal(0, 1.5, 2))
    )
    row = {
        "file": f"{label}/synth_{uid:06d}.png",
        "slide": f"synth_{name}_{slide_no:02d}",
        "dataset": name,
        "uid": uid,
        "x": int(rng.integers(2000, 60000)),
        "y": int(rng.integers(2000, 40000)),
        "expert1_label": spec.subclasses[0],
        "expert2_label": spec.subclasses[1],
        "expert1_atypical": bool(spec.votes[0]),
        "expert2_atypical": bool(spec.votes[1]),
        "expert3_atypical": bool(spec.votes[2]),
        "majority_atypical": bool(spec.atypical),
        "label": label,
        "domain": name,
        "tumor": style.tumor,
    }
    return row, img


def make_patch_set(
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    domains: int | list[str] = 1,
    seed: int = 0,
    size: int = 128,
    atypical_fraction: float = 0.25,
    overwrite: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
) -> Path:
    """Write ``n`` labelled patches (AMi-Br layout) into ``out_dir`` atomically.

    Patches are spread round-robin over the domains and, within a domain, over
    :data:`SLIDES_PER_DOMAIN` synthetic slides (``slide`` column), so group splits are possible.

    Args:
        out_dir: output folder; must not exist or be empty unless ``overwrite``.
        n: number of patches (>= 1).
        domains: a count K (the first K built-in domains) or a list of domain names.
        seed: random seed; same arguments give byte-identical files (whatever ``workers``).
        size: patch side in pixels (>= 32).
        atypical_fraction: share of figures drawn from atypical kinds (the label is the experts'
            majority, so the realised share differs slightly).
        overwrite: replace an existing non-empty ``out_dir``.
        workers: render in this many processes.
        progress: optional ``progress(done, total)`` callback.

    Returns:
        ``out_dir``.

    Raises:
        InputError: bad counts, size, fraction, domains, or an existing / unwritable output.

    Examples:
        >>> import tempfile, pathlib
        >>> out = make_patch_set(pathlib.Path(tempfile.mkdtemp()) / "p", n=2, domains=1, seed=0)
        >>> sorted(p.name for p in out.iterdir())
        ['Atypical', 'Normal', 'labels.csv']
    """
    n = check_count("n", n)
    size = check_count("size", size, minimum=32)
    workers = check_count("workers", workers)
    if not 0.0 <= float(atypical_fraction) <= 1.0:
        raise InputError(f"atypical fraction must be in [0, 1], got {atypical_fraction}")
    styles = select_domains(domains)
    import pandas as pd

    children = np.random.SeedSequence([int(seed), 1]).spawn(n)
    jobs = (
        (i, child, styles[i % len(styles)].name, int(seed), size, float(atypical_fraction))
        for i, child in enumerate(children)
    )
    rows = []
    with prepared_output(out_dir, overwrite=overwrite) as tmp:
        for cls in ("Atypical", "Normal"):
            (tmp / cls).mkdir()
        for row, img in run_jobs(_patch_job, jobs, total=n, workers=workers, progress=progress):
            save_png(tmp / row["file"], img)
            rows.append(row)
        pd.DataFrame(rows, columns=list(LABEL_COLUMNS)).to_csv(
            tmp / "labels.csv", index=False, lineterminator="\n"
        )
    return Path(out_dir)
