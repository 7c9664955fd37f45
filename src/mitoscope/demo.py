"""``mitoscope demo``: the whole pipeline on a fresh machine, with no data and no downloads.

Steps (each a small function; every step is resumable, so re-running the demo reuses finished work):

1. :func:`make_data` — synthesise labelled patches and annotated regions in a few training domains, and
   held-out regions of an **unseen** domain;
2. :func:`train_classifier_step` — train the atypical/normal classifier with reduced settings of
   ``configs/classifier-cpu.yaml`` (always on EfficientNet-Lite0);
3. :func:`train_detector_step` — train the mitosis detector with reduced settings of ``configs/detector-cpu.yaml``;
4. :func:`analyze_step` — ``mitoscope analyze`` on the unseen-domain regions (counts, density, hotspot, atypical
   fraction, HTML report);
5. :func:`evaluate_step` — compare with the ground truth: counts per region, MIDOG F1 of the detections, balanced
   accuracy of the classifier on the true mitoses.

Layout of ``OUT``: ``data/{patches,regions_train,regions_test}``, ``runs/{classifier,detector}``,
``analysis/`` (the ``analyze`` output with ``report/index.html``), ``demo_results.json``, ``steps/*.done``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitoscope.data.sources import load_catalog
from mitoscope.data.synthetic import list_domains, make_patch_set, make_region_set
from mitoscope.engine.classifier_training import train_classifier
from mitoscope.engine.config import ClassifierConfig, load_config
from mitoscope.engine.detector_training import load_detector_config, region_detector, train_detector
from mitoscope.inference.analyze import AnalysisConfig, read_slide_result, slide_name_of
from mitoscope.inference.classify import Classifier
from mitoscope.inference.cohort import build_pipeline, model_settings, run_cohort
from mitoscope.inference.detect import detect_slide
from mitoscope.io.midogpp import read_midogpp_json
from mitoscope.io.slides import open_slide
from mitoscope.metrics.classification import balanced_accuracy
from mitoscope.metrics.detection import midog_f1
from mitoscope.report.html import write_report
from mitoscope.utils.atomic import write_text_atomic
from mitoscope.utils.device import resolve_device
from mitoscope.utils.errors import InputError
from mitoscope.utils.jsonable import to_jsonable

logger = logging.getLogger(__name__)

Log = Callable[[str], None]

# The demo's few dozen steps on synthetic patches train Lite0 whichever backbone the recipe names.
DEMO_BACKBONE = ("model.kwargs.backbone=tf_efficientnet_lite0",)


@dataclasses.dataclass
class DemoPlan:
    """Sizes and training settings of a demo run (see :func:`demo_plan`)."""

    train_domains: int = 3
    test_domain_index: int = 3
    n_patches: int = 600
    patch_size: int = 128
    n_train_regions: int = 16
    train_region_size: tuple[int, int] = (1024, 1024)
    n_test_regions: int = 6
    test_region_size: tuple[int, int] = (2048, 2048)
    classifier_overrides: tuple[str, ...] = ()
    detector_overrides: tuple[str, ...] = ()
    seed: int = 0
    device: str = "cpu"


def demo_plan(quick: bool = False) -> DemoPlan:
    """The demo's settings: ``quick`` (tiny everything, for tests) or the default (a few minutes on 2 cores).

    Examples:
        >>> demo_plan(quick=True).n_patches < demo_plan().n_patches
        True
    """
    if quick:
        return DemoPlan(
            train_domains=2,
            test_domain_index=2,
            n_patches=64,
            patch_size=64,
            n_train_regions=4,
            train_region_size=(512, 512),
            n_test_regions=2,
            test_region_size=(1024, 1024),
            classifier_overrides=(
                *DEMO_BACKBONE, "data.size=64", "data.batch_size=8", "data.augment.crop=64", "train.epochs=1",
                "train.max_steps_per_epoch=2", "train.patience=null",
            ),
            detector_overrides=(
                "data.crop_size=128", "model.kwargs.tile_size=128", "data.batch_size=4",
                "data.crops_per_epoch=8", "train.epochs=1", "eval.batch_size=4", "eval.overlap=16",
                "train.amp=false",
            ),
        )  # fmt: skip
    # 45 steps on synthetic patches: the whole backbone must adapt (nothing frozen), and 96 px keeps them cheap
    return DemoPlan(
        classifier_overrides=(
            *DEMO_BACKBONE, "train.epochs=3", "train.patience=null", "train.max_steps_per_epoch=15",
            "data.size=96", "data.augment.crop=96", "model.kwargs.frozen_stages=0",
            "data.augment.hed_jitter=0.05",  # the recipe's strong stain jitter needs more than 45 steps
        ),
        detector_overrides=(
            "train.epochs=8", "data.crops_per_epoch=96", "train.amp=false",
        ),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ step markers


def _marker(out: Path, step: str) -> Path:
    return out / "steps" / f"{step}.done"


def _done(out: Path, step: str) -> dict[str, Any] | None:
    path = _marker(out, step)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _finish(out: Path, step: str, info: dict[str, Any]) -> dict[str, Any]:
    write_text_atomic(_marker(out, step), json.dumps(to_jsonable(info), indent=2, default=str))
    return info


# ------------------------------------------------------------------------------------------------ steps


def make_data(out: Path, plan: DemoPlan, log: Log) -> dict[str, Path]:
    """Synthetic patches and training regions in ``plan.train_domains`` domains; test regions in an unseen one."""
    domains = list_domains()
    if plan.test_domain_index < plan.train_domains or plan.test_domain_index >= len(domains):
        raise InputError(f"test domain index {plan.test_domain_index} must be unseen and < {len(domains)}")
    train = domains[: plan.train_domains]
    test = [domains[plan.test_domain_index]]
    data = out / "data"
    paths = {
        "patches": data / "patches",
        "regions_train": data / "regions_train",
        "regions_test": data / "regions_test",
    }
    if _done(out, "data"):
        log(f"[1/5] data: reusing {data}")
        return paths
    t0 = time.perf_counter()
    log(f"[1/5] data: training domains {', '.join(train)}; unseen test domain {test[0]}")
    for key, make in (
        ("patches", lambda p: make_patch_set(p, n=plan.n_patches, domains=train, seed=plan.seed,
                                             size=plan.patch_size, overwrite=True)),
        ("regions_train", lambda p: make_region_set(p, n=plan.n_train_regions, size=plan.train_region_size,
                                                    domains=train, seed=plan.seed + 1, overwrite=True)),
        ("regions_test", lambda p: make_region_set(p, n=plan.n_test_regions, size=plan.test_region_size,
                                                   domains=test, seed=plan.seed + 2, overwrite=True)),
    ):  # fmt: skip
        make(paths[key])
    _finish(
        out, "data", {"train_domains": train, "test_domain": test[0], "seconds": time.perf_counter() - t0}
    )
    log(f"      {plan.n_patches} patches, {plan.n_train_regions} + {plan.n_test_regions} regions "
        f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    return paths


def train_classifier_step(out: Path, plan: DemoPlan, patches: Path, log: Log) -> Path:
    """Train the classifier (reduced ``classifier-cpu`` recipe) on the synthetic patches; returns the run dir."""
    run = out / "runs" / "classifier"
    if _done(out, "classifier"):
        log(f"[2/5] classifier: reusing {run}")
        return run
    t0 = time.perf_counter()
    log(f"[2/5] classifier: training ({', '.join(plan.classifier_overrides) or 'classifier-cpu recipe'})")
    config = load_config("classifier-cpu", ClassifierConfig, list(plan.classifier_overrides))
    catalog = load_catalog(patches)
    train_classifier(config, catalog, run, device=plan.device, resume=True, progress=False)
    seconds = time.perf_counter() - t0
    _finish(out, "classifier", {"run": str(run), "seconds": seconds})
    log(f"      done in {seconds:.0f} s")
    return run


def train_detector_step(out: Path, plan: DemoPlan, regions: Path, log: Log) -> Path:
    """Train the detector (reduced ``detector-cpu`` recipe) on the synthetic training regions."""
    run = out / "runs" / "detector"
    if _done(out, "detector"):
        log(f"[3/5] detector: reusing {run}")
        return run
    t0 = time.perf_counter()
    log(f"[3/5] detector: training ({', '.join(plan.detector_overrides) or 'detector-cpu recipe'})")
    config = load_detector_config("detector-cpu", list(plan.detector_overrides))
    detect = region_detector(detect_slide)
    result = train_detector(
        config, str(regions), run, device=plan.device, resume=True, progress=False, detect=detect
    )
    seconds = time.perf_counter() - t0
    _finish(out, "detector", {"run": str(run), "best_f1_val": result.best_f1, "threshold": result.threshold,
                              "seconds": seconds})  # fmt: skip
    log(
        f"      done in {seconds:.0f} s (validation F1 {result.best_f1:.3f}, threshold {result.threshold:.2f})"
    )
    return run


def region_files(regions: Path) -> list[Path]:
    """The region images of a synthetic region set, in the order of its annotation file."""
    ann = regions / "annotations.json"
    if ann.is_file():
        images = json.loads(ann.read_text(encoding="utf-8")).get("images", [])
        files = [regions / str(im["file_name"]) for im in images]
        if files and all(f.is_file() for f in files):
            return files
    return sorted(p for p in regions.iterdir() if p.suffix.lower() in (".tif", ".tiff"))


def analyze_step(
    out: Path, plan: DemoPlan, detector: Path, classifier: Path, regions: Path, log: Log
) -> Path:
    """Analyse the unseen-domain regions (resumable cohort run) and write the HTML report."""
    analysis = out / "analysis"
    log(f"[4/5] analyze: {len(region_files(regions))} regions of the unseen domain -> {analysis}")
    return analyze_slides(region_files(regions), analysis, detector, classifier, plan.device, log)


def analyze_slides(
    slides: list[Path], analysis: Path, detector: str | Path, classifier: str | Path, device: str, log: Log
) -> Path:
    """``mitoscope analyze`` of ``slides`` into ``analysis`` (resumable) with the HTML report; fails on any slide."""
    outcome = run_cohort(
        slides,
        analysis,
        make_pipeline=lambda: build_pipeline(
            detector, classifier, device=device, num_workers=0, progress=False, log=log
        ),
        settings=model_settings(detector, classifier),
        config=AnalysisConfig(),
        log=lambda m: log("      " + m),
    )
    if outcome.failed:
        raise RuntimeError(f"analysis failed for {sorted(outcome.failed)}: {outcome.failed}")
    write_report(analysis)
    return analysis


def evaluate_step(analysis: Path, regions: Path, classifier: str | Path, device: str) -> dict[str, Any]:
    """Counts against the ground truth, MIDOG F1 of the detections, balanced accuracy on the true mitoses."""
    import numpy as np
    import pandas as pd

    truth = read_midogpp_json(regions / "annotations.json")
    truth["name"] = [slide_name_of(s) for s in truth["slide"]]
    clf = Classifier.from_path(classifier, device=device)
    per_image: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    rows, y_true, y_pred = [], [], []
    for path in region_files(regions):
        name = slide_name_of(path)
        result = read_slide_result(analysis / "slides" / name)
        gt = truth[truth["name"] == name]
        mitoses = gt[gt["label"] == "mitotic figure"].reset_index(drop=True)
        per_image[name] = (result.figures, gt)
        atyp_true = mitoses["subclass"].eq("atypical").to_numpy()
        if len(mitoses):
            with open_slide(path) as slide:
                _, labels = clf.classify_points(slide, mitoses, return_labels=True)
            y_true.extend(atyp_true.astype(int).tolist())
            y_pred.extend(np.asarray(labels).astype(int).tolist())
        s = result.summary
        rows.append({
            "region": name,
            "true_mitoses": len(mitoses),
            "detected": int(s["mitotic_count"]),
            "true_atypical": int(atyp_true.sum()),
            "predicted_atypical": int(s["atypical_count"]),
            "hotspot_count": int(s["hotspot_count"]),
        })  # fmt: skip
    score = midog_f1(per_image, mpp=0.25)
    ba = balanced_accuracy(y_true, y_pred) if y_true else math.nan
    return {
        "regions": rows,
        "detection": {"f1": score.f1, "precision": score.precision, "recall": score.recall,
                      "tp": score.tp, "fp": score.fp, "fn": score.fn},
        "classification": {"balanced_accuracy": ba, "n_mitoses": len(y_true),
                           "n_atypical": int(sum(y_true))},
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------ driver


def _without_device(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "device"}


def run_demo(
    out: str | os.PathLike[str] = "mitoscope-demo",
    *,
    quick: bool = False,
    device: str = "cpu",
    log: Log | None = None,
) -> dict:
    """Run (or resume) the whole demo into ``out`` and return the results (also in ``out/demo_results.json``).

    ``device`` trains and runs both models there (``"auto"``, ``"cpu"``, ``"cuda"``, ...); the figures in the
    README are from the CPU. A demo may be resumed on another device; quick and full never mix.

    Examples:
        >>> results = run_demo("mitoscope-demo", quick=True)  # doctest: +SKIP
        >>> sorted(results["detection"])  # doctest: +SKIP
        ['f1', 'fn', 'fp', 'precision', 'recall', 'tp']
    """
    log = log or logger.info
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = dataclasses.replace(demo_plan(quick), device=str(resolve_device(device)))
    settings = dataclasses.asdict(plan)
    previous = out / "demo_plan.json"
    if previous.is_file() and _without_device(
        json.loads(previous.read_text(encoding="utf-8"))
    ) != _without_device(json.loads(json.dumps(settings))):
        raise InputError(
            "this folder holds a demo made with other settings (quick vs full); use another --out", path=out
        )
    write_text_atomic(previous, json.dumps(settings, indent=2))
    t0 = time.perf_counter()
    paths = make_data(out, plan, log)
    classifier = train_classifier_step(out, plan, paths["patches"], log)
    detector = train_detector_step(out, plan, paths["regions_train"], log)
    analysis = analyze_step(out, plan, detector, classifier, paths["regions_test"], log)
    log("[5/5] evaluate against the ground truth")
    results = evaluate_step(analysis, paths["regions_test"], classifier, plan.device)
    results.update(
        quick=quick,
        test_domain=(_done(out, "data") or {}).get("test_domain"),
        report=str(analysis / "report" / "index.html"),
        seconds=round(time.perf_counter() - t0, 1),
    )
    write_text_atomic(out / "demo_results.json", json.dumps(to_jsonable(results), indent=2, default=str))
    return results
