"""Speed of whole-slide detection (``mitoscope.inference.detect.detect_slide``).

Builds a synthetic "slide" — white glass with blocks of synthetic H&E tissue (``render_region``) covering about
half of it — writes it as a JPEG-compressed tiled pyramidal TIFF at 0.25 µm/px, and runs ``detect_slide`` on it
with:

* a randomly initialised ``retinanet_multitask`` as in ``configs/detector-cpu.yaml`` (EfficientNet-Lite0 + FPN 64,
  256 px tiles at 0.5 µm/px: every tile is read from 512 level-0 px and resampled) — compute-bound on a CPU —
  as built, and with its backbone's batch norms folded into the convolutions, as ``mitoscope detect`` runs it
  (``Detector`` folds them when it loads a checkpoint);
* a trivial dark-blob detector — reading-bound, which shows what the reading pipeline alone sustains.

Each is measured, in the same run, with tiles read in the main thread (``num_workers=0``, the baseline) and read
ahead by worker processes or by threads (prefetching while the model computes), with and without tissue-mask tile
skipping. The configurations are run round-robin (so that load drift from other processes hits all alike) and
the median of the rounds is reported: tiles/s, megapixels/s of model input, and slide megapixels/s (level-0 area of
the slide per second of wall time, the end-to-end figure). Results go to ``benchmarks/results/detect_speed.json``.

Run:  ``OMP_NUM_THREADS=2 python benchmarks/detect_speed.py --quick``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

RESULTS = Path(__file__).resolve().parent / "results" / "detect_speed.json"


class BlobDetector(nn.Module):
    """Boxes around dark connected regions (a near-free model, so reading dominates)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        from scipy import ndimage

        out = []
        for img in images:
            grey = img.mean(0).numpy()
            labels, _ = ndimage.label(grey < 0.25)
            sl = ndimage.find_objects(labels)
            boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in sl if s is not None]
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.ones(len(boxes)),
                    "labels": torch.ones(len(boxes), dtype=torch.int64),
                }
            )
        return out


def make_slide(path: Path, size: int, block: int = 1024, seed: int = 0) -> float:
    """Write a ``size``² slide: glass with synthetic tissue in a checkerboard of ``block``² cells; tissue fraction."""
    from mitoscope.data.synthetic import render_region
    from mitoscope.io.tiff_writer import write_tiled_tiff

    rng = np.random.default_rng(seed)
    canvas = np.clip(rng.normal(236, 3, (size, size, 3)), 0, 255).astype(np.uint8)
    cells = size // block
    library = [render_region((block, block), domain=i % 3, seed=seed + i).image for i in range(4)]
    tissue = 0
    for r in range(cells):
        for c in range(cells):
            if (r + c) % 2 == 0:
                canvas[r * block : (r + 1) * block, c * block : (c + 1) * block] = library[
                    (r * cells + c) % 4
                ]
                tissue += block * block
    write_tiled_tiff(path, canvas, mpp=0.25, tile=256, compression="jpeg", quality=90)
    return tissue / float(size * size)


def retinanet_cpu() -> tuple[nn.Module, Any]:
    from mitoscope.models.checkpoint import ModelContract
    from mitoscope.models.registry import create_model

    kwargs = dict(
        backbone="tf_efficientnet_lite0",
        pretrained=False,
        fpn_channels=64,
        tile_size=256,
        mpp=0.5,
        aux_hidden=64,
    )
    model = create_model("retinanet_multitask", **kwargs)
    contract = ModelContract("retinanet_multitask", kwargs, "detection", input_size=256, mpp=0.5)
    return model, contract


def retinanet_cpu_folded() -> tuple[nn.Module, Any]:
    """The same RetinaNet as ``mitoscope detect`` runs it: backbone batch norms folded (``Detector``)."""
    from mitoscope.inference.detect import fold_backbone_batchnorm

    model, contract = retinanet_cpu()
    return fold_backbone_batchnorm(model.eval(), int(contract.input_size)), contract


def blob_model() -> tuple[nn.Module, Any]:
    from mitoscope.models.checkpoint import ModelContract

    return BlobDetector(), ModelContract("blob", {}, "detection", input_size=256, mpp=0.5)


def run_once(model: nn.Module, contract: Any, slide_path: Path, *, workers: int, reader: str, tissue: bool,
             batch: int) -> tuple[float, int, int, tuple[int, int]]:  # fmt: skip
    """One ``detect_slide`` call on a freshly opened slide: seconds, tiles processed, tiles total, slide size."""
    from mitoscope.inference.detect import detect_slide
    from mitoscope.io.slides import open_slide

    with open_slide(slide_path) as slide:
        start = time.perf_counter()
        found = detect_slide(
            model, contract, slide, batch_size=batch, overlap=32, num_workers=workers, progress=False,
            tissue=tissue, threshold=1.1, reader="process" if reader == "main" else reader,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        return seconds, found.attrs["tiles_processed"], found.attrs["tiles_total"], slide.dimensions


def summarise(name: str, config: tuple[int, str, bool], runs: list[tuple[float, int, int, tuple[int, int]]],
              input_size: int) -> dict[str, Any]:  # fmt: skip
    workers, reader, tissue = config
    times = sorted(r[0] for r in runs)
    median = float(np.median(times))
    tiles, total, (w, h) = runs[0][1], runs[0][2], runs[0][3]
    return {
        "model": name,
        "reader": reader,
        "workers": workers,
        "tissue_mask": tissue,
        "repeats": len(runs),
        "seconds_median": round(median, 3),
        "seconds_min": round(times[0], 3),
        "seconds_max": round(times[-1], 3),
        "tiles": tiles,
        "tiles_total": total,
        "tiles_per_s": round(tiles / median, 3),
        "input_mpix_per_s": round(tiles * input_size**2 / 1e6 / median, 3),
        "slide_mpix_per_s": round(w * h / 1e6 / median, 3),
    }


CONFIGS = [
    (0, "main", False),
    (2, "process", False),
    (1, "thread", False),
    (2, "thread", False),
    (0, "main", True),
    (2, "process", True),
    (2, "thread", True),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2048² px slide, 2 rounds (5 for the blob model)"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="slide edge in level-0 px (default 2048 / 8192)"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or (2048 if args.quick else 8192)
    load_before = _loadavg()
    repeats = args.repeats or (2 if args.quick else 3)
    repeats_blob = max(repeats, 5)
    threads = torch.get_num_threads()
    cpus = os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as tmp:
        slide_path = Path(tmp) / "bench.tiff"
        t0 = time.perf_counter()
        fraction = make_slide(slide_path, size)
        print(f"slide {size}² px at 0.25 µm/px, tissue {fraction:.0%}, built in {time.perf_counter() - t0:.1f} s",
              flush=True)  # fmt: skip
        rows = []
        plan = (
            ("blob", blob_model, repeats_blob),
            ("retinanet_multitask (cpu recipe, random init)", retinanet_cpu, repeats),
            ("retinanet_multitask, backbone batch norms folded", retinanet_cpu_folded, repeats),
        )
        for name, build, n_rep in plan:
            torch.manual_seed(0)
            model, contract = build()
            model.eval()
            run_once(
                model, contract, slide_path, workers=0, reader="main", tissue=False, batch=args.batch_size
            )
            runs: dict[tuple[int, str, bool], list[Any]] = {c: [] for c in CONFIGS}
            for rep in range(n_rep):  # round robin: load drift from other processes hits every config alike
                for config in CONFIGS:
                    workers, reader, tissue = config
                    runs[config].append(run_once(model, contract, slide_path, workers=workers, reader=reader,
                                                 tissue=tissue, batch=args.batch_size))  # fmt: skip
                print(f"{name[:24]}: round {rep + 1}/{n_rep} done", flush=True)
            rows.extend(summarise(name, c, runs[c], contract.input_size) for c in CONFIGS)
    for row in rows:
        base = next(
            r for r in rows if r["model"] == row["model"] and r["workers"] == 0 and r["tissue_mask"] is False
        )
        row["speedup_vs_main_thread_no_mask"] = round(base["seconds_median"] / row["seconds_median"], 3)
    result = {
        "benchmark": "detect_speed",
        "setting": "quick" if args.quick else "full",
        "slide": {
            "size_px": size,
            "mpp": 0.25,
            "tissue_fraction": round(fraction, 3),
            "format": "tiled JPEG TIFF",
        },
        "batch_size": args.batch_size,
        "overlap": 32,
        "machine": {
            "cpu": cpu_model(),
            "cpus": cpus,
            "torch_threads": threads,
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "load_average_1min_before_after": [load_before, _loadavg()],
            "note": "shared machine: other engineers' tests/trainings were running; timings are noisy",
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    _print_table(rows)
    print(f"→ {args.out}")
    return 0


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'model':28s} {'reader':>7s} {'workers':>7s} {'mask':>5s} {'tiles':>6s} {'s':>8s} {'tiles/s':>8s} {'in Mpx/s':>9s} {'slide Mpx/s':>11s} {'speedup':>7s}"
    print(head)
    for r in rows:
        print(
            f"{r['model'][:28]:28s} {r['reader']:>7s} {r['workers']:7d} {('yes' if r['tissue_mask'] else 'no'):>5s} {r['tiles']:6d} "
            f"{r['seconds_median']:8.2f} {r['tiles_per_s']:8.2f} {r['input_mpix_per_s']:9.2f} {r['slide_mpix_per_s']:11.2f} "
            f"{r['speedup_vs_main_thread_no_mask']:7.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
