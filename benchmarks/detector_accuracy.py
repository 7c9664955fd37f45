"""Detector accuracy benchmark: the multi-task RetinaNet on unseen synthetic domains and on real AMi-Br mosaics.

Part 1 — leave-domain-out on synthetic regions: train on some stain/scanner/tumour domains, tune the threshold
on validation regions of those domains, and report MIDOG F1 on regions of domains never seen in training, for
the ablation variants of Zhang et al. (baseline without auxiliary heads, +foreground, +tumour, +augmentation,
all; ``--quick`` runs only baseline and all).

Part 2 — the recommended detector: synthetic regions + real AMi-Br mosaics (slide-disjoint split) in training,
F1 on the held-out real mosaic test split (and, for comparison, the synthetic-only "all" detector of part 1 on
the same real mosaics).

Writes ``benchmarks/results/detector_accuracy.json`` and prints a table. All numbers are measured here, on CPU
unless ``--device`` says otherwise; nothing is taken from the paper.

    .venv/bin/python benchmarks/detector_accuracy.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAIN_DOMAINS = ["breast_xr", "lymphoma_cs2", "melanoma_xr", "lung_gt450"]
TEST_DOMAINS = ["neuroendocrine_3dh", "sarcoma_cs2"]

# variant name -> recipe overrides (on top of the base recipe)
VARIANTS: dict[str, list[str]] = {
    "baseline": ["model.kwargs.aux_tumor=false", "model.kwargs.aux_foreground=false", "data.augment=false"],
    "+foreground": ["model.kwargs.aux_tumor=false", "model.kwargs.aux_foreground=true", "data.augment=false"],
    "+tumour": ["model.kwargs.aux_tumor=true", "model.kwargs.aux_foreground=false", "data.augment=false"],
    "+augmentation": [
        "model.kwargs.aux_tumor=false",
        "model.kwargs.aux_foreground=false",
        "data.augment=true",
    ],
    "all": ["model.kwargs.aux_tumor=true", "model.kwargs.aux_foreground=true", "data.augment=true"],
}
QUICK_VARIANTS = ["baseline", "all"]

# --quick: small crops and few steps so that three trainings fit in well under an hour on 2 busy CPU cores
QUICK = [
    "model.kwargs.tile_size=128",
    "data.crop_size=128",
    "data.batch_size=4",
    "data.crops_per_epoch=96",
    "data.margin=8",
    "train.epochs=3",
    "eval.overlap=32",
]


def _make_synthetic(work: Path, quick: bool, seed: int) -> dict[str, Path]:
    from mitoscope.data.synthetic.regions import make_region_set

    size = 768 if quick else 1024
    per_domain = 4 if quick else 10
    sets = {
        "train": (len(TRAIN_DOMAINS) * per_domain, TRAIN_DOMAINS, seed),
        "val": (len(TRAIN_DOMAINS) * (1 if quick else 3), TRAIN_DOMAINS, seed + 1),
        "test_unseen": (len(TEST_DOMAINS) * (3 if quick else 8), TEST_DOMAINS, seed + 2),
    }
    out = {}
    for name, (n, domains, s) in sets.items():
        folder = work / "synthetic" / name
        if not (folder / "annotations.json").is_file():
            if folder.exists():
                shutil.rmtree(folder)
            make_region_set(folder, n=n, size=(size, size), domains=list(domains), seed=s)
        out[name] = folder
    return out


def _train_and_score(
    name: str,
    overrides: list[str],
    train: list[Path],
    val: list[Path],
    tests: dict[str, list[Path]],
    work: Path,
    device: str,
) -> dict[str, Any]:
    from mitoscope.engine.detector_training import (
        evaluate_checkpoint,
        load_detector_config,
        region_detector,
        train_detector,
    )
    from mitoscope.inference.detect import detect_slide

    detect = region_detector(detect_slide)
    cfg = load_detector_config(ROOT / "configs" / "detector-cpu.yaml", overrides)
    t0 = time.perf_counter()
    run = train_detector(
        cfg,
        [str(p) for p in train],
        work / "runs" / name,
        device=device,
        val_data=[str(p) for p in val],
        progress=False,
        detect=detect,
    )
    train_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "overrides": overrides,
        "val_f1": run.best_f1,
        "threshold": run.threshold,
        "epochs_run": run.epochs_run,
        "train_seconds": round(train_s, 1),
    }
    for test_name, folders in tests.items():
        t1 = time.perf_counter()
        scored = evaluate_checkpoint(
            run.best_path,
            [str(p) for p in folders],
            overlap=cfg.eval.overlap,
            batch_size=cfg.eval.batch_size,
            detect=detect,
        )
        result[test_name] = {**scored, "seconds": round(time.perf_counter() - t1, 1)}
    print(
        f"  {name:<14} val F1 {run.best_f1:.3f} (t={run.threshold:.2f})  "
        + "  ".join(f"{k} F1 {v['f1']:.3f}" for k, v in result.items() if isinstance(v, dict)),
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 2 ablation variants, few steps")
    parser.add_argument(
        "--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mitoscope-detector-bench"
    )
    parser.add_argument("--amibr", type=Path, default=ROOT.parent / "shared" / "data" / "amibr")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "detector_accuracy.json"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first (no resume)")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated part-1 variants to train (default: all five; --quick: baseline,all; '' skips "
        "part 1, e.g. to time the recommended detector alone)",
    )
    args = parser.parse_args(argv)

    import torch

    from mitoscope.data.mosaic import build_mosaics
    from mitoscope.utils.atomic import write_text_atomic

    torch.set_num_threads(args.threads)
    # quick and full data differ in size: each mode resumes only its own work
    args.work = args.work / ("quick" if args.quick else "full")
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_start = [round(v, 2) for v in os.getloadavg()]
    base = [f"train.threads={args.threads}", f"train.seed={args.seed}", *(QUICK if args.quick else [])]

    print("data: synthetic regions and AMi-Br mosaics …", flush=True)
    t0 = time.perf_counter()
    synth = _make_synthetic(args.work, args.quick, args.seed)
    mosaics = build_mosaics(
        args.amibr, args.work / "mosaics", max_patches=600 if args.quick else None, seed=args.seed
    )
    data_s = time.perf_counter() - t0

    print("part 1: leave-domain-out on synthetic regions", flush=True)
    part1: dict[str, Any] = {}
    if args.variants is None:
        variants = QUICK_VARIANTS if args.quick else list(VARIANTS)
    else:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    for name in variants:
        tests = {"unseen_domains": [synth["test_unseen"]]}
        if name == "all":
            tests["real_mosaic_test"] = [mosaics["test"]]
        part1[name] = _train_and_score(
            f"synthetic-{name}",
            [*base, *VARIANTS[name]],
            [synth["train"]],
            [synth["val"]],
            tests,
            args.work,
            args.device,
        )

    print("part 2: recommended detector (synthetic + real mosaics)", flush=True)
    part2 = _train_and_score(
        "recommended",
        [*base, *VARIANTS["all"]],
        [synth["train"], mosaics["train"]],
        [synth["val"], mosaics["val"]],
        {"real_mosaic_test": [mosaics["test"]], "unseen_domains": [synth["test_unseen"]]},
        args.work,
        args.device,
    )
    total_s = time.perf_counter() - t_start

    from mitoscope.engine.detector_training import load_detection_data

    def count(folder: Path) -> dict[str, int]:
        d = load_detection_data(folder)
        return {
            "regions": len(d.slides),
            "mitoses": int((d.catalog["label"] == "mitotic figure").sum()),
            "hard_negatives": int((d.catalog["label"] == "hard negative").sum()),
        }

    result = {
        "benchmark": "detector_accuracy",
        "mode": "quick" if args.quick else "full",
        "part1_variants": variants,
        "recipe": "configs/detector-cpu.yaml",
        "recipe_overrides": base,
        "metric": "MIDOG F1 (7.5 µm hit radius, TP/FP/FN pooled) at the threshold tuned on validation regions",
        "train_domains": TRAIN_DOMAINS,
        "unseen_test_domains": TEST_DOMAINS,
        "data": {
            **{f"synthetic_{k}": count(v) for k, v in synth.items()},
            **{f"mosaic_{k}": count(v) for k, v in mosaics.items()},
        },
        "part1_leave_domain_out": part1,
        "part2_recommended": part2,
        "caveat": (
            "Only the centre figure of each AMi-Br patch is annotated; other mitoses near patch borders can "
            "appear in mosaics unlabelled (counted as false positives when detected)."
        ),
        "seconds": {"data": round(data_s, 1), "total": round(total_s, 1)},
        "machine": {
            "device": args.device,
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_start": load_start,
            "load_average_end": [round(v, 2) for v in os.getloadavg()],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")

    print()
    print(
        f"{'detector':<24}{'test set':<20}{'F1':>7}{'prec':>7}{'rec':>7}{'TP':>5}{'FP':>5}{'FN':>5}{'thr':>6}"
    )
    rows = [(f"synthetic/{k}", v) for k, v in part1.items()] + [("synthetic+mosaics/all", part2)]
    for label, res in rows:
        for test_name, s in res.items():
            if isinstance(s, dict) and "f1" in s:
                print(
                    f"{label:<24}{test_name:<20}{s['f1']:>7.3f}{s['precision']:>7.3f}{s['recall']:>7.3f}"
                    f"{s['tp']:>5}{s['fp']:>5}{s['fn']:>5}{s['threshold']:>6.2f}"
                )
    print(f"\ntotal {total_s / 60:.1f} min → {args.out}")
    return result


if __name__ == "__main__":
    main()
