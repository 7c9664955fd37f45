"""Distributed helpers, and REAL two-process runs under ``torchrun`` (Gloo on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from mitoscope.engine import distributed as D
from mitoscope.models.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def test_single_process_fallbacks():
    assert D.init_distributed() == D.DistInfo(0, 1, 0, False)
    assert D.is_main_process() and D.all_gather_object(3) == [3] and D.broadcast_object("x") == "x"
    assert D.all_reduce_mean({"a": 2.0}) == {"a": 2.0}
    D.barrier()
    D.cleanup()


def test_shard_is_disjoint_and_complete():
    items = list(range(11))
    parts = [D.shard(items, r, 4) for r in range(4)]
    assert sorted(i for p in parts for i in p) == items
    with pytest.raises(ValueError):
        D.shard(items, 4, 4)


def test_unwrap_model():
    lin = torch.nn.Linear(1, 1)
    assert D.unwrap_model(lin) is lin
    assert D.unwrap_model(torch.nn.DataParallel(lin)) is lin


FIT_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from mitoscope.data.samplers import DistributedClassBalancedSampler
    from mitoscope.engine import distributed as D
    from mitoscope.engine.loop import fit
    from mitoscope.engine.seed import seed_everything
    from mitoscope.models.checkpoint import ModelContract

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)
        def forward(self, x, targets=None):
            out = self.lin(x).squeeze(1)
            if self.training:
                return {"loss_cls": nn.functional.binary_cross_entropy_with_logits(out, targets["label"])}
            return {"prob": torch.sigmoid(out)}

    out_dir = sys.argv[1]
    info = D.init_distributed(device="cpu")
    assert info.is_distributed and info.world_size == 2, info
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(64) % 4 == 0).float()
    x = torch.randn(64, 2, generator=g) + y[:, None] * 2
    ds = TensorDataset(x, y)
    sampler = DistributedClassBalancedSampler(y.long().tolist(), seed=1)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, collate_fn=lambda b: (
        torch.stack([i[0] for i in b]), {"label": torch.stack([i[1] for i in b])}))
    seen = []
    model = Tiny()
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    def evaluate(m):
        p = D.unwrap_model(m)(x)["prob"]
        return {"acc": float(((p > 0.5).float() == y).float().mean()), "rank_seen": float(info.rank)}
    res = fit(ddp, loader, optimizer=opt, epochs=3, evaluate=evaluate, monitor="acc", out_dir=out_dir,
              contract=ModelContract("tiny", {}, "classification", 2), device="cpu", progress=False,
              on_epoch_start=lambda e: (sampler.set_epoch(e), seen.append(list(sampler))))
    digest = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())).hexdigest()
    with open(f"{out_dir}/rank{info.rank}.json", "w") as fh:
        json.dump({"digest": digest, "weights": [t.tolist() for t in model.state_dict().values()],
                   "epochs": res.epochs_run, "indices": seen, "n": len(sampler)}, fh)

    # patches become mosaics once: rank 0 writes them while rank 1 waits, then both use the same folders
    from mitoscope.engine.detector_training import detection_sources
    train_val = detection_sources([sys.argv[4]], f"{out_dir}/sources", seed=0)
    with open(f"{out_dir}/sources_rank{info.rank}.json", "w") as fh:
        json.dump(train_val, fh)

    # the detector trains through the same core in the same process group: DDP, sharded validation regions
    from mitoscope.engine.detector_training import load_detector_config, region_detector, train_detector
    from mitoscope.inference.detect import detect_slide
    cfg = load_detector_config("detector-cpu", json.loads(sys.argv[3]))
    run = train_detector(cfg, sys.argv[2], f"{out_dir}/detector", device="cpu", progress=False,
                         detect=region_detector(detect_slide))
    with open(f"{out_dir}/detector_rank{info.rank}.json", "w") as fh:
        json.dump({"epochs": run.epochs_run, "threshold": run.threshold, "f1": run.best_f1}, fh)
    D.cleanup()
    """
)


def _torchrun(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    if not TORCHRUN.is_file():
        pytest.skip(f"torchrun not found at {TORCHRUN}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _detector_test_helpers():
    import importlib.util

    path = Path(__file__).with_name("test_detector_training.py")
    spec = importlib.util.spec_from_file_location("detector_training_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_torchrun_fit_two_processes_agree_and_rank0_writes(tmp_path):
    import numpy as np
    from PIL import Image

    script = tmp_path / "fit_ddp.py"
    script.write_text(FIT_SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    detector = _detector_test_helpers()
    data = detector.write_regions(tmp_path / "regions", 6, tumors=("human melanoma", "canine lymphoma"))
    overrides = json.dumps([*detector.TINY, "data.val_fraction=0.34"])
    patches = tmp_path / "patches" / "Normal"
    patches.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(np.full((128, 128, 3), 120 + 8 * i, np.uint8)).save(patches / f"p{i}.png")
    proc = _torchrun([str(script), str(out), str(data), overrides, str(patches.parent)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = json.loads((out / "rank0.json").read_text())
    r1 = json.loads((out / "rank1.json").read_text())
    assert r0["digest"] == r1["digest"] and r0["epochs"] == r1["epochs"] == 3
    # each rank trained on its own disjoint positions of one balanced draw, of equal length
    assert r0["n"] == r1["n"] == 32
    assert all(len(a) == len(b) == 32 for a, b in zip(r0["indices"], r1["indices"], strict=True))
    assert r0["indices"][0] != r1["indices"][0]
    # one set of outputs, written by rank 0, holding the agreed weights without a "module." prefix
    last = read_checkpoint(out / "last.pt")
    assert list(last["state_dict"]) == ["lin.weight", "lin.bias"]
    assert last["state_dict"]["lin.weight"].tolist() == r0["weights"][0]
    assert len(pd.read_csv(out / "history.csv")) == 3
    assert (out / "best.pt").is_file()

    # one set of mosaics, written once, named alike on both ranks
    s0, s1 = (json.loads((out / f"sources_rank{r}.json").read_text()) for r in (0, 1))
    assert s0 == s1 and len(s0[0]) == len(s0[1]) == 1
    assert sorted(p.name for p in (out / "sources" / "mosaics").iterdir()) == ["patches"]
    assert (Path(s0[0][0]) / "annotations.json").is_file() and (Path(s0[1][0]) / "annotations.json").is_file()

    # the detector: both ranks ran the same epochs and read the same tuned threshold; rank 0 wrote one run
    d0 = json.loads((out / "detector_rank0.json").read_text())
    d1 = json.loads((out / "detector_rank1.json").read_text())
    assert d0 == d1 and d0["epochs"] == 2
    summary = json.loads((out / "detector" / "summary.json").read_text())
    assert summary["val_regions"] == 2 and summary["threshold"] == pytest.approx(d0["threshold"])
    best = read_checkpoint(out / "detector" / "best.pt")
    assert not any(k.startswith("module.") for k in best["state_dict"])
    assert best["contract"]["thresholds"]["default"] == pytest.approx(d0["threshold"])


@pytest.mark.slow
def test_torchrun_train_classifier_cli(tmp_path):
    import numpy as np
    import yaml
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        atypical = i % 3 == 0
        arr = rng.integers(170, 230, (32, 32, 3), dtype=np.uint8)
        r = 10 if atypical else 4
        arr[16 - r : 16 + r, 16 - r : 16 + r] = (70, 30, 120)
        Image.fromarray(arr).save(tmp_path / f"p{i}.png")
        rows.append(
            {"image": f"p{i}.png", "slide": f"s{i % 6}", "label": "atypical" if atypical else "normal"}
        )
    pd.DataFrame(rows).to_csv(tmp_path / "catalog.csv", index=False)
    recipe = {
        "model": {"name": "atypical_single", "kwargs": {"backbone": "test_resnet"}},
        "data": {"size": 32, "batch_size": 4, "augment": {"hed_jitter": None, "max_angle": 0}},
        "train": {"epochs": 2},
        "cv": {"scheme": "holdout", "val_fraction": 0.34},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    args = ["-m", "mitoscope", "train", "classifier", "-c", "recipe.yaml", "-d", "catalog.csv", "-o", "run"]
    proc = _torchrun([*args, "--device", "cpu", "--no-progress"], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert output.count("done: 1 fold(s)") == 1  # only rank 0 reports
    run = tmp_path / "run"
    assert (run / "fold_0" / "model.pt").is_file() and (run / "ensemble.json").is_file()
    history = pd.read_csv(run / "fold_0" / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert oof["p_atypical"].notna().all() and len(oof) == oof["row"].nunique()
