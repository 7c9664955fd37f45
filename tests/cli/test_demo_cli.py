"""``mitoscope demo --quick`` end to end (synthesise, train both models, analyse an unseen domain, report)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.demo import demo_plan
from mitoscope.engine.config import recipe_path

runner = CliRunner()


def test_quick_plan_is_smaller_and_recipes_are_found() -> None:
    quick, full = demo_plan(quick=True), demo_plan()
    assert quick.n_patches < full.n_patches and quick.n_train_regions < full.n_train_regions
    assert quick.test_domain_index >= quick.train_domains  # the test domain is unseen
    assert full.test_domain_index >= full.train_domains
    assert recipe_path("classifier-cpu").is_file() and recipe_path("detector-cpu").is_file()


@pytest.mark.slow
def test_demo_quick_runs_and_resumes(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = Path("demo")  # relative, as `make demo` gives it
    res = runner.invoke(app, ["demo", "--quick", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "MIDOG F1" in res.output and "balanced accuracy" in res.output
    results = json.loads((out / "demo_results.json").read_text())
    assert results["quick"] is True
    d = results["detection"]
    assert 0.0 <= d["f1"] <= 1.0 and d["tp"] + d["fn"] == sum(r["true_mitoses"] for r in results["regions"])
    assert d["tp"] + d["fp"] == sum(r["detected"] for r in results["regions"])
    ba = results["classification"]["balanced_accuracy"]
    assert ba is None or (isinstance(ba, float) and (math.isnan(ba) or 0.0 <= ba <= 1.0))
    assert (out / "analysis" / "report" / "index.html").is_file()
    assert (out / "analysis" / "cohort.csv").is_file()
    for run in ("classifier", "detector"):
        assert (out / "runs" / run).is_dir()

    # Re-running reuses every finished step (no training again).
    res = runner.invoke(app, ["demo", "--quick", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert res.output.count("reusing") == 3 and "already done" in res.output

    # A demo made on another device resumes too (the device is not a setting of the data or the recipes).
    plan = json.loads((out / "demo_plan.json").read_text())
    (out / "demo_plan.json").write_text(json.dumps({**plan, "device": "cuda:0"}))
    res = runner.invoke(app, ["demo", "--quick", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0 and res.output.count("reusing") == 3, res.output
    assert json.loads((out / "demo_plan.json").read_text())["device"] == "cpu"

    # A full demo into the quick folder is refused with a clear message.
    res = runner.invoke(app, ["demo", "--synthetic", "--out", str(out)])
    assert res.exit_code == 2 and "other settings" in res.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_on_a_missing_gpu_says_so(tmp_path) -> None:
    res = runner.invoke(app, ["demo", "--quick", "--device", "cuda", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 2 and "CUDA is not available" in res.output
    assert not (tmp_path / "demo" / "demo_plan.json").exists()


@pytest.mark.slow
def test_demo_runs_the_bundled_models_on_the_real_samples(tmp_path) -> None:
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "MIDOG F1" in res.output and "balanced accuracy" in res.output and "per mm²" in res.output
    results = json.loads((out / "demo_results.json").read_text())
    assert results["detector"] == "mitoscope-detector" and results["classifier"] == "mitoscope-classifier"
    d = results["detection"]
    assert d["tp"] + d["fn"] == 36 and d["tp"] + d["fp"] == sum(r["detected"] for r in results["regions"])
    assert results["classification"]["n_mitoses"] == 36 and results["classification"]["n_atypical"] == 14
    tissue = results["tissue"]
    assert tissue["slide"] == "cmu_small_region.svs" and 0.5 < tissue["tissue_mm2"] < 0.7
    assert tissue["per_mm2"] == pytest.approx(tissue["figures"] / tissue["tissue_mm2"])
    assert (out / "analysis" / "report" / "index.html").is_file()
