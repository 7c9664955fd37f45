"""ONNX Runtime against torch on the bundled detector's network (backbone, FPN and heads; the box decoding and NMS
after it are the same Python either way), on this CPU, same run.

The network is exported to ONNX (opset 17) and run by ONNX Runtime's CPU provider with all graph optimisations;
torch runs it as ``mitoscope detect`` does (batch-norm folded, channels-last) in float32 and bfloat16. Every
variant gets the same batches of 8 random 256 px tiles; the table gives ms per tile (median of ``--repeats``
timed passes after a warm-up) and the largest difference in P(mitotic figure) from torch float32.

Needs the optional ``onnx`` and ``onnxruntime`` packages (``pip install onnx onnxruntime``); without them it says
so and exits. Run:  ``.venv/bin/python benchmarks/detect_onnx.py`` (about 1 min); results in
``benchmarks/results/detect_onnx.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "detect_onnx.json"


def network(detector: Any) -> Any:
    """The detector's normalised-tiles → ``(cls_logits, bbox_regression)`` part as a module."""
    import torch

    class Network(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model.head(list(self.model.backbone(x).values()))
            return out["cls_logits"], out["bbox_regression"]

    return Network(detector.model).eval()


def timed(run: Any, batch: Any, repeats: int) -> float:
    """Median ms per tile of ``run(batch)`` over ``repeats`` passes after one warm-up."""
    run(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0 / len(batch)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        print(
            "onnxruntime is not installed (pip install onnx onnxruntime): nothing to compare", file=sys.stderr
        )
        raise SystemExit(1) from None
    import torch

    from mitoscope.inference.detect import Detector
    from mitoscope.utils.atomic import write_text_atomic
    from mitoscope.utils.precision import precision_context

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    detector = Detector.from_path("mitoscope-detector", device="cpu", verifier=None, precision="fp32")
    net = network(detector)
    batch = torch.rand(8, 3, detector.tile_size, detector.tile_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "detector.onnx"
        with torch.inference_mode():
            torch.onnx.export(
                net.to(memory_format=torch.contiguous_format),
                (batch,),
                str(path),
                input_names=["tiles"],
                output_names=["cls_logits", "bbox_regression"],
                dynamic_axes={"tiles": {0: "n"}},
                opset_version=17,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def torch_run(precision: str, channels_last: bool) -> Any:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        model = copy.deepcopy(net).to(memory_format=layout)  # its own copy: .to() converts in place

        def run(x: torch.Tensor) -> np.ndarray:
            with torch.inference_mode(), precision_context(precision, torch.device("cpu")):
                return model(x)[0].float().sigmoid().numpy()

        return run

    def onnx_run(x: torch.Tensor) -> np.ndarray:
        logits = session.run(["cls_logits"], {"tiles": x.numpy()})[0]
        return 1.0 / (1.0 + np.exp(-logits))

    variants = {
        "torch fp32, NCHW": torch_run("fp32", False),
        "torch fp32, channels-last": torch_run("fp32", True),
        "torch bf16, channels-last (the default)": torch_run("bf16", True),
        "ONNX Runtime fp32": onnx_run,
    }
    reference = variants["torch fp32, NCHW"](batch)
    rows = {}
    for name, run in variants.items():
        rows[name] = {
            "ms_per_tile": round(timed(run, batch, args.repeats), 2),
            "max_abs_prob_diff_vs_fp32": float(np.abs(run(batch) - reference).max()),
        }
    base = rows["torch bf16, channels-last (the default)"]["ms_per_tile"]
    for row in rows.values():
        row["relative_to_default"] = round(row["ms_per_tile"] / base, 2)
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "variants": rows,
    }
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\n{'variant':<42} {'ms/tile':>8} {'× default':>10} {'max |Δp|':>9}")
    for name, row in rows.items():
        print(
            f"{name:<42} {row['ms_per_tile']:>8.2f} {row['relative_to_default']:>10.2f} "
            f"{row['max_abs_prob_diff_vs_fp32']:>9.4f}"
        )
    return result


if __name__ == "__main__":
    main()
