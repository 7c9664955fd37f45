"""Region sets: tiled pyramidal TIFFs with MIDOG++ JSON annotations and atypical labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np

from mitoscope.data.synthetic.domains import get_domain, list_domains, select_domains
from mitoscope.data.synthetic.output import Progress, check_count, prepared_output, run_jobs
from mitoscope.data.synthetic.region import BORDER, MPP, SyntheticRegion, render_region
from mitoscope.io.midogpp import write_midogpp_json
from mitoscope.io.tiff_writer import write_tiled_tiff
from mitoscope.utils.errors import InputError

ANNOTATIONS_FILE = "annotations.json"
ATYPICAL_FILE = "atypical.csv"


def _check_size(size: object) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        raw_w, raw_h = cast("tuple[object, object]", tuple(size))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"size must be (width, height), got {size!r}") from None
    w = check_count("width", raw_w, minimum=2 * BORDER + 1)
    h = check_count("height", raw_h, minimum=2 * BORDER + 1)
    return w, h


def _region_job(
    name: str, seed: int, w: int, h: int, atypical_fraction: float, extra_tissue: float = 0.0
) -> SyntheticRegion:
    return render_region(
        (w, h), domain=name, seed=seed, atypical_fraction=atypical_fraction, extra_tissue=extra_tissue
    )


def make_region_set(
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    size: tuple[int, int] | int = (1024, 1024),
    domains: int | list[str] = 1,
    seed: int = 0,
    atypical_fraction: float = 0.3,
    extra_tissue: float = 0.0,
    overwrite: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
) -> Path:
    """Write ``n`` synthetic regions as tiled pyramidal TIFFs plus their annotations, atomically.

    ``out_dir`` gets ``synth_001.tiff`` …, ``annotations.json`` (MIDOG++ shape: ``images`` with
    ``tumor_type`` and ``domain``; ``annotations`` with 50×50 ``bbox``, ``category_id`` 1/2,
    ``labels`` votes, and ``atypical`` / ``kind`` on mitotic figures) and ``atypical.csv``
    (``image, x, y, atypical`` for every mitotic figure). Regions cycle through the domains.

    Args:
        out_dir: output folder; must not exist or be empty unless ``overwrite``.
        n: number of regions (>= 1).
        size: (width, height) of each region in pixels (or one int for squares).
        domains: a count K (first K built-in domains) or a list of domain names.
        seed: random seed; same arguments give byte-identical files.
        atypical_fraction: share of mitoses drawn from atypical kinds.
        extra_tissue: share of each region given to unlabelled non-tumour tissue (fat, vessels,
            necrosis, dense collagen) plus marking ink and blur; 0 (default) adds none.
        overwrite: replace an existing non-empty ``out_dir``.
        workers: render in this many processes (output does not depend on it).
        progress: optional ``progress(done, total)`` callback.

    Returns:
        ``out_dir``.

    Raises:
        InputError: bad counts, size, fractions, domains, or an existing / unwritable output.

    Examples:
        >>> import tempfile, pathlib
        >>> out = make_region_set(pathlib.Path(tempfile.mkdtemp()) / "r", n=1, size=(256, 256), seed=0)
        >>> sorted(p.name for p in out.iterdir())
        ['annotations.json', 'atypical.csv', 'synth_001.tiff']
    """
    import pandas as pd

    n = check_count("n", n)
    w, h = _check_size(size)
    workers = check_count("workers", workers)
    if not 0.0 <= float(atypical_fraction) <= 1.0:
        raise InputError(f"atypical fraction must be in [0, 1], got {atypical_fraction}")
    if not 0.0 <= float(extra_tissue) <= 1.0:
        raise InputError(f"extra_tissue must be in [0, 1], got {extra_tissue}")
    styles = select_domains(domains)
    images: list[dict] = []
    annotations: list[dict] = []
    atyp_rows: list[dict] = []
    seeds = np.random.SeedSequence([int(seed), 4]).generate_state(n)
    jobs = (
        (styles[i % len(styles)].name, int(seeds[i]), w, h, float(atypical_fraction), float(extra_tissue))
        for i in range(n)
    )
    with prepared_output(out_dir, overwrite=overwrite) as tmp:
        for i, region in enumerate(run_jobs(_region_job, jobs, total=n, workers=workers, progress=progress)):
            style = get_domain(region.domain)
            name = f"synth_{i + 1:03d}.tiff"
            write_tiled_tiff(tmp / name, region.image, mpp=MPP)
            image_id = i + 1
            images.append(
                {
                    "file_name": name,
                    "id": image_id,
                    "width": w,
                    "height": h,
                    "tumor_type": region.tumor,
                    "domain": region.domain,
                    "domain_index": list_domains().index(style.name),
                }
            )
            for row in region.points.itertuples(index=False):
                ann = {
                    "x": float(row.x),
                    "y": float(row.y),
                    "label": row.label,
                    "image_id": image_id,
                    "labels": list(row.votes),
                    "kind": row.kind,
                }
                if row.label == "mitotic figure":
                    ann["atypical"] = bool(row.atypical)
                    ann["atypical_votes"] = list(row.experts)
                    atyp_rows.append({"image": name, "x": row.x, "y": row.y, "atypical": bool(row.atypical)})
                annotations.append(ann)
        write_midogpp_json(tmp / ANNOTATIONS_FILE, images, annotations)
        pd.DataFrame(atyp_rows, columns=["image", "x", "y", "atypical"]).to_csv(
            tmp / ATYPICAL_FILE, index=False, lineterminator="\n"
        )
    return Path(out_dir)
