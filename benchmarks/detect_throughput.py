"""Whole-slide detection throughput (tissue mm² per minute) and peak memory of the bundled detector, by precision
memory layout and tile size, end to end as ``mitoscope detect`` runs it (:meth:`mitoscope.inference.detect.Detector.detect`:
tissue mask, tiles read ahead by 2 threads, batches of 8, merging).

Two slides: the CMU-1 skin crop (real, 20x Aperio SVS, 0.60 mm² of tissue) and a tiled pyramidal TIFF of
synthetic H&E blocks on glass at 0.25 µm/px (``detect_memory.write_slide``). Each variant runs in its own
subprocess (peak RSS from ``getrusage``), ``--repeats`` times in alternation with the others, and the median
counts; ratios are against ``fp32, 256 px`` (the detector before ``--precision``) from the same run.

Run:  ``.venv/bin/python benchmarks/detect_throughput.py`` (about 5 min on 2 idle cores);
results in ``benchmarks/results/detect_throughput.json``. On a GPU: ``--device cuda --workers 8 --size 40000
--blocks 200 --threads 8 --out benchmarks/results/detect_throughput_gpu.json`` also samples the GPU's utilisation
(``nvidia-smi``, every 100 ms) while detecting.
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
#: name → (precision, channels-last, tile size in model px; None: the contract's 256), on the CPU ...
VARIANTS: dict[str, tuple[str, bool, int | None]] = {
    "fp32, NCHW (before)": ("fp32", False, None),
    "fp32, channels-last": ("fp32", True, None),
    "bf16, channels-last": ("bf16", True, None),
    "bf16, channels-last, 512 px": ("bf16", True, 512),
}
#: ... and on a GPU
GPU_VARIANTS: dict[str, tuple[str, bool, int | None]] = {
    "fp32, NCHW (before)": ("fp32", False, None),
    "fp16, channels-last": ("fp16", True, None),
    "bf16, channels-last": ("bf16", True, None),
}
BASELINE = "fp32, NCHW (before)"


def gpu_sampler() -> subprocess.Popen[str] | None:
    """``nvidia-smi`` printing the GPU's utilisation (%) every 100 ms, or None without one."""
    try:
        return subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    except OSError:
        return None


def child(job: dict[str, Any]) -> dict[str, Any]:
    """One end-to-end detection in this process: seconds, detections, peak RSS (and GPU utilisation)."""
    import torch

    from mitoscope.inference.detect import Detector
    from mitoscope.io.slides import open_slide

    torch.set_num_threads(job["threads"])
    detector = Detector.from_path(
        "mitoscope-detector", device=job["device"], verifier=None, precision=job["precision"]
    )
    if not job["channels_last"]:  # the detector before it ran channels-last
        detector.model = detector.model.to(memory_format=torch.contiguous_format)
    cuda = detector.device.type == "cuda"
    sampler = gpu_sampler() if cuda else None
    with open_slide(job["slide"]) as s:
        start = time.perf_counter()
        found = detector.detect(s, progress=False, tile_size=job["tile"], num_workers=job["workers"])
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    info: dict[str, Any] = {
        "seconds": seconds,
        "detections": len(found),
        "tiles": int(found.attrs["tiles_processed"]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if sampler is not None:
        sampler.terminate()
        samples = [float(v) for v in (sampler.communicate()[0] or "").split() if v.strip().isdigit()]
        info["gpu_utilisation_pct"] = round(float(np.mean(samples)), 1) if samples else None
        info["gpu"] = torch.cuda.get_device_name(detector.device)
    return info


def run_child(slide: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    precision, channels_last, tile = variants_for(args.device)[name]
    job = {
        "slide": str(slide),
        "precision": precision,
        "channels_last": channels_last,
        "tile": tile,
        "threads": args.threads,
        "device": args.device,
        "workers": args.workers,
    }
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def variants_for(device: str) -> dict[str, tuple[str, bool, int | None]]:
    return VARIANTS if device == "cpu" else GPU_VARIANTS


def tissue_mm2(slide: Path) -> float:
    """Tissue area of ``slide`` by the mask detection uses (and analyze divides by)."""
    from mitoscope.data.tissue import slide_tissue_mask, tissue_area_mm2
    from mitoscope.io.slides import open_slide

    with open_slide(slide) as s:
        mask, mask_mpp = slide_tissue_mask(s)
        return float(tissue_area_mm2(mask, mask_mpp))


def measure(slide: Path, args: argparse.Namespace) -> dict[str, Any]:
    area = tissue_mm2(slide)
    names = list(variants_for(args.device))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names:
            runs[name].append(run_child(slide, name, args))
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
            **({"gpu_utilisation_pct": infos[0]["gpu_utilisation_pct"]} if "gpu" in infos[0] else {}),
        }
    base = rows[BASELINE]["median_seconds"]
    for row in rows.values():
        row["speedup_vs_before"] = round(base / row["median_seconds"], 2)
    return {"tissue_mm2": round(area, 3), "variants": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to measure a GPU (its own variants)")
    parser.add_argument("--workers", type=int, default=2, help="tile readers (detect's --workers)")
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
        "device": args.device,
        "workers": args.workers,
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic.tiff"
        write_slide(synthetic, args.size, n_blocks=args.blocks)
        for key, slide in (("cmu_crop", CMU), ("synthetic_slide", synthetic)):
            result[key] = measure(slide, args)
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
                + (f"  GPU {row['gpu_utilisation_pct']}%" if "gpu_utilisation_pct" in row else "")
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
