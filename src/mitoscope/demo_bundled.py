"""``mitoscope demo``: the bundled models on real H&E shipped with the package, no data and no training.

Two real samples ship in ``mitoscope/samples/``:

- ``amibr_test/``: mosaics of AMi-Br patches (human breast cancer, MIT licence) from slides that no bundled model
  trained or validated on (the test part of the shared split), with their ground truth (figure centres and the
  experts' atypical/normal majority), so the demo prints MIDOG F1 and balanced accuracy next to the counts;
- ``cmu_small_region.svs``: a crop of the CMU-1 skin slide (CC0) with no annotated figures: tissue a lab could
  have, on which the demo prints how many figures the tool finds per mm².

The analysis is the one ``mitoscope analyze`` runs (resumable), and writes the HTML report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from mitoscope.demo import analyze_slides, evaluate_step, region_files
from mitoscope.inference.analyze import read_slide_result, slide_name_of
from mitoscope.models.pretrained import DEFAULT_MODELS
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.jsonable import to_jsonable

SAMPLES = "mitoscope.samples"
TISSUE_SAMPLE = "cmu_small_region.svs"
REGION_SAMPLE = "amibr_test"

Log = Callable[[str], None]


def sample_paths() -> dict[str, Path]:
    """``{"regions": folder of annotated mosaics, "tissue": the CMU skin crop}`` inside the package.

    Examples:
        >>> sorted(p.name for p in sample_paths().values())
        ['amibr_test', 'cmu_small_region.svs']
    """
    root = Path(str(resources.files(SAMPLES)))
    return {"regions": root / REGION_SAMPLE, "tissue": root / TISSUE_SAMPLE}


def run_bundled_demo(
    out: str | os.PathLike[str] = "mitoscope-demo", *, device: str = "cpu", log: Log | None = None
) -> dict[str, Any]:
    """Analyse the shipped samples with the bundled models, score them, write the report; results also in
    ``out/demo_results.json``."""
    log = log or print
    out = Path(out)
    samples = sample_paths()
    detector, classifier = DEFAULT_MODELS["detection"], DEFAULT_MODELS["classification"]
    slides = [*region_files(samples["regions"]), samples["tissue"]]
    analysis = out / "analysis"
    t0 = time.perf_counter()
    log(f"analysing {len(slides)} real samples with {detector} + {classifier} -> {analysis}")
    analyze_slides(slides, analysis, detector, classifier, device, log)
    results = evaluate_step(analysis, samples["regions"], classifier, device)
    tissue = read_slide_result(analysis / "slides" / slide_name_of(samples["tissue"])).summary
    results["tissue"] = {
        "slide": samples["tissue"].name,
        "figures": int(tissue["mitotic_count"]),
        "atypical": int(tissue["atypical_count"]),
        "tissue_mm2": float(tissue["tissue_area_mm2"]),
        "per_mm2": float(tissue["mitotic_count"]) / float(tissue["tissue_area_mm2"]),
    }
    results.update(
        detector=detector,
        classifier=classifier,
        report=str(analysis / "report" / "index.html"),
        seconds=round(time.perf_counter() - t0, 1),
    )
    write_text_atomic(out / "demo_results.json", json.dumps(to_jsonable(results), indent=2, default=str))
    return results
