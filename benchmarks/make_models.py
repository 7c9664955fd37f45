"""Retrain the bundled models from ``../shared/data`` and rewrite their weights, contracts and cards.

One shared split decides what every bundled model may see: the AMi-Br slides are cut 70 / 15 / 15 into train /
validation / test groups (:func:`mitoscope.data.mosaic.split_groups`, seed 0: the split the detector benchmark's
mosaics always used) and the AtNorM-MD patches, which carry no slide ids, are cut the same way patch by patch.
No bundled model trains on a test group; the demo sample is cut from the AMi-Br test slides.

Stages (each resumes from what ``--work`` already holds):

- ``classifier``: the ``classifier-cpu`` recipe on AMi-Br + AtNorM-MD (train groups; validation groups choose
  the epoch and the threshold);
- ``lodo``: leave one dataset out: the same recipe trained on AtNorM-MD alone, scored on the AMi-Br test slides;
- ``detector`` (the first detector, which mines), ``mine``, ``detector_mined`` (the shipped detector, trained
  with the mined hard negatives), ``verifier``, ``select``, ``export``: see ``benchmarks/README.md``
  ("make_models.py and detector_precision.py");
- ``verifier_nuclei``, ``verifier_nuclei_lowres``, ``select_nuclei``, ``compare_nuclei``: the verifiers of
  rules 29 and 30 (real non-figure nuclei as negatives), their operating points, and their comparison;
- ``unpack`` (the bundled detector as the work folder's shipped run), ``verifier_seed1`` (the verifier recipe with
  seed 1 and its point) and ``compare_verifier`` (the shipped run alone and with each of the work folder's
  verifiers, each at its selected point): rules 36 and 37.

    .venv/bin/python benchmarks/make_models.py --stages classifier
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = ROOT.parent / "shared" / "data"
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
SEED = 0


def shared_split(shared: Path = SHARED, seed: int = SEED) -> pd.DataFrame:
    """AMi-Br + AtNorM-MD as one catalog with a ``split`` column (train / val / test) and a ``dataset`` column."""
    from mitoscope.data.mosaic import read_amibr_table, split_groups
    from mitoscope.data.sources import load_catalog

    amibr = load_catalog(shared / "amibr" / "amibr_train.csv").reset_index(drop=True)
    table = read_amibr_table(shared / "amibr")
    parts = split_groups(table["group"].tolist(), FRACTIONS, seed=seed)
    group_of = dict(zip((str(Path(p).resolve()) for p in table["path"]), table["group"], strict=True))
    split_of = {g: name for name, groups in parts.items() for g in groups}
    amibr["image"] = [str(Path(p).resolve()) for p in amibr["image"]]
    amibr["split"] = [split_of[group_of[p]] for p in amibr["image"]]
    amibr["dataset"] = "AMi-Br"

    atnorm = load_catalog(shared / "atnorm-md").reset_index(drop=True)
    atnorm["image"] = [str(Path(p).resolve()) for p in atnorm["image"]]
    atnorm["group"] = atnorm["image"]
    atnorm_parts = split_groups(atnorm["image"].tolist(), FRACTIONS, seed=seed)
    atnorm_split = {g: name for name, groups in atnorm_parts.items() for g in groups}
    atnorm["split"] = [atnorm_split[p] for p in atnorm["image"]]
    atnorm["dataset"] = "AtNorM-MD"
    return pd.concat([amibr, atnorm], ignore_index=True)


def train_classifier_stage(work: Path, catalog: pd.DataFrame, name: str, overrides: list[str]) -> Path:
    from mitoscope.engine.classifier_training import train_classifier
    from mitoscope.engine.config import ClassifierConfig, load_config

    cfg = load_config("classifier-cpu", ClassifierConfig, ["cv.scheme=split", *overrides])
    t0 = time.perf_counter()
    run = train_classifier(cfg, catalog, work / name, device="cpu", progress=False)
    print(f"{name}: trained in {(time.perf_counter() - t0) / 60:.1f} min → {run}", flush=True)
    return run


ATNORM_TUMOR = "mixed (AtNorM-MD)"
MOSAIC_BACKGROUND = 0.5
SYNTHETIC_DOMAINS = ["breast_xr", "lymphoma_cs2", "melanoma_xr", "lung_gt450"]
SYNTHETIC_EXTRA_TISSUE = (
    0.3  # share of each training / validation region given to non-tumour tissue (rule 31)
)


def mosaic_stage(work: Path, catalog: pd.DataFrame) -> dict[str, list[Path]]:
    """Mosaics of both datasets per split (the shared split) and the synthetic regions; ``split → folders``."""
    from mitoscope.data.mosaic import write_mosaic_splits
    from mitoscope.data.synthetic.regions import make_region_set

    folders: dict[str, list[Path]] = {"train": [], "val": [], "test": []}
    for dataset, tumor in (("AMi-Br", "human breast cancer"), ("AtNorM-MD", ATNORM_TUMOR)):
        rows = catalog[catalog["dataset"] == dataset]
        patches = rows[["image", "group", "split", "label"]].assign(tumor=tumor)
        written = write_mosaic_splits(
            patches,
            work / "mosaics" / dataset,
            background_fraction=MOSAIC_BACKGROUND,
            rng=np.random.default_rng(SEED),
            description=f"{dataset} mosaics",
        )
        for split, folder in written.items():
            folders[split].append(folder)
    for split, (n, seed) in {"train": (40, SEED), "val": (12, SEED + 1)}.items():
        folder = work / "synthetic" / split
        if not (folder / "annotations.json").is_file():
            make_region_set(
                folder,
                n=n,
                size=(1024, 1024),
                domains=SYNTHETIC_DOMAINS,
                seed=seed,
                extra_tissue=SYNTHETIC_EXTRA_TISSUE,
            )
        folders[split].append(folder)
    return folders


UNSEEN_DOMAINS = ["neuroendocrine_3dh", "sarcoma_cs2"]


def synthetic_unseen(work: Path) -> Path:
    """Synthetic regions of two domains no bundled model saw (as benchmarks/detector_accuracy.py makes them)."""
    from mitoscope.data.synthetic.regions import make_region_set

    folder = work / "synthetic" / "test_unseen"
    if not (folder / "annotations.json").is_file():
        make_region_set(folder, n=16, size=(1024, 1024), domains=UNSEEN_DOMAINS, seed=SEED + 2)
    return folder


def detector_stage(
    work: Path,
    folders: dict[str, list[Path]],
    threads: int,
    *,
    run: str = "detector",
    overrides: tuple[str, ...] = (),
    train: list[Path] | None = None,
) -> Path:
    """Train the detector recipe (``configs/detector-cpu.yaml`` with ``overrides``) on ``train`` (default: the
    training regions) into ``work/run``; the validation regions choose its epoch."""
    from mitoscope.engine.detector_training import load_detector_config, region_detector, train_detector
    from mitoscope.inference.detect import detect_slide

    cfg = load_detector_config(
        ROOT / "configs" / "detector-cpu.yaml", [f"train.threads={threads}", *overrides]
    )
    t0 = time.perf_counter()
    result = train_detector(
        cfg,
        [str(p) for p in (folders["train"] if train is None else train)],
        work / run,
        device="cpu",
        val_data=[str(p) for p in folders["val"]],
        progress=False,
        detect=region_detector(detect_slide),
    )
    print(
        f"{run}: val F1 {result.best_f1:.3f} at {result.threshold:.2f}, "
        f"{(time.perf_counter() - t0) / 60:.1f} min → {result.best_path}",
        flush=True,
    )
    assert result.best_path is not None
    return result.best_path


MINED_PROPORTIONS = [
    0.5,
    0.3,
    0.2,
]  # crops centred on a figure / on a hard negative / at random (recipe: 0.6/0.2/0.2)


def mined_folders(work: Path, folders: list[Path]) -> list[Path]:
    """Copies of the training ``folders`` whose annotations also hold, as hard negatives ("not mitotic figure"),
    the detector's confident candidates away from every figure (mined by the ``mine`` stage into
    ``work/verifier_patches``; earlier rounds in ``work/verifier_patches_*`` join them). Images are linked, not
    copied."""
    from mitoscope.utils.atomic import write_text_atomic

    out_folders = []
    for folder in folders:
        name = f"{folder.parent.name}_{folder.name}"
        rounds = sorted(work.glob(f"verifier_patches*/{name}/patches.csv"))  # every mining round
        mined = pd.concat([pd.read_csv(p) for p in rounds], ignore_index=True)
        mined = mined[mined["label"] == "hard negative"]
        coco = json.loads((folder / "annotations.json").read_text())
        image_id = {(folder / im["file_name"]).resolve(): im["id"] for im in coco["images"]}
        taken = {
            (
                a["image_id"],
                round((a["bbox"][0] + a["bbox"][2]) / 2),
                round((a["bbox"][1] + a["bbox"][3]) / 2),
            )
            for a in coco["annotations"]
            if a["category_id"] == 2
        }
        next_id = max((a["id"] for a in coco["annotations"]), default=0) + 1
        added = 0
        for row in mined.itertuples(index=False):
            img = image_id[Path(row.slide).resolve()]
            if (img, round(row.x), round(row.y)) in taken:
                continue  # an annotated imposter, already a hard negative
            bbox = [row.x - 25.0, row.y - 25.0, row.x + 25.0, row.y + 25.0]
            coco["annotations"].append({"image_id": img, "bbox": bbox, "category_id": 2, "id": next_id})
            taken.add((img, round(row.x), round(row.y)))
            next_id += 1
            added += 1
        target = work / "mined" / name
        target.mkdir(parents=True, exist_ok=True)
        for im in coco["images"]:
            link = target / im["file_name"]
            if not link.exists():
                link.symlink_to((folder / im["file_name"]).resolve())
        write_text_atomic(target / "annotations.json", json.dumps(coco) + "\n")
        print(f"mined hard negatives: {name} +{added}", flush=True)
        out_folders.append(target)
    return out_folders


#: Experimental detector runs beside the bundled one: name → (recipe overrides, trains on mined folders).
EXTRA_RUNS: dict[str, tuple[tuple[str, ...], bool]] = {
    "detector_mined": ((f"data.proportions={json.dumps(MINED_PROPORTIONS)}",), True),  # rule 28
    "detector_seed1": (("train.seed=1",), False),  # the recipe's run-to-run spread
    "detector_mined_seed1": (
        (f"data.proportions={json.dumps(MINED_PROPORTIONS)}", "train.seed=1"),
        True,
    ),  # rule 31
}
#: The run that ships as ``mitoscope-detector`` (rule 31): the recipe with hard negatives mined by ``detector``.
SHIPPED_DETECTOR = "detector_mined"
#: The sha256 of the bundled detector weights whose hard negatives the previous bundled detector mined (rule 34).
MINED_BY_PREVIOUS_DETECTOR = "851276ef5da3fd1b321ee3b314eff2f9e388b3533eaf76c6a091120622efbbc3"
#: Runs of one recipe, for verdicts on the mean over seeds (rule 31).
RECIPES: dict[str, tuple[str, ...]] = {
    "bundled": ("detector", "detector_seed1"),
    "mined": ("detector_mined", "detector_mined_seed1"),
}


def extra_run_stage(work: Path, folders: dict[str, list[Path]], threads: int, run: str) -> Path:
    """Train one of :data:`EXTRA_RUNS` (benchmarks/README.md, rule 28 and after)."""
    overrides, mined = EXTRA_RUNS[run]
    train = mined_folders(work, folders["train"]) if mined else None
    return detector_stage(work, folders, threads, run=run, overrides=overrides, train=train)


MINE_SCORE = 0.1  # candidates at or above this detector score are mined as the verifier's negatives ...
MINE_PER_REGION = 15  # ... at most this many per region, the most confident first
VERIFIER_OVERRIDES = [
    "data.size=128",  # the patch at its own 0.25 µm/px, no upsampling: 3x cheaper than 224 px
    "train.epochs=8",
    "model.kwargs.soft_labels=false",
]
#: Whether the bundled detector runs its verifier unless told otherwise. Measured (benchmarks/README.md): the
#: verifier lifts the expected F1 on held-out tumour mosaics but doubles the detections on the skin crop, so the
#: detector ships alone and the verifier is an option (`--verifier mitoscope-verifier`).
VERIFIER_BY_DEFAULT = False


def candidates(
    detector: Path, folders: list[Path], threads: int
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Every detector candidate (above its score floor) with the ground truth, per region of ``folders``."""
    from mitoscope.engine.detector_training import load_detection_data, predict_regions, region_detector
    from mitoscope.inference.detect import detect_slide
    from mitoscope.models.checkpoint import load_model

    torch_threads(threads)
    model, contract = load_model(detector)
    data = load_detection_data([str(f) for f in folders])
    return predict_regions(
        model, contract, data, overlap=32, batch_size=8, detect=region_detector(detect_slide)
    )


def torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def mine_points(
    per_region: dict[str, tuple[pd.DataFrame, pd.DataFrame]], mpp: dict[str, float]
) -> pd.DataFrame:
    """The verifier's records: each figure where the detector put it (its annotated centre when missed), against
    the detector's most confident candidates away from every figure and the annotated imposters."""
    from scipy.spatial import cKDTree

    from mitoscope.metrics.detection import DUPLICATE_RADIUS_UM, MIDOG_RADIUS_UM, gt_targets

    rows = []
    for region, (dets, gt) in per_region.items():
        px = 1.0 / mpp[region]
        figures = gt_targets(gt)[["x", "y"]].to_numpy(float)
        imposters = gt[gt["label"] == "hard negative"][["x", "y"]].to_numpy(float)
        found = dets[dets["score"] >= MINE_SCORE].sort_values("score", ascending=False)
        xy = found[["x", "y"]].to_numpy(float)
        for fx, fy in figures:
            near = np.hypot(xy[:, 0] - fx, xy[:, 1] - fy) if len(xy) else np.zeros(0)
            at = xy[int(np.argmin(near))] if len(near) and near.min() <= MIDOG_RADIUS_UM * px else (fx, fy)
            rows.append((region, float(at[0]), float(at[1]), "mitotic figure"))
        rows.extend((region, x, y, "hard negative") for x, y in imposters)
        dist = cKDTree(figures).query(xy)[0] if len(figures) and len(xy) else np.full(len(xy), np.inf)
        far = xy[dist > DUPLICATE_RADIUS_UM * px][:MINE_PER_REGION]
        rows.extend((region, x, y, "hard negative") for x, y in far)
    return pd.DataFrame(rows, columns=["slide", "x", "y", "label"])


def mined_patches(work: Path, folder: Path, detector: Path, threads: int) -> pd.DataFrame:
    """128 px patches at 0.25 µm/px of a region folder's figures and the detector's mined false positives
    (:func:`mine_points`), cached under ``work/verifier_patches``; ``group`` is the region."""
    from mitoscope.data.patch_extraction import extract_patches
    from mitoscope.data.sources import load_catalog
    from mitoscope.engine.detector_training import load_detection_data
    from mitoscope.io.catalog import make_catalog

    out = work / "verifier_patches" / f"{folder.parent.name}_{folder.name}"
    if not (out / "patches.csv").is_file():
        per_region = candidates(detector, [folder], threads)
        mpp = {p: info.mpp for p, info in load_detection_data(folder).slides.items()}
        points = mine_points(per_region, mpp)
        extract_patches(
            make_catalog(points.to_dict("records")), slides_dir=folder, out_dir=out, size=128, mpp=0.25
        )
    patches = load_catalog(out / "patches.csv")
    patches["group"] = patches["slide"]
    return patches


#: The sha256 of verifier 1's weights, trained on the mosaics before their repair (rules 36 and 37 kept it).
VERIFIER_1 = "856ea215088bd6f77423675040cffa55ea16e55d7959c541c18b6f19dd4e21ca"
#: Verifier runs of the bundled recipe: run name → seed (rule 37 measures the second).
VERIFIER_SEEDS = {"verifier": 0, "verifier_seed1": 1}


def verifier_stage(
    work: Path, folders: dict[str, list[Path]], detector: Path, threads: int, run: str = "verifier"
) -> Path:
    """Train the verifier recipe (:data:`VERIFIER_OVERRIDES`, seed :data:`VERIFIER_SEEDS` of ``run``) on the
    figures and mined candidates of the training and validation regions (:func:`mined_patches`)."""
    parts = []
    for split in ("train", "val"):
        for folder in folders[split]:
            patches = mined_patches(work, folder, detector, threads).assign(split=split)
            print(f"verifier data {folder}: {patches['label'].value_counts().to_dict()}", flush=True)
            parts.append(patches)
    seed = [f"train.seed={VERIFIER_SEEDS[run]}"]
    return train_classifier_stage(
        work, pd.concat(parts, ignore_index=True), run, [*VERIFIER_OVERRIDES, *seed]
    )


_NUCLEI_RECIPE = [
    "data.size=64",  # the window at its own 0.25 µm/px, no upsampling
    "train.epochs=3",
    "model.kwargs.soft_labels=false",
    "data.augment.sharpness=1.5",  # blur or sharpening, on both classes alike
]
#: Verifiers trained on real non-figure nuclei (benchmarks/README.md): run name → recipe overrides.
NUCLEI_VERIFIERS: dict[str, list[str]] = {
    "verifier_nuclei": _NUCLEI_RECIPE,  # rule 29
    "verifier_nuclei_lowres": [*_NUCLEI_RECIPE, "data.augment.low_resolution=0.5"],  # rule 30: 20x scans too
}


def nuclei_verifier_stage(
    work: Path, catalog: pd.DataFrame, folders: dict[str, list[Path]], detector: Path, threads: int, run: str
) -> Path:
    """Train the nuclei verifier ``run`` (:data:`NUCLEI_VERIFIERS`): 16 µm windows of the real figures against
    the non-figure nuclei of the same patches (:mod:`verifier_windows`), and the centre windows of the
    detector's candidates on the synthetic regions."""
    from mitoscope.io.catalog import make_catalog
    from verifier_windows import centre_window, real_windows

    real = catalog[catalog["split"].isin(["train", "val"])][["image", "group", "split"]]
    parts = [real_windows(real, work / "verifier_windows" / "nuclei")]
    for split in ("train", "val"):
        for folder in (f for f in folders[split] if "synthetic" in str(f)):
            patches = mined_patches(work, folder, detector, threads)
            out = work / "verifier_windows" / "synthetic" / split
            rows = [
                {
                    "image": str(centre_window(Path(r.image), out / f"{i:05d}.png")),
                    "label": r.label,
                    "group": str(r.group),
                }
                for i, r in enumerate(patches.itertuples(index=False))
            ]
            parts.append(make_catalog(rows).assign(split=split))
    data = pd.concat(parts, ignore_index=True)
    for split, part in data.groupby("split"):
        print(f"{run} data {split}: {part['label'].value_counts().to_dict()}", flush=True)
    return train_classifier_stage(work, data, run, NUCLEI_VERIFIERS[run])


MERGE_RADII_UM = (7.5, 10.0, 12.5)
CANDIDATE_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3)
SELECT_DENSITIES = (5.0, 10.0)


def _objective(errors: Any) -> float:
    """The operating point's rule: the mean expected F1 at 5 and 10 figures per mm²."""
    return float(np.mean([errors.expected_f1(d) for d in SELECT_DENSITIES]))


def select_stage(
    work: Path,
    folders: dict[str, list[Path]],
    threads: int,
    detector_run: str = SHIPPED_DETECTOR,
    verifier_run: str = "verifier",
) -> dict[str, Any]:
    """Choose the merge radius and the thresholds (detector alone; candidate + verified) on the validation
    regions by :func:`_objective`; writes ``work/operating_point.json`` (``operating_point_<run>.json`` and
    the detector alone for another ``detector_run``; ``operating_point_<verifier_run>.json`` for another
    verifier)."""
    from detector_precision import region_detections
    from mitoscope.inference.classify import Classifier
    from mitoscope.inference.detect import merge_by_distance
    from mitoscope.metrics.detection import tissue_errors
    from mitoscope.utils.atomic import write_text_atomic

    torch_threads(threads)
    detector = run_detector(work, detector_run)
    bundled = detector_run == SHIPPED_DETECTOR
    has_verifier = (work / verifier_run).exists()
    if bundled and not has_verifier:
        print(f"select: no {verifier_run} in {work}; the detector alone", flush=True)
    verifier = Classifier.from_path(work / verifier_run, device="cpu") if bundled and has_verifier else None
    sets = [region_detections(detector, f, threshold=0.0) for f in folders["val"]]
    per_image = {k: v for s in sets for k, v in s["per_image"].items()}
    mpp = {k: v for s in sets for k, v in s["mpp"].items()}
    areas = {k: v for s in sets for k, v in s["areas"].items()}
    from mitoscope.data.detection import default_opener

    probs: dict[str, np.ndarray] = {}
    floor = min(CANDIDATE_THRESHOLDS)
    for path, (found, _) in per_image.items():
        keep = found["score"].to_numpy() >= floor
        p = np.zeros(len(found))
        if keep.any() and verifier is not None:
            with default_opener(path) as slide:
                p[keep] = verifier.classify_points(slide, found[keep])
        probs[path] = p
    best: dict[str, Any] = {"alone": None, "verified": None}
    rows = []
    for radius in MERGE_RADII_UM:
        merged = {}
        for path, (found, gt) in per_image.items():
            keep = merge_by_distance(
                found[["x", "y"]].to_numpy(), found["score"].to_numpy(), radius / mpp[path]
            )
            merged[path] = (found.iloc[keep].reset_index(drop=True).assign(p=probs[path][keep]), gt)
        for t in np.round(np.arange(0.05, 0.96, 0.01), 2):
            e = tissue_errors(merged, areas_mm2=areas, mpp=mpp, threshold=float(t))
            rows.append(
                {
                    "merge_um": radius,
                    "stage": "alone",
                    "candidate": float(t),
                    "verified": None,
                    "objective": _objective(e),
                    **e.to_dict(SELECT_DENSITIES),
                }
            )
        for c in CANDIDATE_THRESHOLDS if verifier is not None else ():
            scored = {
                k: (d[d["score"] >= c].assign(score=lambda f: f["p"]), g) for k, (d, g) in merged.items()
            }
            for v in np.round(np.arange(0.05, 0.996, 0.01), 2):
                e = tissue_errors(scored, areas_mm2=areas, mpp=mpp, threshold=float(v))
                rows.append(
                    {
                        "merge_um": radius,
                        "stage": "verified",
                        "candidate": c,
                        "verified": float(v),
                        "objective": _objective(e),
                        **e.to_dict(SELECT_DENSITIES),
                    }
                )
    table = pd.DataFrame(rows)
    named = verifier_run if bundled else detector_run  # the run these points belong to
    suffix = "" if named == "verifier" else f"_{named}"
    table.to_csv(work / f"operating_points{suffix}.csv", index=False)
    for stage in ("alone", "verified") if verifier is not None else ("alone",):
        sub = table[table["stage"] == stage]
        best[stage] = sub.loc[sub["objective"].idxmax()].to_dict()
    write_text_atomic(
        work / f"operating_point{suffix}.json", json.dumps(best, indent=2, default=float) + "\n"
    )
    for stage, row in best.items():
        if row is None:
            continue
        print(
            f"{stage}: merge {row['merge_um']} µm, candidate {row['candidate']}, verified {row['verified']}: "
            f"recall {row['recall']:.3f}, dup {row['duplicates_per_figure']:.3f}, FP/mm² {row['fp_per_mm2']:.1f}, "
            f"F1@5 {row['expected_f1_at_5']:.3f}, F1@10 {row['expected_f1_at_10']:.3f}",
            flush=True,
        )
    return best


#: Rule 33's fused detectors: ``a+b`` fuses runs a and b, ``a@hflip`` adds run a's horizontally flipped view.
#: ``round2_seed0`` and ``round2_seed1`` are rule 32's runs, linked into the work folder.
FUSED_RUNS = (
    "detector_mined@hflip",
    "detector_mined_seed1@hflip",
    "detector_mined+detector_mined_seed1",
    "round2_seed0+round2_seed1",
)


def run_detector(work: Path, run: str) -> Any:
    """The detector alone of a run name: a training run in ``work``, or a fused one (:data:`FUSED_RUNS`)."""
    from fused_detector import FusedDetector
    from mitoscope.inference.detect import Detector, fold_backbone_batchnorm
    from mitoscope.models.checkpoint import load_model

    names, _, views = run.partition("@")
    if "+" not in names and not views:
        return Detector.from_path(work / run / "best.pt", device="cpu", verifier=None)
    loaded = [load_model(work / name / "best.pt") for name in names.split("+")]
    contract = loaded[0][1]
    fused = FusedDetector(
        [fold_backbone_batchnorm(model, contract.input_size) for model, _ in loaded],
        views=("identity", *views.split("-")) if views else ("identity",),
        radius_px=7.5 / contract.mpp,
    )
    return Detector(fused, contract, device="cpu", fuse_batchnorm=False)


def at_point(detector: Any, point: dict[str, Any]) -> Any:
    """``detector`` set to an operating point of :func:`select_stage` (its ``alone`` or ``verified`` row)."""
    thresholds, merge_key = {"default": float(point["candidate"])}, "merge_radius_um"
    if pd.notna(point.get("verified")):
        thresholds = {"candidate": float(point["candidate"]), "verified": float(point["verified"])}
        merge_key = "verified_merge_radius_um"
    detector.contract.thresholds = {**detector.contract.thresholds, **thresholds}
    detector.contract.config = {**detector.contract.config, merge_key: float(point["merge_um"])}
    return detector


RUNS_RESULTS = ROOT / "benchmarks" / "results" / "detector_runs.json"
FUSION_RESULTS = ROOT / "benchmarks" / "results" / "detector_fusion.json"
VERIFIER_RESULTS = ROOT / "benchmarks" / "results" / "detector_verifier.json"


def compare_runs_stage(work: Path, threads: int, runs: list[str], out: Path) -> dict[str, Any]:
    """Detector runs (``detector`` and :data:`EXTRA_RUNS`, the shipped one among them), each alone at its own
    rule-24 operating point, on the real test mosaics, the unseen synthetic domains and the CMU crop; the
    verdict (:func:`recipe_verdict`) when both recipes' seeds are there (rule 28's single-run verdict is in
    benchmarks/README.md)."""
    from mitoscope.utils.atomic import write_text_atomic

    torch_threads(threads)
    result: dict[str, Any] = {}
    for run in runs:
        point_file = "operating_point.json" if run == SHIPPED_DETECTOR else f"operating_point_{run}.json"
        point = json.loads((work / point_file).read_text())["alone"]
        result[run] = score_detector(work, at_point(run_detector(work, run), point))
    if all(run in result for runs in RECIPES.values() for run in runs):
        result["verdict"] = recipe_verdict(result, list(REAL_TESTS))
    write_text_atomic(out, json.dumps(result, indent=2, default=float) + "\n")
    print_scores(result)
    return result


REAL_TESTS = ("AMi-Br", "AtNorM-MD")


def score_detector(work: Path, det: Any) -> dict[str, Any]:
    """``det`` at its thresholds on the real test mosaics, the unseen synthetic domains and the CMU crop."""
    from detector_precision import cmu_density, region_detections, score_set

    part: dict[str, Any] = {"threshold": det.threshold, "merge_radius_um": det.merge_radius_um}
    for name in REAL_TESTS:
        part[name] = score_set(region_detections(det, work / "mosaics" / name / "test"))
    part["synthetic-unseen"] = score_set(region_detections(det, synthetic_unseen(work)))
    part["cmu"] = {k: v for k, v in cmu_density(det).items() if k != "points"}
    return part


def print_scores(result: dict[str, Any]) -> None:
    """One line per scored detector of :func:`score_detector`; then the verdict, if any."""
    for run, part in result.items():
        if run == "verdict":
            continue
        cells = [
            f"{d}: recall {part[d]['recall']:.3f}, FP/mm² {part[d]['fp_per_mm2']:.1f}, "
            f"F1@10 {part[d]['expected_f1_at_10']:.3f}, mosaic F1 {part[d]['mosaic_f1']['f1']:.3f}"
            for d in REAL_TESTS
        ]
        print(
            f"{run} (threshold {part['threshold']:.2f}): "
            + "; ".join(cells)
            + f"; unseen F1 {part['synthetic-unseen']['mosaic_f1']['f1']:.3f}"
            + f"; CMU {part['cmu']['per_mm2']:.1f}/mm²"
        )
    if "verdict" in result:
        print(f"verdict: {json.dumps(result['verdict'])}", flush=True)


#: Beside an unpacked bundled detector: its own detector-alone point.
UNPACKED = "bundled_point.json"


def unpack_stage(work: Path) -> Path:
    """The bundled detector as the work folder's shipped run (``work/detector_mined/best.pt``), so that the
    stages that select or compare against the shipped run work without its training run; its own operating
    point (:data:`UNPACKED`) stays the detector-alone point (:func:`shipped_points`)."""
    from mitoscope.models.checkpoint import load_model, save_checkpoint
    from mitoscope.utils.atomic import write_text_atomic

    target = work / SHIPPED_DETECTOR / "best.pt"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        model, contract = load_model(NAMES["detector"])
        save_checkpoint(target, model, contract)
        point = {"candidate": contract.thresholds["default"], "merge_um": contract.config["merge_radius_um"]}
        write_text_atomic(target.parent / UNPACKED, json.dumps(point) + "\n")
    return target


def compare_verifier_stage(work: Path, threads: int, out: Path) -> dict[str, Any]:
    """The shipped run alone and with ``work/verifier``, each at the point it would ship with
    (:func:`shipped_points`), scored by :func:`score_detector` (rule 36)."""
    from mitoscope.inference.detect import Detector
    from mitoscope.utils.atomic import write_text_atomic

    torch_threads(threads)
    alone, verified = shipped_points(work)
    variants: dict[str, tuple[Path | None, dict[str, Any]]] = {"detector alone": (None, alone)}
    variants["with verifier"] = (work / "verifier", verified)
    for run in (
        r for r in VERIFIER_SEEDS if r != "verifier" and (work / f"operating_point_{r}.json").is_file()
    ):
        point = json.loads((work / f"operating_point_{run}.json").read_text())["verified"]
        variants[f"with {run}"] = (work / run, point)
    result: dict[str, Any] = {}
    for label, (verifier, point) in variants.items():
        det = Detector.from_path(work / SHIPPED_DETECTOR / "best.pt", device="cpu", verifier=verifier)
        result[label] = score_detector(work, at_point(det, point))
    write_text_atomic(out, json.dumps(result, indent=2, default=float) + "\n")
    print_scores(result)
    return result


def recipe_verdict(result: dict[str, Any], tests: list[str]) -> dict[str, Any]:
    """Rules 31 and 32's verdict on the mean of each recipe's seeds (:data:`RECIPES`): the ``mined`` recipe
    replaces the ``bundled`` one if it makes fewer detections per mm² on the CMU crop and its expected F1 at 10 figures per mm²
    is at most 0.02 below on each real test set."""
    mean = {
        name: {
            key: float(np.mean([get(result[run]) for run in runs]))
            for key, get in [
                ("cmu_per_mm2", lambda p: p["cmu"]["per_mm2"]),
                *((t, lambda p, t=t: p[t]["expected_f1_at_10"]) for t in tests),
            ]
        }
        for name, runs in RECIPES.items()
    }
    old, new = mean["bundled"], mean["mined"]
    met = new["cmu_per_mm2"] < old["cmu_per_mm2"] and all(new[t] >= old[t] - 0.02 for t in tests)
    return {"means": mean, "met": bool(met)}


NUCLEI_RESULTS = ROOT / "benchmarks" / "results" / "verifier_nuclei.json"


def nuclei_pass_rates(verifier: Any, catalog: pd.DataFrame, thresholds: list[float]) -> dict[str, Any]:
    """The share of the test patches' figures and of their non-figure nuclei (every one :mod:`verifier_windows`
    would take; figures unmirrored) that ``verifier`` passes at each threshold, as scanned (40x) and as a 20x
    scan would show them (:func:`mitoscope.data.transforms.coarsen` by 2)."""
    from PIL import Image

    from mitoscope.data.transforms import coarsen
    from verifier_windows import patch_windows

    rng = np.random.default_rng(SEED)
    figures, nuclei = [], []
    for path in catalog["image"]:
        fig, neg, _ = patch_windows(np.asarray(Image.open(path).convert("RGB")), rng, limit=None)
        figures.append(fig[0])
        nuclei.extend(neg)
    result: dict[str, Any] = {"figures": len(figures), "nuclei": len(nuclei)}
    for scan, look in (("40x", lambda w: w), ("20x", lambda w: coarsen(w, 2.0))):
        p_fig = verifier.predict_arrays([look(w) for w in figures])
        p_nuc = verifier.predict_arrays([look(w) for w in nuclei])
        result[scan] = {
            f"{t:g}": {"figures": float(np.mean(p_fig >= t)), "nuclei": float(np.mean(p_nuc >= t))}
            for t in thresholds
        }
    return result


def compare_nuclei_stage(work: Path, catalog: pd.DataFrame, threads: int) -> dict[str, Any]:
    """Rules 29 and 30: the bundled detector alone, with verifier 1 and with each trained nuclei verifier
    (:data:`NUCLEI_VERIFIERS`), each at its own rule-24 point, on the real test mosaics and the CMU crop; the
    rules' verdicts; and the nuclei verifiers' pass rates on the test patches' figures and nuclei (verifier 1
    reads 32 µm, more than a patch holds around a nucleus)."""
    from detector_precision import cmu_density, region_detections, score_set
    from mitoscope.inference.classify import Classifier
    from mitoscope.inference.detect import Detector
    from mitoscope.utils.atomic import write_text_atomic

    torch_threads(threads)
    tests = {d: work / "mosaics" / d / "test" for d in ("AMi-Br", "AtNorM-MD")}
    bundled = json.loads((work / "operating_point.json").read_text())
    variants = {
        "detector alone": (None, bundled["alone"]),
        "verifier 1": (work / "verifier", bundled["verified"]),
    }
    for run in NUCLEI_VERIFIERS:
        point = work / f"operating_point_{run}.json"
        if point.is_file():
            variants[run] = (work / run, json.loads(point.read_text())["verified"])
    result: dict[str, Any] = {}
    for name, (verifier, point) in variants.items():
        det = at_point(
            Detector.from_path(work / SHIPPED_DETECTOR / "best.pt", device="cpu", verifier=verifier), point
        )
        part: dict[str, Any] = {"point": point, "threshold": det.threshold}
        for test, folder in tests.items():
            part[test] = score_set(region_detections(det, folder))
        part["cmu"] = cmu_density(det)
        result[name] = part
        print(
            f"{name}: "
            + "; ".join(
                f"{t}: recall {part[t]['recall']:.3f}, dup {part[t]['duplicates_per_figure']:.3f}, "
                f"FP/mm² {part[t]['fp_per_mm2']:.1f}, F1@10 {part[t]['expected_f1_at_10']:.3f}"
                for t in tests
            )
            + f"; CMU {part['cmu']['detections']} ({part['cmu']['per_mm2']:.1f}/mm²)",
            flush=True,
        )
    alone, old = result["detector alone"]["cmu"]["per_mm2"], result["verifier 1"]["cmu"]["per_mm2"]
    test_patches = catalog[catalog["split"] == "test"]
    for run in (r for r in NUCLEI_VERIFIERS if r in result):
        new = result[run]
        targets = all(
            new[t]["recall"] >= 0.90
            and new[t]["duplicates_per_figure"] <= 0.01
            and new[t]["expected_f1_at_10"] >= 0.85
            for t in tests
        )
        new["verdict"] = {
            "mosaic_targets_met": bool(targets),
            "ships_by_default": bool(targets and new["cmu"]["per_mm2"] < alone),
            "replaces_verifier_1": bool(targets and new["cmu"]["per_mm2"] < old),
        }
        checker = Classifier.from_path(work / run, device="cpu")
        thresholds = [0.5, float(new["point"]["verified"]), 0.99]
        new["test_patches"] = {
            d: nuclei_pass_rates(checker, part, thresholds) for d, part in test_patches.groupby("dataset")
        }
        print(json.dumps({run: {k: new[k] for k in ("verdict", "test_patches")}}, indent=1), flush=True)
    write_text_atomic(NUCLEI_RESULTS, json.dumps(result, indent=2, default=float) + "\n")
    return result


PRETRAINED = ROOT / "src" / "mitoscope" / "pretrained"
RESULTS = ROOT / "benchmarks" / "results" / "bundled_models.json"
NAMES = {
    "detector": "mitoscope-detector",
    "verifier": "mitoscope-verifier",
    "classifier": "mitoscope-classifier",
}


def score_classifier(model: str | Path, catalog: pd.DataFrame) -> dict[str, Any]:
    """Balanced accuracy (at the model's threshold) and AUROC with 95 % bootstrap intervals on ``catalog``."""
    from mitoscope.inference.classify import Classifier
    from mitoscope.metrics.classification import classification_report

    clf = Classifier.from_path(model, device="cpu")
    pred = clf.predict_catalog(catalog.reset_index(drop=True))
    y = catalog["target"].to_numpy()
    report = classification_report(
        y, pred["p_atypical"].to_numpy(), threshold=clf.threshold, n_bootstrap=1000
    )
    return report


def score_stage(work: Path, catalog: pd.DataFrame) -> dict[str, Any]:
    """The bundled classifier on the held-out test parts, and the leave-one-dataset-out model on AMi-Br's."""
    from mitoscope.utils.atomic import write_text_atomic

    test = catalog[catalog["split"] == "test"]
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result["classifier"] = {
        dataset: score_classifier(NAMES["classifier"], test[test["dataset"] == dataset])
        for dataset in ("AMi-Br", "AtNorM-MD")
    }
    if (work / "classifier_atnorm_only" / "fold_0" / "metrics.json").is_file():
        result["lodo_atnorm_to_amibr"] = score_classifier(
            work / "classifier_atnorm_only", test[test["dataset"] == "AMi-Br"]
        )
    write_text_atomic(RESULTS, json.dumps(result, indent=2, default=float) + "\n")
    for key, value in result.items():
        print(key, json.dumps(value, default=float)[:400], flush=True)
    return result


INTENDED_USE = (
    "Research use: counting mitotic figures and the share of atypical ones in H&E whole-slide images, and "
    "comparing methods. Not a medical device; not for diagnosis or treatment decisions."
)
LIMITS = [
    "Trained on human breast cancer (AMi-Br: MIDOG 2021, TUPAC16) and the MIDOG++ tumour types and species in "
    "AtNorM-MD (canine and human; domain not labelled per patch), plus synthetic H&E. Other tissues, stains and "
    "scanners are untested.",
    "Detection figures on mosaics of patches are not figures on whole slides: mosaics are far denser in figures "
    "and hold only tissue near figures. The expected F1 at 5 and 10 figures per mm² and the skin crop's count are "
    "the closest measured stand-ins for a slide.",
    "AtNorM-MD has no slide ids, so its test patches may share slides with its training patches (in-domain "
    "figures for it are optimistic); the leave-one-dataset-out figures are the out-of-domain evidence.",
    "Weights are stored in float16 and run in float32 (or bfloat16 on CPUs with native bf16).",
    "On tissue unlike the training data the detector calls some non-figures mitoses: on the CMU-1 skin crop "
    "(see mitoscope-detector's card) they are dark dermal fibroblast nuclei, a nucleus beside marking ink and an "
    "epidermal nucleus, where a handful of figures at most are expected, so counts on such tissue overstate the "
    "mitotic activity; look at the report's gallery.",
    "The detector's threshold was chosen on 1.69 mm² of validation tissue, too little to pin it: the same recipe "
    "trained with seed 1 chose 0.37 instead of 0.54, and its expected F1 at 10 figures per mm² on the test "
    "mosaics was 0.615 / 0.643 against 0.903 / 0.760 (benchmarks/results/detector_runs_fixed.json), so counts "
    "carry that uncertainty too.",
    "On synthetic H&E the detector alone gives mitotic figures low scores, in the stain domains it trained on as "
    "in unseen ones, and misses most of them at its threshold; the verification stage finds them "
    "(benchmarks/detector_score_margins.py).",
]


def _git_version() -> str:
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render_card(name: str, info: dict[str, Any], facts: dict[str, Any]) -> str:
    """The Markdown model card of bundled model ``name`` from its JSON and the measured ``facts``."""
    c = info["contract"]
    lines = [
        f"# {name}",
        "",
        facts["what"],
        "",
        "## Input contract",
        f"- Task: {info['task']}; architecture `{c['architecture']}` ({c['kwargs'].get('backbone', '')}).",
        f"- Input: {c['input_size']} px at {c['mpp']:g} µm/px, RGB scaled to [0, 1], normalised with mean "
        f"{[round(v, 3) for v in c['mean']]} and std {[round(v, 3) for v in c['std']]}.",
        f"- Classes: {', '.join(c['class_names'])}; thresholds {json.dumps(c['thresholds'])}.",
        f"- Weights: `{name}.safetensors`, {info['dtype']}, {info['bytes'] / 1e6:.1f} MB, sha256 `{info['sha256']}`.",
        "",
        "## Training data",
        *[f"- {line}" for line in facts["data"]],
        "",
        "## How it was made",
        "- Command: `make models` (`.venv/bin/python benchmarks/make_models.py`, stages "
        f"{facts['stages']}) on ../shared/data, on the CPU.",
        f"- Code version: mitoscope {c['code_version']}, git {facts['git']}.",
        *[f"- {line}" for line in facts.get("recipe", [])],
        "",
        "## Measured",
        *[f"- {line}" for line in facts["figures"]],
        "",
        "## Intended use",
        INTENDED_USE,
        "",
        "## Known limits",
        *[f"- {line}" for line in LIMITS],
        "",
    ]
    return "\n".join(lines)


SAMPLE_MOSAICS = 2
SAMPLES = ROOT / "src" / "mitoscope" / "samples" / "amibr_test"


def samples_stage(work: Path) -> Path:
    """Copy the AMi-Br test mosaics with the most atypical figures into the package (the demo's real sample)."""
    import shutil

    from mitoscope.utils.atomic import atomic_path

    source = work / "mosaics" / "AMi-Br" / "test"
    data = json.loads((source / "annotations.json").read_text())
    atypical = {im["id"]: 0 for im in data["images"]}
    for a in data["annotations"]:
        atypical[a["image_id"]] += bool(a.get("atypical"))
    chosen = sorted(atypical, key=lambda i: (-atypical[i], i))[:SAMPLE_MOSAICS]
    images = [im for im in data["images"] if im["id"] in chosen]
    kept = {
        **data,
        "images": images,
        "annotations": [a for a in data["annotations"] if a["image_id"] in chosen],
    }
    kept["info"] = {
        **data.get("info", {}),
        "description": "AMi-Br test-slide mosaics (mitoscope demo sample)",
    }
    if SAMPLES.exists():
        shutil.rmtree(SAMPLES)
    with atomic_path(SAMPLES, suffix="") as tmp:
        tmp.mkdir(parents=True)
        for im in images:
            shutil.copy2(source / im["file_name"], tmp / im["file_name"])
        (tmp / "annotations.json").write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
    n = len(kept["annotations"])
    print(
        f"samples: {len(images)} mosaics, {n} figures ({sum(atypical[i] for i in chosen)} atypical) → {SAMPLES}"
    )
    return SAMPLES


GOLDEN_PATCHES = 6


def golden_patches(catalog: pd.DataFrame, shared: Path) -> list[str]:
    """A few test patches of each dataset (both classes), as paths relative to ``shared``."""
    test = catalog[catalog["split"] == "test"].sort_values("image")
    picked = [rows.iloc[0]["image"] for _, rows in test.groupby(["dataset", "label"], sort=True)][
        :GOLDEN_PATCHES
    ]
    return [str(Path(p).relative_to(shared.resolve())) for p in picked]


def record_golden(shared: Path, patches: list[str]) -> None:
    """Store each bundled model's float32 outputs on real inputs in its JSON (``golden``), for the golden test."""
    from mitoscope.demo import region_files
    from mitoscope.demo_bundled import sample_paths
    from mitoscope.inference.classify import Classifier
    from mitoscope.inference.detect import Detector
    from mitoscope.io.catalog import make_catalog
    from mitoscope.io.slides import open_slide

    catalog = make_catalog([{"image": str(shared / p)} for p in patches])
    for key in ("classifier", "verifier"):
        clf = Classifier.from_path(NAMES[key], device="cpu", precision="fp32")
        probs = clf.predict_catalog(catalog, num_workers=0)["p_atypical"].round(6).tolist()
        _update_json(NAMES[key], {"golden": {"patches": patches, "probabilities": probs}})
    det = Detector.from_path(NAMES["detector"], device="cpu", verifier=None, precision="fp32")
    region = region_files(sample_paths()["regions"])[0]
    with open_slide(region) as slide:
        found = det.detect(slide, tissue=False, num_workers=0, progress=False)
    _update_json(
        NAMES["detector"],
        {
            "golden": {
                "sample": f"{region.parent.name}/{region.name}",
                "threshold": det.threshold,
                "points": found[["x", "y", "score"]].round(4).to_dict("records"),
            }
        },
    )


def _update_json(name: str, summary: dict[str, Any]) -> None:
    from mitoscope.utils.atomic import write_text_atomic

    path = PRETRAINED / f"{name}.json"
    info = json.loads(path.read_text())
    info["summary"] = {**info.get("summary", {}), **summary}
    write_text_atomic(path, json.dumps(info, indent=2) + "\n")


def shipped_points(work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bundled detector's operating points (:func:`select_stage`), alone and with the verifier, each with
    its own merge radius."""
    point = json.loads((work / "operating_point.json").read_text())
    alone, verified = point["alone"], point["verified"]
    unpacked = work / SHIPPED_DETECTOR / UNPACKED
    if unpacked.is_file():  # the bundled detector itself: its own point stays (chosen with its training run)
        alone = json.loads(unpacked.read_text())
    return alone, verified


def _card_text(name: str) -> str:
    """Bundle ``name``'s card as it stands (the ``cards`` stage rewrites it; until then it keeps the git version
    its weights were made at, :func:`_weights_git`)."""
    card = PRETRAINED / f"{name}.md"
    return card.read_text() if card.is_file() else ""


def export_stage(work: Path) -> None:
    """Write the bundled weights (float16), contracts and cards into the package."""
    from mitoscope.models.checkpoint import load_model
    from mitoscope.models.pretrained import export_bundle

    alone, verified = shipped_points(work)
    model, contract = load_model(work / SHIPPED_DETECTOR / "best.pt")
    contract.thresholds = {
        "default": float(alone["candidate"]),
        "candidate": float(verified["candidate"]),
        "verified": float(verified["verified"]),
    }
    verifier = NAMES["verifier"] if VERIFIER_BY_DEFAULT else None
    contract.config = {
        **contract.config,
        "verifier": verifier,
        "merge_radius_um": float(alone["merge_um"]),
        "verified_merge_radius_um": float(verified["merge_um"]),
    }
    export_bundle(model, contract, PRETRAINED, NAMES["detector"], card=_card_text(NAMES["detector"]))
    for key in ("verifier", "classifier"):
        if not (work / key / "fold_0" / "metrics.json").is_file():
            print(f"{key}: not trained yet in {work}, its bundle is left as it is", flush=True)
            continue
        model, contract = load_model(work / key / "fold_0" / "model.pt")
        export_bundle(model, contract, PRETRAINED, NAMES[key], card=_card_text(NAMES[key]))
    print(f"bundled models written to {PRETRAINED}", flush=True)


PRECISION_RESULTS = ROOT / "benchmarks" / "results" / "detector_precision.json"
DATA_LINES = {
    "amibr": "AMi-Br training split (MIT; DeepMicroscopy AMi-Br benchmark): 128 px patches at 0.25 µm/px centred on "
    "mitotic figures of human breast cancer (MIDOG 2021, TUPAC16), three experts' votes; cut by slide into "
    "train / validation / test groups (70 / 15 / 15 %, seed 0).",
    "atnorm": "AtNorM-MD (MIT; same source): 2,107 patches from the MIDOG++ training set's tumour types and species "
    "(canine and human), five experts' votes; no slide ids, so cut patch by patch the same way.",
    "synthetic": "Synthetic H&E regions from mitoscope's generator (four stain/scanner/tumour domains, with "
    f"imposters and {SYNTHETIC_EXTRA_TISSUE:.0%} non-tumour tissue: fat, vessels with red cells, necrosis, dense "
    "collagen, marking ink, out-of-focus areas), seed 0.",
}


def _ba(r: dict[str, Any]) -> str:
    lo, hi = r.get("balanced_accuracy_ci", [float("nan")] * 2)
    return (
        f"balanced accuracy {r['balanced_accuracy']:.3f} [{lo:.3f}–{hi:.3f}], AUROC {r['auroc']:.3f} "
        f"({r['n']} patches, {r['n_atypical']} atypical)"
    )


def _weights_git(name: str) -> str:
    """The git version that made bundle ``name``'s weights: the one its card names while the card names the
    weights' sha256 too (rewriting a card does not change the code its weights came from), else HEAD."""
    import re

    card = PRETRAINED / f"{name}.md"
    text = card.read_text() if card.is_file() else ""
    sha = json.loads((PRETRAINED / f"{name}.json").read_text())["sha256"]
    found = re.search(r"git ([0-9a-f]{7,40})\.", text)
    return found.group(1) if found and sha in text else _git_version()


def _verifier_headline(precision: dict[str, Any]) -> str:
    """The verification stage's test figures in one line for `mitoscope models` ("" before they are measured)."""
    part = precision.get("with verifier", {})
    if not all(k in part for k in ("AMi-Br", "AtNorM-MD", "cmu")):
        return ""
    recall = " / ".join(f"{part[t]['recall']:.3f}" for t in ("AMi-Br", "AtNorM-MD"))
    f1 = " / ".join(f"{part[t]['expected_f1_at_10']:.3f}" for t in ("AMi-Br", "AtNorM-MD"))
    return (
        f"With the detector, AMi-Br / AtNorM-MD test mosaics: recall {recall}, F1 at 10 figures/mm² {f1}; "
        f"CMU skin crop: {part['cmu']['detections']} detections"
    )


def cards_stage(work: Path) -> None:
    """Write each bundled model's card (and its one-line summary for `mitoscope models`) from the results."""
    from detector_precision import with_interval
    from mitoscope.utils.atomic import write_text_atomic

    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    precision = json.loads(PRECISION_RESULTS.read_text()) if PRECISION_RESULTS.is_file() else {}
    alone_point, v = shipped_points(work)
    score_cmd = (
        "`.venv/bin/python benchmarks/make_models.py --stages score` → benchmarks/results/bundled_models.json"
    )
    prec_cmd = (
        "`.venv/bin/python benchmarks/detector_precision.py --test amibr=… --test atnorm=… --test synthetic=…` "
        "→ benchmarks/results/detector_precision.json"
    )
    figures: dict[str, list[str]] = {"classifier": [], "detector": [], "verifier": []}
    cls = results.get("classifier", {})
    for dataset, r in cls.items():
        figures["classifier"].append(f"{dataset} test part (held out): {_ba(r)}. {score_cmd}")
    if "lodo_atnorm_to_amibr" in results:
        figures["classifier"].append(
            "Leave one dataset out — trained on AtNorM-MD only, scored on the AMi-Br test slides: "
            f"{_ba(results['lodo_atnorm_to_amibr'])}. {score_cmd}"
        )
    figures["classifier"].append(
        "Leave one dataset out — trained on AMi-Br only (same recipe, 80 / 20 slide split), scored on all of "
        "AtNorM-MD with `classify --tta`: balanced accuracy 0.779 / 0.775, AUROC 0.884 / 0.889 (seeds 0 / 1; "
        "benchmarks/results/classifier_soft_auroc)."
    )
    with_v = precision.get("with verifier", {})
    alone = precision.get("detector alone", {})
    staged = "with the verifier" + (
        " (the default)" if VERIFIER_BY_DEFAULT else " (`--verifier mitoscope-verifier`)"
    )
    plain = "detector alone" + ("" if VERIFIER_BY_DEFAULT else " (the default)")
    for label, part in ((plain, alone), (staged, with_v)):
        for name, r in part.items():
            if isinstance(r, dict) and "recall" in r:
                where = (
                    "synthetic regions of two unseen domains"
                    if "synthetic" in name
                    else f"{name} test mosaics"
                )
                figures["detector"].append(
                    f"{label}, {where} ({r['figures']} figures, {r['tissue_mm2']:.2f} mm²): recall "
                    f"{with_interval(r, 'recall', 3)}, duplicates {r['duplicates_per_figure']:.3f} per figure, "
                    f"{with_interval(r, 'fp_per_mm2', 1)} false positives per mm² of tissue, expected F1 "
                    f"{with_interval(r, 'expected_f1_at_5', 3)} at 5 and "
                    f"{with_interval(r, 'expected_f1_at_10', 3)} at 10 figures per mm² "
                    f"(mosaic F1 {r['mosaic_f1']['f1']:.3f})."
                )
        if "cmu" in part:
            c = part["cmu"]
            figures["detector"].append(
                f"{label}, CMU-1 skin crop (no annotated figures; never used for training or thresholds): "
                f"{c['detections']} detections on {c['tissue_mm2']:.2f} mm² = "
                f"{with_interval(c, 'per_mm2', 1)} per mm²."
            )
    if precision:
        figures["detector"].append(
            "Brackets: 95 % intervals (Wilson for recall, exact Poisson for counts per mm²); the expected F1's "
            "range puts recall and false positives both at their pessimistic, then optimistic, ends. The test "
            "sets are small: one false detection moves the rate by about 3 per mm²."
        )
    if precision:
        figures["detector"].append(
            f"Measured by {prec_cmd} (`make models` runs it as its `precision` stage)."
        )
    figures["verifier"].append(
        f"On the validation regions, with the detector: recall {v['recall']:.3f}, duplicates "
        f"{v['duplicates_per_figure']:.3f} per figure, {v['fp_per_mm2']:.1f} false positives per mm², expected F1 "
        f"{v['expected_f1_at_5']:.3f} / {v['expected_f1_at_10']:.3f} at 5 / 10 figures per mm² (the rule that chose "
        "its thresholds; work/operating_points.csv). Test figures: see mitoscope-detector's card."
    )
    what = {
        "detector": "Mitotic-figure detector: the multi-task RetinaNet of Zhang et al. (MIDOG 2022) with tumour-type "
        "and foreground auxiliary heads on an EfficientNet-Lite0 backbone, 256 px tiles at 0.5 µm/px. `mitoscope "
        f"detect` and `mitoscope analyze` use it by default: a figure is a detection with score ≥ "
        f"{alone_point['candidate']}, detections within {alone_point['merge_um']} µm are one figure (chosen "
        "on the validation regions for the mean expected F1 at 5 and 10 figures per mm²). "
        + (
            "Every candidate is verified by `mitoscope-verifier`."
            if VERIFIER_BY_DEFAULT
            else "`--verifier mitoscope-verifier` adds the verification stage: every candidate above detector "
            f"score {v['candidate']} is read again at 0.25 µm/px and kept when the verifier's probability is ≥ "
            f"{v['verified']}, and its detections within {v['merge_um']} µm are one figure — it finds more of the "
            "figures on the test mosaics (below) but calls more non-figures on "
            "tissue unlike its training data (the skin crop, below), "
            "so it is not the default."
        ),
        "verifier": "Verification stage of `mitoscope-detector` (`--verifier mitoscope-verifier`): a binary patch "
        "classifier (EfficientNet-Lite0, 128 px at 0.25 µm/px) that says mitotic figure or not for each detector "
        "candidate. Not run by default: on the CMU skin crop it keeps more candidates than the detector alone.",
        "classifier": "Atypical vs normal mitotic-figure classifier (MIDOG 2025 Track 2): EfficientNet-Lite0, the "
        "whole 128 px patch at 0.25 µm/px upsampled to 224 px, trained with the `classifier-cpu` recipe on both "
        "real datasets. `mitoscope classify` and `mitoscope analyze` use it by default.",
    }
    verifier_1 = json.loads((PRETRAINED / "mitoscope-verifier.json").read_text())["sha256"] == VERIFIER_1
    data = {
        "detector": [
            f"{DATA_LINES['amibr']} Mosaics of the train slides' patches (half of the cells background tiled from "
            "the corners of other patches) trained it; the validation slides' mosaics chose the epoch and the "
            "thresholds.",
            f"{DATA_LINES['atnorm']} Mosaics, as for AMi-Br.",
            DATA_LINES["synthetic"],
        ],
        "verifier": [
            (
                "Crops at 0.25 µm/px from an earlier round's detector training and validation data (AMi-Br and "
                "AtNorM-MD mosaics built before their background cells were repaired, synthetic regions without "
                "non-tumour tissue): every annotated figure and each candidate of that round's detector"
                if verifier_1
                else "Crops at 0.25 µm/px from the detector's training and validation data (AMi-Br and AtNorM-MD "
                "mosaics, synthetic regions with non-tumour tissue): every annotated figure and each candidate of "
                "the recipe's first detector (the one that mines)"
            )
            + f" within 7.5 µm of one (positives), every candidate with score ≥ {MINE_SCORE} farther than 12 µm "
            "from all figures and every synthetic imposter (negatives: that detector's false positives).",
            DATA_LINES["amibr"],
            DATA_LINES["atnorm"],
        ],
        "classifier": [
            f"{DATA_LINES['amibr']} Train slides trained it, validation slides chose the epoch and the threshold.",
            f"{DATA_LINES['atnorm']} Same roles.",
        ],
    }
    recipe = {
        "detector": [
            "Recipe: `detector-cpu` (24 epochs of 128 crops, Adam 3e-4) with hard negatives: a first detector of "
            f"the same recipe proposes candidates on the training regions, those with score ≥ {MINE_SCORE} farther "
            f"than 12 µm from every figure (at most {MINE_PER_REGION} per region) join the annotations as hard "
            f"negatives, and crops are centred on figures / hard negatives / anywhere in the proportions "
            f"{MINED_PROPORTIONS}."
            + (
                " These weights' hard negatives were proposed by the previous bundled detector, not by this "
                "recipe's first detector, so a rebuild gives other weights and figures: one rebuild scored 0.691 "
                "/ 0.825 expected F1 at 10 figures per mm² on the test mosaics and made 4 detections on the skin "
                "crop (benchmarks/results/detector_runs_scratch.json)."
                if json.loads((PRETRAINED / "mitoscope-detector.json").read_text())["sha256"]
                == MINED_BY_PREVIOUS_DETECTOR
                else ""
            )
        ],
        "verifier": [f"Recipe: `classifier-cpu` with {', '.join(VERIFIER_OVERRIDES)}."],
        "classifier": ["Recipe: `classifier-cpu` with `cv.scheme=split` (the shared split)."],
    }
    stages = {
        "detector": "detector, mine, detector_mined, select, export",
        "verifier": "verifier, select, export",
        "classifier": "classifier, export",
    }
    headline = {
        "detector": next((f for f in figures["detector"] if "CMU" in f), ""),
        "classifier": figures["classifier"][0] if figures["classifier"] else "",
        "verifier": _verifier_headline(precision) or figures["verifier"][0],
    }
    for key, name in NAMES.items():
        facts = {
            "what": what[key],
            "data": data[key],
            "figures": figures[key],
            "recipe": recipe[key],
            "stages": stages[key],
            "git": _weights_git(name),
        }
        info = json.loads((PRETRAINED / f"{name}.json").read_text())
        info["summary"] = {
            **info.get("summary", {}),
            "data": "AMi-Br + AtNorM-MD" + (" + synthetic" if key != "classifier" else "") + " (MIT)",
            "figures": headline[key].split(". `")[0][:160],
        }
        write_text_atomic(PRETRAINED / f"{name}.json", json.dumps(info, indent=2) + "\n")
        write_text_atomic(PRETRAINED / f"{name}.md", render_card(name, info, facts))
    print(f"cards written to {PRETRAINED}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stages",
        default="classifier,lodo,detector,mine,detector_mined,verifier,select,samples,export,precision,score,cards",
        help="comma-separated stages, in this order",
    )
    parser.add_argument(
        "--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "mitoscope-models"
    )
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--suffix", default="", help="added to the names of the comparison's result files")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    catalog = shared_split(args.shared)
    counts = catalog.groupby(["dataset", "split"]).size().unstack()
    print(counts.to_string(), flush=True)
    if "classifier" in stages:
        train_classifier_stage(args.work, catalog[catalog["split"] != "test"], "classifier", [])
    if "lodo" in stages:
        atnorm = catalog[(catalog["dataset"] == "AtNorM-MD") & (catalog["split"] != "test")]
        train_classifier_stage(args.work, atnorm, "classifier_atnorm_only", [])
    folders = (
        mosaic_stage(args.work, catalog)
        if {
            "detector",
            "mine",
            *EXTRA_RUNS,
            "verifier",
            *NUCLEI_VERIFIERS,
            "select",
            "select_nuclei",
            "select_runs",
            "fusion",
            "compare_verifier",
            "verifier_seed1",
        }
        & set(stages)
        else {}
    )
    if "unpack" in stages:
        unpack_stage(args.work)
    if "detector" in stages:
        detector_stage(args.work, folders, args.threads)
    if "mine" in stages:
        for folder in folders["train"] + folders["val"]:
            mined_patches(args.work, folder, args.work / "detector" / "best.pt", args.threads)
    for run in EXTRA_RUNS:
        if run in stages:
            extra_run_stage(args.work, folders, args.threads, run)
    if "verifier" in stages:
        verifier_stage(args.work, folders, args.work / "detector" / "best.pt", args.threads)
    if "verifier_seed1" in stages:
        verifier_stage(args.work, folders, args.work / "detector" / "best.pt", args.threads, "verifier_seed1")
        if not (args.work / "operating_point_verifier_seed1.json").is_file():
            select_stage(args.work, folders, args.threads, verifier_run="verifier_seed1")
    for run in NUCLEI_VERIFIERS:
        if run in stages:
            detector = args.work / "detector" / "best.pt"
            nuclei_verifier_stage(args.work, catalog, folders, detector, args.threads, run)
    if "select_nuclei" in stages:
        for run in NUCLEI_VERIFIERS:
            trained = (args.work / run / "fold_0" / "model.pt").is_file()
            if trained and not (args.work / f"operating_point_{run}.json").is_file():
                select_stage(args.work, folders, args.threads, verifier_run=run)
    if "compare_nuclei" in stages:
        compare_nuclei_stage(args.work, catalog, args.threads)
    if "select" in stages:
        select_stage(args.work, folders, args.threads)
    runs = [r for r in ("detector", *EXTRA_RUNS) if (args.work / r / "best.pt").is_file()]
    if "select_runs" in stages:
        for run in (r for r in runs if r != SHIPPED_DETECTOR):
            select_stage(args.work, folders, args.threads, detector_run=run)
    if "compare_verifier" in stages:
        compare_verifier_stage(
            args.work, args.threads, VERIFIER_RESULTS.with_stem(VERIFIER_RESULTS.stem + args.suffix)
        )
    if "fusion" in stages:
        for run in FUSED_RUNS:
            if not (args.work / f"operating_point_{run}.json").is_file():
                select_stage(args.work, folders, args.threads, detector_run=run)
        compare_runs_stage(args.work, args.threads, [SHIPPED_DETECTOR, *FUSED_RUNS], FUSION_RESULTS)
    if "compare_runs" in stages:
        compare_runs_stage(
            args.work, args.threads, runs, RUNS_RESULTS.with_stem(RUNS_RESULTS.stem + args.suffix)
        )
    if "samples" in stages:
        samples_stage(args.work)
    if "export" in stages:
        export_stage(args.work)
        record_golden(args.shared, golden_patches(catalog, args.shared))
    if "precision" in stages:
        import detector_precision

        tests = [
            *(f"--test={d}={args.work / 'mosaics' / d / 'test'}" for d in ("AMi-Br", "AtNorM-MD")),
            f"--test=synthetic-unseen={synthetic_unseen(args.work)}",
        ]
        detector_precision.main([*tests, f"--threads={args.threads}", f"--out={PRECISION_RESULTS}"])
    if "score" in stages:
        score_stage(args.work, catalog)
    if "cards" in stages:
        cards_stage(args.work)


if __name__ == "__main__":
    main()
