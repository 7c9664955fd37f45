"""Real-data benchmark of the atypical-vs-normal classifier: AMi-Br (in domain) and AtNorM-MD (out of domain).

What it does:

1. Reads the AMi-Br training split (2,894 patches, 146 slides) and holds out about 20 % of the **slides**
   (stratified group split, fixed seed) as a test set that no model sees.
2. Trains the ``configs/classifier-cpu.yaml`` recipe (slide-grouped cross-validation) on the remaining slides
   with :func:`mitoscope.engine.classifier_training.train_classifier` (resumable: a rerun reuses the run).
3. Scores on the held-out slides and on AtNorM-MD (other tumour types and species, never trained on):
   single model (fold 0) vs the fold ensemble, each with and without 8-view TTA — balanced accuracy, AUROC,
   sensitivity, specificity with 95 % bootstrap CIs — plus the grouped-CV out-of-fold result.
4. Measures inference speed (patches/s) of the same variants on in-memory patches, and end to end
   (reading PNGs from disk), on this machine.

Prints a table and writes ``benchmarks/results/classifier_amibr.json``.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/classifier_amibr.py --quick     # a few minutes on a 2-core CPU
    OMP_NUM_THREADS=2 python benchmarks/classifier_amibr.py             # the full recipe

Never imported by the package.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench_helpers import member_view_probs, merge_views  # benchmarks/ (scripts run from this folder)
from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_CONFIG = ROOT / "configs" / "classifier-cpu.yaml"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "classifier_amibr.json"

# quick mode: fewer patches and epochs so the whole benchmark takes minutes on a 2-core CPU
QUICK = {
    "train_patches": 900,
    "test_patches": 400,
    "ood_patches": 400,
    "speed_patches": 96,
    "overrides": ["cv.scheme=group_kfold", "cv.n_splits=3", "train.epochs=2"],
}
# the recipe itself is a single hold-out split; the benchmark needs fold models to compare ensembles
FULL = {
    "train_patches": None,
    "test_patches": None,
    "ood_patches": None,
    "speed_patches": 256,
    "overrides": ["cv.scheme=group_kfold", "cv.n_splits=5"],
}


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> dict[str, Any]:
    import torch

    cpu = cpu_model()
    return {
        "description": f"{os.cpu_count()}-core CPU ({cpu}), no GPU used",
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _stratified_sample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """At most ``n`` rows keeping the class ratio (all rows when ``n`` is None or larger)."""
    if n is None or n >= len(frame):
        return frame
    parts = []
    for _, sub in frame.groupby("target"):
        k = max(1, round(n * len(sub) / len(frame)))
        parts.append(sub.sample(n=min(k, len(sub)), random_state=seed))
    return pd.concat(parts).sort_index()


def _slide_holdout(catalog: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Train / held-out test split by slide.

    ``StratifiedGroupKFold(5)`` over slides; of its five test folds, the one with the most slides among those
    whose largest slide holds under 20 % of the fold's patches is held out (AMi-Br slide sizes range from 1 to
    319 patches; a fold dominated by one slide would make a poor test set).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    folds = []
    for k, (train_idx, test_idx) in enumerate(
        splitter.split(catalog, catalog["target"], groups=catalog["group"])
    ):
        test = catalog.iloc[test_idx]
        share = float(test.groupby("group").size().max() / len(test))
        folds.append((share < 0.2, test["group"].nunique(), -k, train_idx, test_idx, share))
    _ok, n_slides, neg_k, train_idx, test_idx, share = max(folds, key=lambda f: (f[0], f[1], f[2]))
    train, test = catalog.iloc[train_idx], catalog.iloc[test_idx]
    assert not set(train["group"]) & set(test["group"]), "a slide straddles the split"
    info = {"fold": -neg_k, "largest_slide_share": share, "n_slides": int(n_slides)}
    return train, test, info


def _subsample_slides(train: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """About ``n`` training rows, drawn as whole slides (so the grouped CV stays meaningful)."""
    if n is None or n >= len(train):
        return train
    rng = np.random.default_rng(seed)
    groups = list(train["group"].unique())
    rng.shuffle(groups)
    keep, total = [], 0
    sizes = train.groupby("group").size()
    for g in groups:
        keep.append(g)
        total += int(sizes[g])
        if total >= n:
            break
    return train[train["group"].isin(keep)]


def _metrics(y: np.ndarray, p: np.ndarray, pred: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    from mitoscope.metrics.classification import bootstrap_ci, classification_report

    rep = classification_report(y, p, preds=pred, n_bootstrap=n_boot, seed=seed)
    out = {
        k: rep[k]
        for k in ("n", "n_atypical", "balanced_accuracy", "auroc", "sensitivity", "specificity", "f1")
    }
    out["balanced_accuracy_ci"] = rep["balanced_accuracy_ci"]
    out["auroc_ci"] = rep["auroc_ci"]
    for name in ("sensitivity", "specificity"):
        out[f"{name}_ci"] = list(bootstrap_ci(y, pred.astype(float), name, n_boot, seed, threshold=0.5))
    return out


def _variants(clf: Any, probs: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{variant: (P(atypical), 0/1 decision)}`` from member × view probabilities ``(N, M, 8)``."""
    ens = clf.ensemble
    thr0 = float(ens.member_thresholds[0])
    single = probs[:, 0, 0]
    single_tta = merge_views(probs[:, 0, :])
    out = {
        "single": (single, (single >= thr0).astype(int)),
        "single+tta": (single_tta, (single_tta >= thr0).astype(int)),
    }
    if len(ens) > 1:
        from mitoscope.engine.ensemble import Ensemble

        merged = merge_views(probs)
        for rule in ("mean", "majority"):
            rule_ens = Ensemble(ens.models, ens.contracts, rule=rule, threshold=ens.threshold)
            e = rule_ens.combine(probs[:, :, 0])
            et = rule_ens.combine(merged)
            out[f"ensemble({len(ens)},{rule})"] = (e.prob, e.label)
            out[f"ensemble({len(ens)},{rule})+tta"] = (et.prob, et.label)
    return out


def _speed(
    run_dir: Path, arrays: list[np.ndarray], catalog: pd.DataFrame, device: str, rounds: int = 3
) -> dict[str, Any]:
    """Patches/s of each variant on in-memory patches (compute only) and end to end from disk (single).

    The variants are timed in turn, ``rounds`` times over (interleaved, so a change in the machine's load hits
    every variant alike); the median of the rounds is reported.
    """
    from mitoscope.inference.classify import Classifier

    single_path = run_dir / "fold_0" / "model.pt"
    n_models = len(Classifier.from_path(run_dir).ensemble)
    setups = {"single": (single_path, False), "single+tta": (single_path, True)}
    if n_models > 1:
        setups[f"ensemble({n_models})"] = (run_dir, False)
        setups[f"ensemble({n_models})+tta"] = (run_dir, True)
    clfs = {name: Classifier.from_path(path, device=device, tta=tta) for name, (path, tta) in setups.items()}
    for c in clfs.values():
        c.predict_arrays(arrays[:8], batch_size=8)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in [*clfs, "end_to_end_single"]}
    load_before = list(os.getloadavg())
    for _ in range(rounds):
        for name, c in clfs.items():
            t0 = time.perf_counter()
            c.predict_arrays(arrays, batch_size=32)
            times[name].append(len(arrays) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        clfs["single"].predict_catalog(catalog, batch_size=32, num_workers=0)
        times["end_to_end_single"].append(len(catalog) / (time.perf_counter() - t0))
    median = {k: float(np.median(v)) for k, v in times.items()}
    per_s = {k: median[k] for k in clfs}
    return {
        "n_patches": len(arrays),
        "batch_size": 32,
        "rounds": rounds,
        "in_memory_patches_per_s": per_s,
        "slowdown_vs_single": {k: per_s["single"] / v for k, v in per_s.items()},
        "end_to_end_single_patches_per_s": median["end_to_end_single"],
        "end_to_end_note": "PNG decode + transform in a prefetch thread, overlapped with the forward pass",
        "all_rounds_patches_per_s": times,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
    }


def _fmt(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    ci = m.get(f"{key}_ci")
    if ci and all(c is not None and not math.isnan(c) for c in ci):
        return f"{v:.3f} [{ci[0]:.3f}–{ci[1]:.3f}]"
    return f"{v:.3f}"


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"AMi-Br classifier benchmark ({result['mode']}, {result['machine']['description']})")
    for col in ("set", "variant", "n (atyp.)", "bal. acc. [95% CI]", "AUROC [95% CI]", "sens.", "spec."):
        table.add_column(col)
    for set_name in ("cv_oof", "heldout_slides", "atnorm_md_ood"):
        block = result["results"].get(set_name, {})
        for variant, m in block.items():
            table.add_row(
                set_name,
                variant,
                f"{m.get('n', '?')} ({m.get('n_atypical', '?')})",
                _fmt(m, "balanced_accuracy"),
                _fmt(m, "auroc"),
                _fmt(m, "sensitivity"),
                _fmt(m, "specificity"),
            )
    console.print(table)
    sp = result["speed"]
    speed = Table(
        title=f"Inference speed, {sp['n_patches']} patches in memory ({result['machine']['description']})"
    )
    speed.add_column("variant")
    speed.add_column("patches/s")
    speed.add_column("time vs single")
    for k, v in sp["in_memory_patches_per_s"].items():
        speed.add_row(k, f"{v:.1f}", f"{sp['slowdown_vs_single'][k]:.2f}x")
    speed.add_row("single, end to end from PNG files", f"{sp['end_to_end_single_patches_per_s']:.1f}", "")
    console.print(speed)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer patches and epochs (minutes on 2 cores)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="classifier recipe")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="shared data folder (amibr/, atnorm-md/)"
    )
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="training run directory (resumed if present)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override k=v")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0)
    for key in ("train_patches", "test_patches", "ood_patches", "speed_patches"):
        parser.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=None, help="override the mode's size"
        )
    args = parser.parse_args(argv)

    from mitoscope.data.sources import load_catalog
    from mitoscope.engine.classifier_training import train_classifier
    from mitoscope.engine.config import ClassifierConfig, config_to_dict, load_config
    from mitoscope.inference.classify import Classifier
    from mitoscope.utils.atomic import write_text_atomic

    mode = "quick" if args.quick else "full"
    plan = dict(QUICK if args.quick else FULL)
    for key in ("train_patches", "test_patches", "ood_patches", "speed_patches"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    started = time.perf_counter()
    load_at_start = list(os.getloadavg())
    overrides = [*plan["overrides"], *args.overrides]
    cfg = load_config(args.config, ClassifierConfig, overrides)
    run_dir = args.run_dir or ROOT / "runs" / f"bench_classifier_amibr_{mode}"

    amibr = load_catalog(args.data / "amibr" / "amibr_train.csv")
    atnorm = load_catalog(args.data / "atnorm-md" / "expert_votes.csv")
    train_all, test_all, split_info = _slide_holdout(amibr, args.seed)
    train = _subsample_slides(train_all, plan["train_patches"], args.seed)
    test = _stratified_sample(test_all, plan["test_patches"], args.seed)
    ood = _stratified_sample(atnorm, plan["ood_patches"], args.seed)
    print(
        f"[{mode}] AMi-Br train {len(train)} patches / {train['group'].nunique()} slides; held-out test "
        f"{len(test)} / {test['group'].nunique()} slides; AtNorM-MD {len(ood)} (never trained on)",
        file=sys.stderr,
    )

    t0 = time.perf_counter()
    train_classifier(cfg, train, run_dir, device=args.device, resume=True, progress=False, source="amibr")
    train_s = time.perf_counter() - t0
    summary = json.loads((run_dir / "cv_summary.json").read_text())
    epochs_run, epoch_seconds = 0, 0.0
    for hist in sorted(run_dir.glob("fold_*/history.csv")):
        h = pd.read_csv(hist)
        epochs_run += len(h)
        epoch_seconds += float(h["time_s"].sum()) if "time_s" in h else math.nan

    clf = Classifier.from_path(run_dir, device=args.device)
    results: dict[str, Any] = {}
    oof = pd.read_csv(run_dir / "oof_predictions.csv")
    thr = oof["threshold"].to_numpy() if "threshold" in oof else 0.5
    y_oof, p_oof = oof["target"].to_numpy(), oof["p_atypical"].to_numpy()
    results["cv_oof"] = {
        "fold models, each at its fold threshold": _metrics(
            y_oof, p_oof, (p_oof >= thr).astype(int), args.bootstrap, args.seed
        )
    }
    eval_s: dict[str, float] = {}
    for set_name, frame in (("heldout_slides", test), ("atnorm_md_ood", ood)):
        t0 = time.perf_counter()
        probs = member_view_probs(clf, frame, batch_size=args.batch_size, num_workers=args.num_workers)
        eval_s[set_name] = time.perf_counter() - t0
        y = frame["target"].to_numpy()
        results[set_name] = {
            name: _metrics(y, p, pred, args.bootstrap, args.seed)
            for name, (p, pred) in _variants(clf, probs).items()
        }

    # consistency: the one-pass variants equal what `mitoscope classify --tta` computes
    check = test.iloc[:16]
    direct = Classifier.from_path(run_dir, device=args.device, tta=True).predict_catalog(check)["p_atypical"]
    one_pass = _variants(clf, member_view_probs(clf, check))
    key = f"ensemble({len(clf.ensemble)},{clf.ensemble.rule})+tta" if len(clf.ensemble) > 1 else "single+tta"
    consistency = float(np.max(np.abs(direct.to_numpy() - one_pass[key][0])))

    from mitoscope.io.image_slide import read_image

    speed_rows = test.iloc[: plan["speed_patches"]]
    arrays = [read_image(p) for p in speed_rows["image"]]
    speed = _speed(run_dir, arrays, speed_rows, args.device)

    result = {
        "benchmark": "classifier_amibr",
        "mode": mode,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": _git_commit(),
        "machine": _machine(),
        "config_file": str(
            args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
        ),
        "overrides": overrides,
        "config": config_to_dict(cfg),
        "data": {
            "amibr_total": len(amibr),
            "amibr_train_patches": len(train),
            "amibr_train_slides": int(train["group"].nunique()),
            "amibr_train_atypical": int(train["target"].sum()),
            "heldout_patches": len(test),
            "heldout_slides": int(test["group"].nunique()),
            "heldout_atypical": int(test["target"].sum()),
            "atnorm_md_patches": len(ood),
            "atnorm_md_atypical": int(ood["target"].sum()),
            "split": "StratifiedGroupKFold(5, shuffle, seed) by slide; held out: the fold with the most slides "
            "whose largest slide holds < 20% of it; quick mode subsamples whole training slides and "
            "stratified test/OOD patches",
            "heldout_fold": split_info,
        },
        "ensemble": {
            "n_models": len(clf.ensemble),
            "rule": clf.ensemble.rule,
            "threshold": clf.threshold,
            "member_thresholds": clf.ensemble.member_thresholds.tolist(),
        },
        "cv_summary_oof_pooled_threshold": summary.get("oof_pooled_threshold"),
        "results": results,
        "tta_consistency_max_abs_diff": consistency,
        "speed": speed,
        "seconds": {
            "train_wall_this_invocation": train_s,
            "train_epochs_from_histories": epoch_seconds,
            "epochs_run": epochs_run,
            "evaluate_all_variants": eval_s,
            "total_this_invocation": time.perf_counter() - started,
        },
        "load_average_at_start": load_at_start,
        "notes": [
            "single = fold-0 model at its own validation threshold; ensemble(k, rule) = the k fold models at "
            "the pooled OOF threshold, mean probability or majority vote (each member at its own threshold, "
            "ties by the mean); +tta = 8 dihedral views, mean logit",
            "95% CIs: percentile bootstrap over patches (1 draw = resample of patches, not slides)",
            "train_wall_this_invocation is ~0 when the run directory already held the finished run (resumed); "
            "train_epochs_from_histories sums the epoch times the training wrote",
            "the 2-core machine was shared with other jobs during the run (see load averages): absolute "
            "patches/s are pessimistic; the ratios between variants were measured back to back",
        ],
    }
    write_text_atomic(args.json, json.dumps(_json_safe(result), indent=2) + "\n")
    _print(result)
    print(
        f"results written to {args.json} ({result['seconds']['total_this_invocation']:.0f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
