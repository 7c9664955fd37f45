"""Region throughput (mm² per minute) and peak memory of ``detect_slide`` on a large slide, against a naive loop.

Writes a tiled, pyramidal JPEG TIFF of ``--size``² px at 0.25 µm/px (default 40,000² px = 10 × 10 mm, 4.8 GB of
pixels) from a tile generator — white glass everywhere but a few blocks of synthetic H&E (``render_region``) — so
the file is written without ever holding the image in memory, and the tissue mask keeps the work small.

Each measurement runs in its own subprocess, which reports its own peak resident memory
(``getrusage(RUSAGE_SELF).ru_maxrss``, plus ``RUSAGE_CHILDREN`` for any reader processes) and its peak once torch
is imported, the model built and run on one tile (the floor every method pays; "above floor" is what the work adds):

* ``detect_slide``: the library (tissue mask, overlapping tiles at the model's 0.5 µm/px read from the pyramid,
  batches of 8, tiles read ahead by 2 threads), on the large slide and on a smaller one (``--naive-size``);
* ``detect_slide (no mask, region)``: the library on a band of the smaller slide, no tissue mask — the same work
  per tile as the naive loop, to compare per-tile speed;
* ``naive``: read the whole level-0 image into memory (``tifffile.imread``), resample it to 0.5 µm/px (Pillow box
  filter), cut it into the same overlapping 256 px tiles and run the model on one tile at a time, every tile
  (no tissue mask). It runs on the smaller slide (default 16,000² px: 768 MB of pixels; the 40k² slide would need
  4.8 GB + 1.2 GB resampled, on a 24 GB machine shared by several engineers), and stops after ``--naive-tiles``
  tiles (raster order) to fit in minutes: its whole-slide time is extrapolated from its per-tile time (marked).

The model is ``retinanet_multitask`` with the kwargs of ``configs/detector-cpu.yaml``, randomly initialised
(``pretrained=False``) via ``create_model``: speed and memory do not depend on the weights.

Throughput is reported two ways: *slide* mm²/min (slide area ÷ wall time, what a user sees; tissue masking makes
it large on a mostly-background slide) and *tile* mm²/min (area of the tile cores the model processed ÷ wall
time: the per-tile efficiency). Results go to ``benchmarks/results/detect_memory.json``.

Run:  ``OMP_NUM_THREADS=1 python benchmarks/detect_memory.py`` (about 4-6 min on 2 shared cores)
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
RESULTS = Path(__file__).resolve().parent / "results" / "detect_memory.json"
CONFIG = ROOT / "configs" / "detector-cpu.yaml"
SLIDE_MPP = 0.25
TILE = 256
OVERLAP = 32
BATCH = 8
GLASS = (242, 240, 244)


# --------------------------------------------------------------------------------------------- the slide


def tissue_blocks(size: int, n_blocks: int, block: int, seed: int = 0) -> list[tuple[int, int]]:
    """Top-left corners (level-0 px) of ``n_blocks`` non-overlapping tissue blocks spread over the slide."""
    rng = np.random.default_rng(seed)
    cells = max(1, size // (block * 2))
    picks = rng.choice(cells * cells, size=min(n_blocks, cells * cells), replace=False)
    step = size // cells
    return [(int(p % cells) * step + step // 4, int(p // cells) * step + step // 4) for p in picks]


def _reduce2(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    im = image[:h, :w].astype(np.uint16)
    return ((im[0::2, 0::2] + im[1::2, 0::2] + im[0::2, 1::2] + im[1::2, 1::2] + 2) // 4).astype(np.uint8)


def write_slide(path: Path, size: int, *, n_blocks: int, block: int = 1536, seed: int = 0) -> dict[str, Any]:
    """Write a ``size``² px pyramidal JPEG TIFF tile by tile: glass with ``n_blocks`` tissue blocks."""
    import tifffile

    from mitoscope.data.synthetic.region import render_region
    from mitoscope.io.tiff_writer import mpp_description

    corners = tissue_blocks(size, n_blocks, block, seed)
    images = [render_region((block, block), domain=i % 3, seed=seed + i).image for i in range(len(corners))]
    rng = np.random.default_rng(seed)
    glass = np.clip(rng.normal(0, 2, (TILE, TILE, 3)) + np.array(GLASS), 0, 255).astype(np.uint8)
    levels = []
    ds = 1
    while True:
        levels.append(ds)
        if math.ceil(size / ds) <= 1024:
            break
        ds *= 2

    def tiles(ds: int, pyramid: list[np.ndarray]) -> Any:
        n = math.ceil(size / ds)
        placed = [(x // ds, y // ds, im) for (x, y), im in zip(corners, pyramid, strict=True)]
        for ty in range(0, n, TILE):
            for tx in range(0, n, TILE):
                hits = [
                    (x, y, im)
                    for x, y, im in placed
                    if x < tx + TILE and x + im.shape[1] > tx and y < ty + TILE and y + im.shape[0] > ty
                ]
                if not hits:
                    yield glass
                    continue
                tile = glass.copy()
                for x, y, im in hits:
                    x0, y0 = max(x, tx), max(y, ty)
                    x1, y1 = min(x + im.shape[1], tx + TILE), min(y + im.shape[0], ty + TILE)
                    tile[y0 - ty : y1 - ty, x0 - tx : x1 - tx] = im[y0 - y : y1 - y, x0 - x : x1 - x]
                yield tile

    kwargs: dict[str, Any] = {
        "photometric": "rgb",
        "tile": (TILE, TILE),
        "compression": "jpeg",
        "compressionargs": {"level": 90},
        "metadata": None,
        "dtype": np.uint8,
    }
    res = 1e4 / SLIDE_MPP
    start = time.perf_counter()
    pyramid = images
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, ds in enumerate(levels):
            if i:
                pyramid = [_reduce2(im) for im in pyramid]
            n = math.ceil(size / ds)
            extra = (
                {"description": mpp_description(SLIDE_MPP)} if i == 0 else {"subfiletype": 1}
            )  # reduced pages after the first
            tif.write(
                tiles(ds, pyramid),
                shape=(n, n, 3),
                resolution=(res / ds, res / ds),
                resolutionunit="CENTIMETER",
                **extra,
                **kwargs,
            )
    return {
        "size_px": size,
        "area_mm2": round((size * SLIDE_MPP / 1000) ** 2, 3),
        "tissue_blocks": len(corners),
        "tissue_block_px": block,
        "tissue_area_mm2": round(len(corners) * (block * SLIDE_MPP / 1000) ** 2, 3),
        "pyramid_downsamples": levels,
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "write_seconds": round(time.perf_counter() - start, 1),
    }


# --------------------------------------------------------------------------------------------- children


def _peak_mb() -> float:
    """Peak resident memory (MB) of this process and, separately counted, its largest child."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own + kids


def build_model() -> tuple[Any, Any]:
    """``retinanet_multitask`` with the kwargs of configs/detector-cpu.yaml, random weights."""
    import yaml

    from mitoscope.models.checkpoint import ModelContract
    from mitoscope.models.registry import create_model

    spec = yaml.safe_load(CONFIG.read_text())["model"]
    kwargs = dict(spec["kwargs"], pretrained=False)
    model = create_model(spec["name"], **kwargs).eval()
    contract = ModelContract(
        spec["name"], kwargs, "detection", input_size=int(kwargs["tile_size"]), mpp=float(kwargs["mpp"])
    )
    return model, contract


def child(method: str, slide_path: str, max_tiles: int, band_rows: int) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model, contract = build_model()
    with torch.inference_mode():  # warm-up, so that one-off allocations are in the floor
        model([torch.rand(3, TILE, TILE)])
    floor = _peak_mb()  # high-water mark so far: imports, model building, one forward pass
    start = time.perf_counter()
    if method == "naive":
        info = naive_loop(model, contract, Path(slide_path), max_tiles=max_tiles)
    else:
        from mitoscope.inference.detect import detect_slide
        from mitoscope.io.slides import open_slide

        with open_slide(slide_path) as slide:
            region = None
            if method == "library_band":
                stride0 = (TILE - OVERLAP) * contract.mpp / slide.mpp
                region = (0, 0, slide.dimensions[0], int(band_rows * stride0 + OVERLAP * 2))
            found = detect_slide(
                model, contract, slide, batch_size=BATCH, overlap=OVERLAP, num_workers=2, reader="thread",
                progress=False, tissue=method == "library", threshold=0.5, region=region,
            )  # fmt: skip
            info = {
                "tiles_processed": int(found.attrs["tiles_processed"]),
                "tiles_total": int(found.attrs["tiles_total"]),
                "detections": len(found),
                "extrapolated": False,
                "region_mm2": None
                if region is None
                else round(region[2] * region[3] * (slide.mpp / 1000) ** 2, 4),
            }
    info["seconds"] = time.perf_counter() - start
    info["rss_floor_mb"] = round(floor, 1)
    info["peak_rss_mb"] = round(_peak_mb(), 1)
    return info


def naive_loop(model: Any, contract: Any, path: Path, *, max_tiles: int) -> dict[str, Any]:
    """Whole image in memory, resampled, tiled, one tile per forward pass (capped at ``max_tiles``)."""
    import tifffile
    import torch
    from PIL import Image

    from mitoscope.inference.detect import merge_by_distance

    t0 = time.perf_counter()
    image = tifffile.imread(path, key=0)  # the whole level 0
    h, w = image.shape[:2]
    scale = SLIDE_MPP / contract.mpp
    small = np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BOX))
    read_seconds = time.perf_counter() - t0
    stride = TILE - OVERLAP
    ys = list(range(0, max(1, small.shape[0] - OVERLAP), stride))
    xs = list(range(0, max(1, small.shape[1] - OVERLAP), stride))
    total = len(ys) * len(xs)
    points, scores, done = [], [], 0
    t1 = time.perf_counter()
    for y in ys:
        for x in xs:
            if done >= max_tiles:
                break
            tile = np.full((TILE, TILE, 3), 255, np.uint8)
            crop = small[y : y + TILE, x : x + TILE]
            tile[: crop.shape[0], : crop.shape[1]] = crop
            with torch.inference_mode():
                out = model([torch.from_numpy(tile).permute(2, 0, 1).float() / 255])[0]
            boxes = out["boxes"].numpy().reshape(-1, 4)
            keep = out["scores"].numpy() >= 0.5
            for b in boxes[keep]:
                points.append(((b[0] + b[2]) / 2 + x, (b[1] + b[3]) / 2 + y))
            scores.extend(out["scores"].numpy()[keep].tolist())
            done += 1
    loop_seconds = time.perf_counter() - t1
    merge_by_distance(np.asarray(points).reshape(-1, 2), np.asarray(scores), 7.5 / contract.mpp)
    del image, small
    per_tile = loop_seconds / max(done, 1)
    return {
        "tiles_processed": done,
        "tiles_total": total,
        "detections": len(scores),
        "read_resample_seconds": round(read_seconds, 2),
        "loop_seconds": loop_seconds,
        "extrapolated": done < total,
        "seconds_whole_slide_estimate": round(read_seconds + per_tile * total, 1),
    }


def run_child(method: str, slide: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, "--slide", str(slide),
           "--naive-tiles", str(args.naive_tiles), "--band-rows", str(args.band_rows)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} on {slide.name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- main


def _median(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every number over the rounds; the peak memory is the highest of the rounds."""
    merged = dict(infos[0])
    for key in (
        "seconds",
        "loop_seconds",
        "read_resample_seconds",
        "seconds_whole_slide_estimate",
        "rss_floor_mb",
    ):
        if key in merged:
            merged[key] = float(np.median([info[key] for info in infos]))
    merged["peak_rss_mb"] = max(info["peak_rss_mb"] for info in infos)
    merged["rounds"] = len(infos)
    return merged


def summarise(name: str, method: str, slide: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    core_mm2 = ((TILE - OVERLAP) * 0.5 / 1000) ** 2
    seconds = info["seconds"]
    whole = info.get("seconds_whole_slide_estimate") if info.get("extrapolated") else seconds
    area = info.get("region_mm2") or slide["area_mm2"]
    return {
        "method": name,
        "kind": method,
        "slide_px": slide["size_px"],
        "area_mm2": area,
        "tiles": f"{info['tiles_processed']}/{info['tiles_total']}",
        "seconds": round(seconds, 2),
        "slide_mm2_per_min": round(area / whole * 60, 2) if whole else None,
        "slide_rate_extrapolated": bool(info.get("extrapolated")),
        "tile_mm2_per_min": round(info["tiles_processed"] * core_mm2 / seconds * 60, 3),
        "seconds_per_tile": round(seconds / max(info["tiles_processed"], 1), 3),
        "rss_floor_mb": info["rss_floor_mb"],
        "peak_rss_mb": info["peak_rss_mb"],
        "peak_above_floor_mb": round(info["peak_rss_mb"] - info["rss_floor_mb"], 1),
        "rounds": info.get("rounds", 1),
        **{
            k: round(info[k], 2)
            for k in ("read_resample_seconds", "seconds_whole_slide_estimate")
            if k in info
        },
        **(
            {"model_loop_seconds_per_tile": round(info["loop_seconds"] / max(info["tiles_processed"], 1), 3)}
            if "loop_seconds" in info
            else {}
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=40_000, help="edge of the large slide (level-0 px)")
    parser.add_argument(
        "--naive-size", type=int, default=16_000, help="edge of the slide the naive loop reads"
    )
    parser.add_argument("--blocks", type=int, default=8, help="tissue blocks on the large slide")
    parser.add_argument(
        "--naive-tiles", type=int, default=72, help="tiles the naive loop runs before stopping"
    )
    parser.add_argument("--band-rows", type=int, default=2, help="tile rows of the no-mask library band")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--slide", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.slide, args.naive_tiles, args.band_rows)))
        return 0

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mitoscope-detect-memory-") as tmp:
        big, small = Path(tmp) / "big.tiff", Path(tmp) / "small.tiff"
        n_small = max(1, round(args.blocks * (args.naive_size / args.size) ** 2 + 0.49))
        slides = {
            "big": write_slide(big, args.size, n_blocks=args.blocks),
            "small": write_slide(small, args.naive_size, n_blocks=n_small, seed=1),
        }
        for key, s in slides.items():
            print(f"{key}: {s['size_px']}² px, {s['area_mm2']} mm², {s['tissue_blocks']} tissue blocks, "
                  f"{s['file_mb']} MB, written in {s['write_seconds']} s", flush=True)  # fmt: skip
        plan = [
            ("detect_slide", "library", "big"),
            ("detect_slide", "library", "small"),
            ("detect_slide (no mask, band)", "library_band", "small"),
            ("naive (whole image in RAM, 1 tile/pass)", "naive", "small"),
        ]
        runs: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(plan))}
        for rep in range(
            args.repeats
        ):  # round robin: load drift from other processes hits every method alike
            for i, (name, method, key) in enumerate(plan):
                runs[i].append(run_child(method, big if key == "big" else small, args))
                print(f"round {rep + 1}/{args.repeats}: {name} on {key}: {runs[i][-1]['seconds']:.1f} s, "
                      f"peak {runs[i][-1]['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        rows = [
            summarise(name, method, slides[key], _median(runs[i]))
            for i, (name, method, key) in enumerate(plan)
        ]
    lib_small = next(r for r in rows if r["kind"] == "library" and r["slide_px"] == args.naive_size)
    lib_big = next(r for r in rows if r["kind"] == "library" and r["slide_px"] == args.size)
    band = next(r for r in rows if r["kind"] == "library_band")
    naive = next(r for r in rows if r["kind"] == "naive")
    scale = (args.size / args.naive_size) ** 2
    naive_big_mb = naive["rss_floor_mb"] + naive["peak_above_floor_mb"] * scale
    ratios = {
        "slide_throughput_library_vs_naive_same_slide": round(
            lib_small["slide_mm2_per_min"] / naive["slide_mm2_per_min"], 2
        ),
        "tile_throughput_library_band_vs_naive_incl_read": round(
            band["tile_mm2_per_min"] / naive["tile_mm2_per_min"], 3
        ),
        "tile_throughput_library_band_vs_naive_model_loop_only": round(
            naive["model_loop_seconds_per_tile"] / band["seconds_per_tile"], 3
        ),
        "peak_above_floor_naive_vs_library_same_slide": round(
            naive["peak_above_floor_mb"] / max(lib_small["peak_above_floor_mb"], 1.0), 1
        ),
        "peak_rss_naive_vs_library_same_slide": round(naive["peak_rss_mb"] / lib_small["peak_rss_mb"], 2),
        "naive_peak_rss_mb_extrapolated_to_large_slide": round(naive_big_mb, 0),
        "peak_rss_naive_extrapolated_vs_library_large_slide": round(naive_big_mb / lib_big["peak_rss_mb"], 2),
    }
    result = {
        "benchmark": "detect_memory",
        "model": "retinanet_multitask, kwargs of configs/detector-cpu.yaml, random init (pretrained=False)",
        "settings": {
            "tile": TILE,
            "overlap": OVERLAP,
            "model_mpp": 0.5,
            "slide_mpp": SLIDE_MPP,
            "batch_size": BATCH,
            "readers": "2 threads",
            "naive_max_tiles": args.naive_tiles,
        },
        "slides": slides,
        "rows": rows,
        "ratios": ratios,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "note": "shared 2-core machine with a long benchmark running beside: absolute timings are noisy, "
            "compare ratios measured in the same run",
        },
        "notes": [
            "peak RSS is measured per subprocess (ru_maxrss of the process, plus its largest child if any)",
            "rss_floor_mb: peak resident memory after importing torch, building the model and one 1-tile forward pass",
            "naive loop stops after naive_max_tiles tiles; its slide rate uses read time + per-tile time x all tiles",
            "tile rate of the naive loop includes reading the whole image (amortised over naive_max_tiles only); "
            "the _model_loop_only ratio compares the per-tile time of its model loop alone",
            "the no-mask band and the naive tiles are background tiles (top rows of the slide); model time per "
            "tile barely depends on content",
            "naive peak at the large size is extrapolated: floor + (peak - floor) x area ratio",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    _print_table(rows, ratios)
    print(f"→ {args.out}")
    return 0


def _print_table(rows: list[dict[str, Any]], ratios: dict[str, Any]) -> None:
    head = f"{'method':42} {'slide px':>8} {'tiles':>11} {'s':>7} {'slide mm²/min':>13} {'tile mm²/min':>12} " \
           f"{'peak MB':>8} {'above floor':>11}"  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        star = "*" if r["slide_rate_extrapolated"] else " "
        print(f"{r['method'][:42]:42} {r['slide_px']:>8} {r['tiles']:>11} {r['seconds']:>7.1f} "
              f"{r['slide_mm2_per_min']:>12.2f}{star} {r['tile_mm2_per_min']:>12.3f} {r['peak_rss_mb']:>8.0f} "
              f"{r['peak_above_floor_mb']:>11.0f}")  # fmt: skip
    print("* extrapolated from the tiles run")
    for k, v in ratios.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
