"""Detector precision as a slide feels it: recall, duplicates, tissue false positives per mm², expected F1.

MIDOG F1 on mosaics (a figure in every 24 µm cell) says little about a real slide with a handful of figures per
mm². For each held-out test set this benchmark splits the unmatched detections into *duplicates* (within 12 µm
of an annotated figure: a second point on it) and *tissue false positives* (the rest, per mm² of tissue), and
from recall R, duplicates per figure dup and FP/mm² predicts the F1 on a slide with M figures per mm²:
precision = R·M / (R·M + dup·M + FP/mm²) (:class:`mitoscope.metrics.detection.TissueErrors`). It also counts
the detections per mm² of tissue on the real CMU skin crop (no annotated figures: a biopsy that should hold a
handful at most), and times detection with and without the verification stage there.

Every figure comes from the code a user runs: :meth:`mitoscope.inference.detect.Detector.detect` at the
detector's own thresholds.

    .venv/bin/python benchmarks/detector_precision.py --detector mitoscope-detector \\
        --test amibr=/tmp/mitoscope-models/mosaics/AMi-Br/test --out benchmarks/results/detector_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CMU = ROOT.parent / "shared" / "data" / "slides" / "cmu_small_region.svs"
DENSITIES = (5.0, 10.0)


def region_detections(detector: Any, folder: Path, **detect_kwargs: Any) -> dict[str, Any]:
    """Detect on every region of a region folder: ``{"per_image", "mpp", "areas"}``."""
    from mitoscope.data.detection import default_opener
    from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
    from mitoscope.engine.detector_training import load_detection_data

    data = load_detection_data(folder)
    per_image, mpp, areas = {}, {}, {}
    for path, info in data.slides.items():
        with default_opener(path) as slide:
            found = detector.detect(slide, tissue=False, num_workers=0, progress=False, **detect_kwargs)
            areas[path] = tissue_area_mm2(*slide_tissue_mask(slide))
        gt = data.catalog[data.catalog["slide"] == path][["x", "y", "label"]].reset_index(drop=True)
        per_image[path] = (found, gt)
        mpp[path] = info.mpp
    return {"per_image": per_image, "mpp": mpp, "areas": areas}


def score_set(found: dict[str, Any], threshold: float | None = None) -> dict[str, Any]:
    """MIDOG F1 and the slide-density view of one test set."""
    from mitoscope.metrics.detection import midog_f1, tissue_errors

    f1 = midog_f1(found["per_image"], mpp=found["mpp"], threshold=threshold)
    errors = tissue_errors(
        found["per_image"], areas_mm2=found["areas"], mpp=found["mpp"], threshold=threshold
    )
    return {"mosaic_f1": f1.to_dict(), **errors.to_dict(DENSITIES), "regions": len(found["per_image"])}


def cmu_density(detector: Any, slide_path: Path = CMU) -> dict[str, Any]:
    """Detections per mm² of tissue on a slide with no annotated figures, and the seconds it took."""
    from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
    from mitoscope.io.slides import open_slide
    from mitoscope.metrics.intervals import poisson_rate_interval

    with open_slide(slide_path) as slide:
        mask = slide_tissue_mask(slide)
        area = tissue_area_mm2(*mask)
        t0 = time.perf_counter()
        found = detector.detect(slide, tissue=mask, progress=False)
        seconds = time.perf_counter() - t0
    return {
        "slide": slide_path.name,
        "tissue_mm2": area,
        "detections": len(found),
        "per_mm2": len(found) / area,
        **dict(zip(("per_mm2_low", "per_mm2_high"), poisson_rate_interval(len(found), area), strict=True)),
        "seconds": seconds,
        "mm2_per_min": area / seconds * 60,
        "points": found[["x", "y", "score"]].round(3).to_dict("records"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="mitoscope-detector", help="bundled name, checkpoint or run")
    parser.add_argument(
        "--verifier",
        default="mitoscope-verifier",
        help="the verification stage to measure beside the detector alone",
    )
    parser.add_argument(
        "--test", action="append", default=[], help="NAME=FOLDER of held-out regions (repeatable)"
    )
    parser.add_argument("--cmu", type=Path, default=CMU)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 (what the user gets: auto)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "detector_precision.json"
    )
    args = parser.parse_args(argv)
    import torch

    from mitoscope.inference.detect import Detector
    from mitoscope.utils.atomic import write_text_atomic

    torch.set_num_threads(args.threads)
    tests = dict(item.split("=", 1) for item in args.test)
    result: dict[str, Any] = {
        "benchmark": "detector_precision",
        "detector": args.detector,
        "densities": DENSITIES,
    }
    variants = {
        "detector alone": Detector.from_path(
            args.detector, device="cpu", verifier=None, precision=args.precision
        ),
        "with verifier": Detector.from_path(
            args.detector, device="cpu", verifier=args.verifier, precision=args.precision
        ),
    }
    result["precision"] = variants["detector alone"].precision
    for label, det in variants.items():
        part: dict[str, Any] = {"threshold": det.threshold}
        for name, folder in tests.items():
            part[name] = score_set(region_detections(det, Path(folder)))
        if args.cmu.is_file():
            part["cmu"] = cmu_density(det, args.cmu)
        result[label] = part
    if "cmu" in result["detector alone"]:
        base = result["detector alone"]["cmu"]["seconds"]
        result["verifier_time_ratio_cmu"] = result["with verifier"]["cmu"]["seconds"] / base
    result["machine"] = {
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2, default=float) + "\n")
    print_table(result)
    return result


def with_interval(figures: dict[str, Any], key: str, digits: int) -> str:
    """``figures[key]`` and its ``_low`` / ``_high`` interval as text.

    Examples:
        >>> with_interval({"r": 0.8, "r_low": 0.71, "r_high": 0.874}, "r", 3)
        '0.800 [0.71–0.87]'
    """
    low, high = figures[f"{key}_low"], figures[f"{key}_high"]
    bound = max(1, digits - 1)
    return f"{figures[key]:.{digits}f} [{low:.{bound}f}–{high:.{bound}f}]"


def print_table(result: dict[str, Any]) -> None:
    """One row per detector variant and test set; 95 % intervals in brackets (the expected F1's is the range
    of :meth:`~mitoscope.metrics.detection.TissueErrors.expected_f1_range`)."""
    header = f"{'variant':<16}{'test set':<18}{'recall':>20}{'dup/fig':>8}{'FP/mm²':>18}"
    header += "".join(f"{'F1@' + format(d, 'g'):>22}" for d in DENSITIES) + f"{'mosaic F1':>10}"
    print(header)
    for label in ("detector alone", "with verifier"):
        part = result.get(label)
        if not part:
            continue
        for name, s in part.items():
            if not isinstance(s, dict) or "recall" not in s:
                continue
            row = f"{label:<16}{name:<18}{with_interval(s, 'recall', 3):>20}"
            row += f"{s['duplicates_per_figure']:>8.3f}{with_interval(s, 'fp_per_mm2', 1):>18}"
            row += "".join(f"{with_interval(s, f'expected_f1_at_{d:g}', 3):>22}" for d in DENSITIES)
            print(row + f"{s['mosaic_f1']['f1']:>10.3f}")
        if "cmu" in part:
            c = part["cmu"]
            print(
                f"{label:<16}{'CMU skin':<18} {c['detections']} detections on {c['tissue_mm2']:.2f} mm² = "
                f"{c['per_mm2']:.1f}/mm² [{c['per_mm2_low']:.1f}–{c['per_mm2_high']:.1f}], "
                f"{c['mm2_per_min']:.1f} mm²/min"
            )


if __name__ == "__main__":
    main()
