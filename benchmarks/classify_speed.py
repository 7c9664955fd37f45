"""Throughput of patch classification (``mitoscope classify``'s pipeline) on real AMi-Br patches.

The model is the ``configs/classifier-cpu.yaml`` one: ``atypical_single`` with ``tf_efficientnet_lite0`` (offline
ImageNet weights, the head randomly initialised) at 96 px, 0.25 µm/px, centre crop 96 — saved with
``save_checkpoint`` to a temporary directory and loaded back, as ``mitoscope classify`` would. Speed does not
depend on the head's weights.

Configurations, all on the same N patches (128 x 128 PNGs from ``/work/shared/data/amibr/images``), with the same
weights and the same number of torch threads:

* ``pipeline``: :meth:`mitoscope.inference.classify.Classifier.predict_catalog` end to end — PNG decode through
  ``PatchDataset`` (read in a background thread while the model computes), evaluation transform, forward pass,
  and the predictions CSV written to disk — at batch 64 (the CLI default) and batch 8;
* ``naive``: a plain loop — PIL decode per image, torchvision centre crop/resize/normalise, batch 8, no overlap;
* ``decode``: reading alone, without the model (the pipeline's ``PatchDataset`` loader, and the naive PIL loop);
* ``forward``: the model's bare forward pass on ready-made tensors (no decode, no CSV) at batch 64 and 8, in
  float32 and with ``torch.autocast("cpu", dtype=torch.bfloat16)``; the max |Δp| of bf16 vs float32 is reported.

Configurations run round-robin (so load drift from other processes hits all of them alike) and the median of the
rounds is reported with ratios; on a shared machine only ratios measured in the same run are meaningful.
Results go to ``benchmarks/results/classify_speed.json``.

Run:  ``OMP_NUM_THREADS=1 python benchmarks/classify_speed.py --n 512 --rounds 3``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "classify_speed.json"
AMIBR = Path("/work/shared/data/amibr/images")
SIZE, MPP = 96, 0.25
KWARGS = {"backbone": "tf_efficientnet_lite0", "pretrained": "offline", "dropout": 0.3, "hidden": [256]}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or platform) and the visible core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical cores visible"


def pick_images(root: Path, n: int) -> list[Path]:
    """``n`` patches spread evenly over the sorted atypical and normal folders (deterministic)."""
    files = sorted(root.glob("*/*.png"))
    if len(files) < n:
        raise SystemExit(f"{root}: {len(files)} PNGs, fewer than --n {n}")
    idx = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i] for i in idx]


def save_model(directory: Path) -> Path:
    """The classifier-cpu model, saved with ``save_checkpoint`` as training would."""
    from mitoscope.models.checkpoint import ModelContract, save_checkpoint
    from mitoscope.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("atypical_single", **KWARGS).eval()
    contract = ModelContract(
        "atypical_single",
        dict(KWARGS),
        "classification",
        input_size=SIZE,
        mpp=MPP,
        config={"data": {"size": SIZE, "mpp": MPP, "augment": {"crop": SIZE}}},
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


def naive_loop(model: torch.nn.Module, files: list[Path], mean: Any, std: Any, batch: int) -> np.ndarray:
    """PIL decode per image, torchvision crop/resize/normalise, fixed batches, no overlap of reading and compute."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    probs = []
    with torch.no_grad():
        for start in range(0, len(files), batch):
            tensors = []
            for f in files[start : start + batch]:
                with Image.open(f) as im:
                    t = TF.to_tensor(im.convert("RGB"))
                t = TF.center_crop(t, [SIZE, SIZE])
                t = TF.resize(t, [SIZE, SIZE], antialias=True)
                tensors.append(TF.normalize(t, mean, std))
            probs.append(_prob(model(torch.stack(tensors))))
    return torch.cat(probs).numpy()


def decode_only_pipeline(clf: Any, catalog: Any, batch: int) -> np.ndarray:
    """The pipeline's reading alone (``PatchDataset`` + evaluation transform + collation), no model."""
    return np.array(
        [float(b.shape[0]) for b in clf._catalog_loader(catalog, batch_size=batch, num_workers=0)]
    )


def decode_only_naive(files: list[Path], mean: Any, std: Any) -> np.ndarray:
    """The naive loop's reading alone (PIL + torchvision), no model."""
    import torchvision.transforms.functional as TF
    from PIL import Image

    for f in files:
        with Image.open(f) as im:
            t = TF.to_tensor(im.convert("RGB"))
        TF.normalize(TF.resize(TF.center_crop(t, [SIZE, SIZE]), [SIZE, SIZE], antialias=True), mean, std)
    return np.zeros(0)


def bare_forward(model: torch.nn.Module, batches: list[torch.Tensor], bf16: bool) -> np.ndarray:
    """The model alone on ready tensors (float32, or bf16 autocast)."""
    probs = []
    with torch.no_grad():
        for x in batches:
            if bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = model(x)
            else:
                out = model(x)
            probs.append(_prob(out))
    return torch.cat(probs).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="patches per pass")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every configuration")
    parser.add_argument("--images", type=Path, default=AMIBR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import pandas as pd

    from mitoscope.data.catalog import make_catalog
    from mitoscope.inference.classify import Classifier
    from mitoscope.models.checkpoint import load_model
    from mitoscope.utils.atomic import write_text_atomic

    torch.set_num_threads(args.threads)
    files = pick_images(args.images, args.n)
    catalog = make_catalog(
        [
            {"image": str(f), "label": "atypical" if f.parent.name.lower() == "atypical" else "normal"}
            for f in files
        ]
    )
    tmp = Path(tempfile.mkdtemp(prefix="classify_speed_"))
    ckpt = save_model(tmp)
    clf = Classifier.from_path(ckpt, device="cpu")
    model, contract = load_model(ckpt, device="cpu")
    model.eval()
    mean, std = list(contract.mean), list(contract.std)

    # ready tensors for the bare forward: exactly what the pipeline feeds the model
    ready = torch.stack([clf.preprocess(_decode(f)) for f in files])
    batches = {b: list(ready.split(b)) for b in (64, 8)}

    results: dict[str, Any] = {}

    def pipeline(batch: int) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            frame = clf.predict_catalog(catalog, batch_size=batch)
            frame.to_csv(tmp / "predictions.csv", index=False)
            return frame["p_atypical"].to_numpy()

        return run

    configs: dict[str, Callable[[], np.ndarray]] = {
        "pipeline_b64": pipeline(64),
        "pipeline_b8": pipeline(8),
        "naive_b8": lambda: naive_loop(model, files, mean, std, 8),
        "decode_pipeline_b64": lambda: decode_only_pipeline(clf, catalog, 64),
        "decode_naive": lambda: decode_only_naive(files, mean, std),
        "forward_fp32_b64": lambda: bare_forward(model, batches[64], False),
        "forward_fp32_b8": lambda: bare_forward(model, batches[8], False),
        "forward_bf16_b64": lambda: bare_forward(model, batches[64], True),
        "forward_bf16_b8": lambda: bare_forward(model, batches[8], True),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    probs: dict[str, np.ndarray] = {k: fn() for k, fn in configs.items()}  # warm-up pass (not timed)
    for r in range(args.rounds):
        for name, fn in configs.items():
            t0 = time.perf_counter()
            probs[name] = fn()
            times[name].append(time.perf_counter() - t0)
        print(
            f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
            flush=True,
        )

    n = len(files)
    for name, ts in times.items():
        med = statistics.median(ts)
        results[name] = {"seconds": ts, "median_s": med, "patches_per_s": n / med}
    ips = {k: v["patches_per_s"] for k, v in results.items()}
    ratios = {
        "pipeline_b64_vs_naive_b8": ips["pipeline_b64"] / ips["naive_b8"],
        "pipeline_b8_vs_naive_b8": ips["pipeline_b8"] / ips["naive_b8"],
        "pipeline_b64_vs_forward_fp32_b64": ips["pipeline_b64"] / ips["forward_fp32_b64"],
        "pipeline_b8_vs_forward_fp32_b8": ips["pipeline_b8"] / ips["forward_fp32_b8"],
        "naive_b8_vs_forward_fp32_b8": ips["naive_b8"] / ips["forward_fp32_b8"],
        "decode_share_of_pipeline_b64": results["decode_pipeline_b64"]["median_s"]
        / results["pipeline_b64"]["median_s"],
        "decode_pipeline_vs_naive": ips["decode_pipeline_b64"] / ips["decode_naive"],
        "forward_bf16_vs_fp32_b64": ips["forward_bf16_b64"] / ips["forward_fp32_b64"],
        "forward_bf16_vs_fp32_b8": ips["forward_bf16_b8"] / ips["forward_fp32_b8"],
    }
    agreement = {
        "max_abs_dp_bf16_vs_fp32": float(np.abs(probs["forward_bf16_b64"] - probs["forward_fp32_b64"]).max()),
        "max_abs_dp_pipeline_vs_forward_fp32": float(
            np.abs(probs["pipeline_b64"] - probs["forward_fp32_b64"]).max()
        ),
        "max_abs_dp_naive_vs_pipeline": float(np.abs(probs["naive_b8"] - probs["pipeline_b64"]).max()),
    }
    report = {
        "benchmark": "classify_speed",
        "machine": cpu_name(),
        "note": "shared 2-core CPU with another long benchmark running: compare ratios within this run only",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "model": {"name": "atypical_single", "kwargs": KWARGS, "input_size": SIZE, "mpp": MPP},
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
            "median s": [results[k]["median_s"] for k in configs],
            "patches/s": [ips[k] for k in configs],
            "vs naive_b8": [ips[k] / ips["naive_b8"] for k in configs],
        },
        index=list(configs),
    )
    print(
        f"\n{n} AMi-Br patches, {args.rounds} rounds, {torch.get_num_threads()} torch thread(s), {cpu_name()}"
    )
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    print("\nratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print("agreement: " + ", ".join(f"{k} {v:.2e}" for k, v in agreement.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
