"""How sharp the patches of each set are, and how far ``data.augment.sharpness`` moves them (rule 17).

Sharpness is ``bench_helpers.laplacian_variance`` (the variance of the Laplacian) of the patch at its native
resolution. Reads only images, never labels. Prints the percentiles per set and domain, and the median factor
by which :func:`mitoscope.data.transforms.sharpen` at a few gains changes it on the first set; writes JSON.

    python benchmarks/sharpness_shift.py ../shared/data/amibr ../shared/data/atnorm-md \
        --json benchmarks/results/sharpness_shift.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench_helpers import laplacian_variance  # benchmarks/bench_helpers.py (scripts run from this folder)
from mitoscope.data.sources import load_catalog
from mitoscope.data.transforms import sharpen
from mitoscope.io.image_slide import read_image

GAINS = (0.4, 2 / 3, 1.5, 2.5)  # the bounds of sharpness 1.5 and 0.5, both ways


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="catalog sources (folders or CSVs mitoscope reads)")
    parser.add_argument("--per-set", type=int, default=400, help="random patches per set (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    result: dict[str, dict] = {"sets": {}, "gain_factor_on_first_set": {}}
    print("| set | domain | n | sharpness p10 | median | p90 |\n| --- | --- | --- | --- | --- | --- |")
    first_images: list[np.ndarray] = []
    for source in args.sources:
        catalog = load_catalog(source).reset_index(drop=True)
        rows = catalog.iloc[np.sort(rng.choice(len(catalog), min(args.per_set, len(catalog)), replace=False))]
        images = [read_image(path) for path in rows["image"]]
        values = np.array([laplacian_variance(image) for image in images])
        first_images = first_images or images
        groups = {"all": np.ones(len(rows), bool)} | {
            str(d): (rows["domain"] == d).to_numpy() for d in sorted(rows["domain"].unique())
        }
        result["sets"][source] = {}
        for name, keep in groups.items():
            p10, p50, p90 = np.percentile(values[keep], [10, 50, 90])
            result["sets"][source][name] = {"n": int(keep.sum()), "p10": p10, "median": p50, "p90": p90}
            print(f"| {source} | {name} | {keep.sum()} | {p10:.0f} | {p50:.0f} | {p90:.0f} |")
    print("\n| gain | median factor on the first set |\n| --- | --- |")
    for gain in GAINS:
        factor = float(
            np.median([laplacian_variance(sharpen(im, gain)) / laplacian_variance(im) for im in first_images])
        )
        result["gain_factor_on_first_set"][f"{gain:.3f}"] = factor
        print(f"| {gain:.3f} | {factor:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
