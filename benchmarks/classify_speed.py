"""Throughput of patch classification (``mitoscope classify``'s pipeline) on real AMi-Br patches.

The model is the one ``configs/classifier-cpu.yaml`` builds (``--config``; the head randomly initialised,
which does not change the speed) saved with ``save_checkpoint`` and loaded back as ``mitoscope classify`` would;
or a trained checkpoint (``--model``), which also makes the bf16-vs-fp32 label agreement meaningful.

Configurations, all on the same N patches (128 x 128 PNGs from ``/work/shared/data/amibr/images``), same weights:

* ``pipeline``: :meth:`mitoscope.inference.classify.Classifier.predict_catalog` end to end — PNG decode through
  ``PatchDataset`` (read in a background thread while the model computes), evaluation transform, forward pass,
  and the predictions CSV written to disk — at batch 64 (the CLI default), with the CLI's defaults: precision
  ``auto`` (bf16 on a CPU with native bf16) and torch's default thread count; also in fp32 (``pipeline_fp32``)
  and with the reader thread at normal priority (``pipeline_reader_nice0``; by default it runs at nice 10);
* ``naive``: a plain loop — PIL decode per image, torchvision centre crop/resize/normalise, batch 8, float32,
  one torch thread, no overlap of reading and computing;
* ``decode``: reading alone, without the model (the pipeline's ``PatchDataset`` loader, and the naive PIL loop);
* ``forward``: the model's bare forward pass on ready-made tensors (no decode, no CSV) at batch 64 with exactly
  the pipeline's precision, memory format and threads (``forward``), in fp32 (``forward_fp32``), and without
  the batch-norm folding that the classifier applies (``forward_unfused``).

Configurations run round-robin (so load drift from other processes hits all of them alike) and the median of the
rounds is reported with ratios; on a shared machine only ratios measured in the same run are meaningful.
Targets (issue #5): pipeline ≥ 3x the naive loop, and ≥ 90 % of the bare forward at the same batch size.
Results go to ``benchmarks/results/classify_speed.json``.

Run:  ``.venv/bin/python benchmarks/classify_speed.py --n 512 --rounds 3``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from machine import cpu_model  # benchmarks/machine.py (scripts run from this folder)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "classify_speed.json"
RECIPE = ROOT / "configs" / "classifier-cpu.yaml"
AMIBR = ROOT.parent / "shared" / "data" / "amibr" / "images"


def machine_name(device: str) -> str:
    """The CPU model and the visible core count, and the GPU when timing on one."""
    cpu = f"{cpu_model()}, {os.cpu_count()} logical cores visible"
    return f"{torch.cuda.get_device_name(device)} + {cpu}" if device.startswith("cuda") else cpu


def pick_images(root: Path, n: int) -> list[Path]:
    """``n`` patches spread evenly over the sorted atypical and normal folders (deterministic)."""
    files = sorted(p for p in root.glob("*/*") if p.suffix.lower() in (".png", ".jpg"))
    if len(files) < n:
        raise SystemExit(f"{root}: {len(files)} PNG/JPEG patches, fewer than --n {n}")
    idx = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i] for i in idx]


def save_recipe_model(directory: Path, config: Path) -> Path:
    """The recipe's model (ImageNet backbone, random head), saved with ``save_checkpoint`` as training would."""
    from mitoscope.engine.config import ClassifierConfig, load_config
    from mitoscope.models.checkpoint import ModelContract, save_checkpoint
    from mitoscope.models.registry import create_model

    cfg = load_config(config, ClassifierConfig)
    torch.manual_seed(0)
    model = create_model(cfg.model.name, **cfg.model.kwargs).eval()
    contract = ModelContract(
        cfg.model.name,
        dict(model.build_kwargs),
        "classification",
        input_size=cfg.data.size,
        mpp=cfg.data.mpp,
        mean=model.mean,
        std=model.std,
        config={"data": {"size": cfg.data.size, "mpp": cfg.data.mpp, "augment": dict(cfg.data.augment)}},
    )
    return save_checkpoint(directory / "model.pt", model, contract)


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _prob(out: Any) -> torch.Tensor:
    if isinstance(out, dict):
        if "prob" in out:
            return out["prob"].float().reshape(-1)
        return torch.sigmoid(out["logit"].float().reshape(-1))
    return torch.sigmoid(out.float().reshape(-1))


def _naive_tensor(path: Path, size: int, crop: int | None, mean: Any, std: Any) -> torch.Tensor:
    import torchvision.transforms.functional as TF
    from PIL import Image

    with Image.open(path) as im:
        t = TF.to_tensor(im.convert("RGB"))
    if crop:
        t = TF.center_crop(t, [crop, crop])
    return TF.normalize(TF.resize(t, [size, size], antialias=True), mean, std)


def naive_loop(
    model: torch.nn.Module,
    files: list[Path],
    size: int,
    crop: int | None,
    mean: Any,
    std: Any,
    batch: int,
    device: str,
) -> np.ndarray:
    """PIL decode per image, torchvision crop/resize/normalise, fixed batches, no overlap of reading and compute."""
    probs = []
    with torch.no_grad():
        for start in range(0, len(files), batch):
            x = torch.stack([_naive_tensor(f, size, crop, mean, std) for f in files[start : start + batch]])
            probs.append(_prob(model(x.to(device))))
    return torch.cat(probs).cpu().numpy()


def decode_only_pipeline(clf: Any, catalog: Any, batch: int, num_workers: int) -> np.ndarray:
    """The pipeline's reading alone (``PatchDataset`` + evaluation transform + collation), no model."""
    return np.array(
        [float(b.shape[0]) for b in clf._catalog_loader(catalog, batch_size=batch, num_workers=num_workers)]
    )


def bare_forward(clf: Any, batches: list[torch.Tensor]) -> np.ndarray:
    """The classifier's model alone on ready tensors, with its precision and memory format."""
    from mitoscope.inference.classify import precision_context

    model = clf.ensemble.models[0]
    probs = []
    with torch.no_grad(), precision_context(clf.precision, clf.device):
        for x in batches:
            probs.append(_prob(model(x)))
    return torch.cat(probs).cpu().numpy()


def timed_configs(
    configs: dict[str, tuple[int, Callable[[], np.ndarray]]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Run ``{name: (torch threads, fn)}`` round-robin after one untimed warm-up; return times and outputs."""
    times: dict[str, list[float]] = {k: [] for k in configs}
    outputs: dict[str, np.ndarray] = {}
    for name, (threads, fn) in configs.items():  # warm-up pass (not timed)
        torch.set_num_threads(threads)
        outputs[name] = fn()
    for r in range(rounds):
        for name, (threads, fn) in configs.items():
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)
        print(
            f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True
        )
    return times, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="patches per pass")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (median reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads of the pipeline (CLI default)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="pipeline batch (the CLI default)")
    parser.add_argument("--config", type=Path, default=RECIPE, help="recipe whose model is timed")
    parser.add_argument(
        "--model", type=Path, default=None, help="a trained checkpoint instead of the recipe model"
    )
    parser.add_argument("--images", type=Path, default=AMIBR, help="class folders of PNG or JPEG patches")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the naive loop computes there too)")
    parser.add_argument(
        "--num-workers", type=int, default=None, help="the pipeline's reader processes (default: the CLI's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import pandas as pd

    from mitoscope.engine.ensemble import load_ensemble
    from mitoscope.inference.classify import Classifier, _eval_crop, resolve_reader_workers
    from mitoscope.io.catalog import make_catalog
    from mitoscope.utils.atomic import write_text_atomic

    files = pick_images(args.images, args.n)
    catalog = make_catalog(
        [
            {"image": str(f), "label": "atypical" if f.parent.name.lower() == "atypical" else "normal"}
            for f in files
        ]
    )
    tmp = Path(tempfile.mkdtemp(prefix="classify_speed_"))
    ckpt = args.model or save_recipe_model(tmp, args.config)
    device = args.device
    workers = resolve_reader_workers(args.num_workers, device)
    clf = Classifier.from_path(ckpt, device=device)  # precision "auto", as the CLI
    clf_fp32 = Classifier.from_path(ckpt, device=device, precision="fp32")
    clf_reader_nice0 = Classifier.from_path(ckpt, device=device)
    clf_reader_nice0.reader_nice = 0  # the reader thread at the model's priority
    clf_unfused = Classifier.from_path(ckpt, device=device, fuse_batchnorm=False)
    naive_model = load_ensemble(ckpt, device=device).models[0]  # a plain loaded model
    contract = clf.contract
    size, crop = int(contract.input_size), _eval_crop(contract)
    mean, std = list(contract.mean), list(contract.std)
    bs = args.batch_size

    # ready tensors for the bare forward: exactly what the pipeline feeds the model
    ready = torch.stack([clf.preprocess(_decode(f)) for f in files]).to(device).split(bs)

    def pipeline(c: Any) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            frame = c.predict_catalog(catalog, batch_size=bs, num_workers=workers)
            frame.to_csv(tmp / "predictions.csv", index=False)
            return frame["p_atypical"].to_numpy()

        return run

    t = args.threads
    configs: dict[str, tuple[int, Callable[[], np.ndarray]]] = {
        "pipeline": (t, pipeline(clf)),
        "pipeline_fp32": (t, pipeline(clf_fp32)),
        "pipeline_reader_nice0": (t, pipeline(clf_reader_nice0)),
        "naive_b8": (1, lambda: naive_loop(naive_model, files, size, crop, mean, std, 8, device)),
        "forward": (t, lambda: bare_forward(clf, list(ready))),
        "forward_fp32": (t, lambda: bare_forward(clf_fp32, list(ready))),
        "forward_unfused": (t, lambda: bare_forward(clf_unfused, list(ready))),
        "decode_pipeline": (t, lambda: decode_only_pipeline(clf, catalog, bs, workers)),
        "decode_naive": (1, lambda: np.stack([_naive_tensor(f, size, crop, mean, std) for f in files])),
    }
    times, probs = timed_configs(configs, args.rounds)

    n = len(files)
    results: dict[str, Any] = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        results[name] = {
            "threads": configs[name][0],
            "seconds": ts,
            "median_s": med,
            "patches_per_s": n / med,
        }
    ips = {k: v["patches_per_s"] for k, v in results.items()}
    ratios = {
        "pipeline_vs_naive_b8": ips["pipeline"] / ips["naive_b8"],
        "pipeline_vs_forward": ips["pipeline"] / ips["forward"],
        "pipeline_fp32_vs_naive_b8": ips["pipeline_fp32"] / ips["naive_b8"],
        "pipeline_fp32_vs_forward_fp32": ips["pipeline_fp32"] / ips["forward_fp32"],
        "forward_vs_forward_fp32": ips["forward"] / ips["forward_fp32"],
        "forward_vs_forward_unfused": ips["forward"] / ips["forward_unfused"],
        "pipeline_reader_nice0_vs_forward": ips["pipeline_reader_nice0"] / ips["forward"],
        "decode_share_of_pipeline": results["decode_pipeline"]["median_s"] / results["pipeline"]["median_s"],
    }
    thr = clf.threshold
    agreement = {
        "threshold": thr,
        "max_abs_dp_pipeline_vs_fp32": float(np.abs(probs["pipeline"] - probs["pipeline_fp32"]).max()),
        "label_flips_pipeline_vs_fp32": int(
            ((probs["pipeline"] >= thr) != (probs["pipeline_fp32"] >= thr)).sum()
        ),
        "max_abs_dp_pipeline_vs_forward": float(np.abs(probs["pipeline"] - probs["forward"]).max()),
        "max_abs_dp_forward_vs_unfused": float(np.abs(probs["forward"] - probs["forward_unfused"]).max()),
        "max_abs_dp_naive_vs_pipeline_fp32": float(np.abs(probs["naive_b8"] - probs["pipeline_fp32"]).max()),
    }
    report = {
        "benchmark": "classify_speed",
        "machine": machine_name(device),
        "device": device,
        "pipeline_reader_workers": workers,
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "pipeline_threads": t,
        "precision": clf.precision,
        "model": {
            "checkpoint": str(args.model) if args.model else f"recipe {args.config.name} (random head)",
            "architecture": contract.architecture,
            "kwargs": contract.kwargs,
            "input_size": size,
            "crop": crop,
            "mpp": contract.mpp,
        },
        "batch_size": bs,
        "n_patches": n,
        "images": str(args.images),
        "rounds": args.rounds,
        "configs": results,
        "ratios": ratios,
        "agreement": agreement,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    table = pd.DataFrame(
        {
            "threads": [configs[k][0] for k in configs],
            "median s": [results[k]["median_s"] for k in configs],
            "patches/s": [ips[k] for k in configs],
            "vs naive_b8": [ips[k] / ips["naive_b8"] for k in configs],
        },
        index=list(configs),
    )
    print(
        f"\n{n} AMi-Br patches, batch {bs}, {args.rounds} rounds, precision {clf.precision}, {machine_name(device)}"
    )
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print("\nratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print("agreement: " + ", ".join(f"{k} {v:.3g}" for k, v in agreement.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
