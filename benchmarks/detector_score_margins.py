"""Where a detector's scores fall: near each annotated figure, near each imposter, and everywhere else.

A detection set scored at one threshold hides whether a miss was near that threshold or far below it. This
benchmark runs the detector at a score floor of 0.01 on region folders and reports, for every annotated mitotic
figure and every annotated imposter (hard negative), the best detection score within 7.5 µm (MIDOG's match
radius; 0 when none), plus the scores of the detections near neither. At each threshold of a list it prints the
share of figures found, the share of imposters passed and the count of other detections.

    .venv/bin/python benchmarks/detector_score_margins.py --regions val=/tmp/mitoscope-models/synthetic/val
    (no --regions: the unseen synthetic domains that make_models.py scores, made in --work)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
MATCH_UM = 7.5
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def best_scores(found: Any, gt: Any, radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best detection score within ``radius_px`` of each figure and of each imposter, and the scores of the
    detections near no annotation."""
    xy, scores = found[["x", "y"]].to_numpy(float), found["score"].to_numpy(float)
    near_any = np.zeros(len(found), bool)
    figures, imposters = [], []
    for point in gt.itertuples(index=False):
        near = np.hypot(xy[:, 0] - point.x, xy[:, 1] - point.y) < radius_px
        near_any |= near
        best = float(scores[near].max()) if near.any() else 0.0
        (figures if point.label == "mitotic figure" else imposters).append(best)
    return np.array(figures), np.array(imposters), scores[~near_any]


def margins(found_set: dict[str, Any], thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, Any]:
    """Score quantiles and, per threshold, figures found / imposters passed / other detections."""
    parts = [
        best_scores(found, gt, MATCH_UM / found_set["mpp"][path])
        for path, (found, gt) in found_set["per_image"].items()
    ]
    figures, imposters, others = (np.concatenate([p[i] for p in parts]) for i in range(3))
    quantiles = (0.1, 0.25, 0.5, 0.75, 0.9)
    return {
        "figures": len(figures),
        "imposters": len(imposters),
        "figure_score_quantiles": dict(
            zip(map(str, quantiles), np.quantile(figures, quantiles).round(3), strict=True)
        ),
        "at": {
            str(t): {
                "figures_found": float(np.mean(figures >= t)),
                "imposters_passed": float(np.mean(imposters >= t)) if len(imposters) else None,
                "other_detections": int(np.sum(others >= t)),
            }
            for t in thresholds
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="mitoscope-detector", help="bundled name, checkpoint or run")
    parser.add_argument("--regions", action="append", default=[], help="NAME=FOLDER of regions (repeatable)")
    parser.add_argument(
        "--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mitoscope-models"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "detector_score_margins.json"
    )
    args = parser.parse_args(argv)
    import torch

    from detector_precision import region_detections
    from make_models import synthetic_unseen
    from mitoscope.inference.detect import Detector
    from mitoscope.utils.atomic import write_text_atomic

    torch.set_num_threads(args.threads)
    regions = dict(item.split("=", 1) for item in args.regions) or {
        "synthetic-unseen": str(synthetic_unseen(args.work))
    }
    detector = Detector.from_path(args.detector, device="cpu", verifier=None)
    result: dict[str, Any] = {
        "benchmark": "detector_score_margins",
        "detector": args.detector,
        "threshold": detector.threshold,
    }
    print(f"{args.detector}: its threshold {detector.threshold:.2f}")
    print("| regions | figures | figure score quartiles | " + " | ".join(f"@{t}" for t in THRESHOLDS) + " |")
    print("| --- " * (3 + len(THRESHOLDS)) + "|")
    for name, folder in regions.items():
        part = margins(region_detections(detector, Path(folder), threshold=0.01))
        result[name] = part
        q = part["figure_score_quantiles"]
        cells = [
            f"{a['figures_found']:.2f} / {a['imposters_passed'] or 0:.2f} / {a['other_detections']}"
            for a in part["at"].values()
        ]
        print(
            f"| {name} | {part['figures']} | {q['0.25']:.2f}, {q['0.5']:.2f}, {q['0.75']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    print("(cells: figures found / imposters passed / other detections)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2, default=float) + "\n")
    return result


if __name__ == "__main__":
    main()
