"""Whole-slide detection throughput (tissue mm² per minute) and peak memory of the bundled detector, by precision
memory layout and tile size, end to end as ``mitoscope detect`` runs it (:meth:`mitoscope.inference.detect.Detector.detect`:
tissue mask, tiles read ahead by 2 threads, batches of 8, merging).

Two slides: the CMU-1 skin crop (real, 20x Aperio SVS, 0.60 mm² of tissue) and a tiled pyramidal TIFF of
synthetic H&E blocks on glass at 0.25 µm/px (``detect_memory.write_slide``). Each variant runs in its own
subprocess (peak RSS from ``getrusage``), ``--repeats`` times in alternation with the others, and the median
counts; ratios are against ``fp32, 256 px`` (the detector before ``--precision``) from the same run.

Run:  ``.venv/bin/python benchmarks/detect_throughput.py`` (about 5 min on 2 idle cores);
results in ``benchmarks/results/detect_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = ROOT / "benchmarks" / "results" / "detect_throughput.json"
CMU = ROOT.parent / "shared" / "data" / "slides" / "cmu_small_region.svs"
#: name → (precision, channels-last, tile size in model px; None: the contract's 256)
VARIANTS: dict[str, tuple[str, bool, int | None]] = {
    "fp32, NCHW (before)": ("fp32", False, None),
    "fp32, channels-last": ("fp32", True, None),
    "bf16, channels-last": ("bf16", True, None),
    "bf16, channels-last, 512 px": ("bf16", True, 512),
}
BASELINE = "fp32, NCHW (before)"


def child(slide: str, precision: str, channels_last: bool, tile: int | None, threads: int) -> dict[str, Any]:
    """One end-to-end detection in this process: seconds, detections and peak RSS."""
    import torch

    from mitoscope.inference.detect import Detector
    from mitoscope.io.slides import open_slide

    torch.set_num_threads(threads)
    detector = Detector.from_path("mitoscope-detector", device="cpu", verifier=None, precision=precision)
    if not channels_last:  # the detector before it ran channels-last
        detector.model = detector.model.to(memory_format=torch.contiguous_format)
    with open_slide(slide) as s:
        start = time.perf_counter()
        found = detector.detect(s, progress=False, tile_size=tile)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "detections": len(found),
        "tiles": int(found.attrs["tiles_processed"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(slide: Path, name: str, threads: int) -> dict[str, Any]:
    precision, channels_last, tile = VARIANTS[name]
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(slide),
        precision,
        str(int(channels_last)),
        str(tile or 0),
    ]
    cmd.append(str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def tissue_mm2(slide: Path) -> float:
    """Tissue area of ``slide`` by the mask detection uses (and analyze divides by)."""
    from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
    from mitoscope.io.slides import open_slide

    with open_slide(slide) as s:
        mask, mask_mpp = slide_tissue_mask(s)
        return float(tissue_area_mm2(mask, mask_mpp))


def measure(slide: Path, repeats: int, threads: int) -> dict[str, Any]:
    area = tissue_mm2(slide)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for r in range(repeats):
        for name in VARIANTS:
            runs[name].append(run_child(slide, name, threads))
            print(f"  {slide.name} {name} run {r + 1}: {runs[name][-1]['seconds']:.1f} s", flush=True)
    rows = {}
    for name, infos in runs.items():
        seconds = float(np.median([i["seconds"] for i in infos]))
        rows[name] = {
            "seconds": [round(i["seconds"], 2) for i in infos],
            "median_seconds": round(seconds, 2),
            "tissue_mm2_per_min": round(area / seconds * 60.0, 2),
            "detections": infos[0]["detections"],
            "tiles": infos[0]["tiles"],
            "peak_rss_mb": round(max(i["peak_rss_mb"] for i in infos), 1),
        }
    base = rows[BASELINE]["median_seconds"]
    for row in rows.values():
        row["speedup_vs_before"] = round(base / row["median_seconds"], 2)
    return {"tissue_mm2": round(area, 3), "variants": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=16384, help="synthetic slide edge (px at 0.25 µm/px)")
    parser.add_argument("--blocks", type=int, default=40, help="tissue blocks on the synthetic slide")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from detect_memory import write_slide
    from mitoscope.utils.atomic import write_text_atomic
    from mitoscope.utils.precision import cpu_has_native_bf16

    result: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": args.threads,
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic.tiff"
        write_slide(synthetic, args.size, n_blocks=args.blocks)
        for key, slide in (("cmu_crop", CMU), ("synthetic_slide", synthetic)):
            result[key] = measure(slide, args.repeats, args.threads)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print_table(result)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'slide':<16} {'variant':<28} {'mm²/min':>8} {'× before':>9} {'dets':>5} {'peak MB':>8}")
    for key in ("cmu_crop", "synthetic_slide"):
        for name, row in result[key]["variants"].items():
            print(
                f"{key:<16} {name:<28} {row['tissue_mm2_per_min']:>8.2f} {row['speedup_vs_before']:>9.2f} "
                f"{row['detections']:>5} {row['peak_rss_mb']:>8.0f}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        slide, precision, channels_last, tile, threads = sys.argv[2:7]
        print(json.dumps(child(slide, precision, channels_last == "1", int(tile) or None, int(threads))))
    else:
        main()
