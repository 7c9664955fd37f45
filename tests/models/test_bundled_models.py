"""The models shipped in the package: each file matches its contract's sha256, and each model still gives the
outputs recorded in its JSON when it was exported (golden test, float32) on real inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mitoscope.models.pretrained import (
    DEFAULT_MODELS,
    bundle_card,
    bundle_info,
    bundled_names,
    bundled_path,
    sha256_of,
)

NAMES = ("mitoscope-detector", "mitoscope-verifier", "mitoscope-classifier")


def test_the_bundled_models_are_the_ones_the_commands_use() -> None:
    assert set(NAMES) <= set(bundled_names())
    assert set(DEFAULT_MODELS.values()) <= set(NAMES)
    detector = bundle_info("mitoscope-detector")
    assert detector["verifier"] in (None, "mitoscope-verifier")
    assert {"default", "candidate", "verified"} <= set(detector["contract"]["thresholds"])


@pytest.mark.parametrize("name", NAMES)
def test_weights_match_the_contract_and_the_card(name: str) -> None:
    info = bundle_info(name)
    weights = bundled_path(name).with_suffix(".safetensors")
    assert sha256_of(weights) == info["sha256"]
    assert weights.stat().st_size == info["bytes"]
    card = bundle_card(name)
    assert info["sha256"] in card and "## Measured" in card and "## Known limits" in card


def test_all_bundled_files_fit_the_size_budget() -> None:
    folder = bundled_path(NAMES[0]).parent
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert total < 50e6


@pytest.mark.parametrize("name", ["mitoscope-classifier", "mitoscope-verifier"])
def test_classifiers_reproduce_their_recorded_outputs(name: str, shared_data: Path) -> None:
    from mitoscope.inference.classify import Classifier
    from mitoscope.io.catalog import make_catalog

    golden = bundle_info(name)["summary"]["golden"]
    catalog = make_catalog([{"image": str(shared_data / p)} for p in golden["patches"]])
    clf = Classifier.from_path(name, device="cpu", precision="fp32")
    probs = clf.predict_catalog(catalog, num_workers=0)["p_atypical"].to_numpy()
    np.testing.assert_allclose(probs, golden["probabilities"], atol=2e-3)


def test_detector_reproduces_its_recorded_points() -> None:
    from mitoscope.demo_bundled import sample_paths
    from mitoscope.inference.detect import Detector
    from mitoscope.io.slides import open_slide

    golden = bundle_info("mitoscope-detector")["summary"]["golden"]
    det = Detector.from_path("mitoscope-detector", device="cpu", verifier=None, precision="fp32")
    with open_slide(sample_paths()["regions"].parent / golden["sample"]) as slide:
        found = det.detect(slide, tissue=False, num_workers=0, progress=False)
    expected = json.loads(json.dumps(golden["points"]))
    assert len(found) == len(expected)
    got = found[["x", "y", "score"]].to_numpy()
    want = np.array([[p["x"], p["y"], p["score"]] for p in expected]).reshape(-1, 3)
    np.testing.assert_allclose(got[:, :2], want[:, :2], atol=0.5)
    np.testing.assert_allclose(got[:, 2], want[:, 2], atol=2e-3)


def test_models_command_lists_the_bundled_models_and_prints_a_card() -> None:
    from typer.testing import CliRunner

    from mitoscope.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0
    for name in NAMES:
        assert name in res.output
    assert "retinanet_multitask" in res.output and "0.25 µm/px" in res.output
    res = runner.invoke(app, ["models", "mitoscope-detector"])
    assert res.exit_code == 0 and res.output.startswith("# mitoscope-detector")
    res = runner.invoke(app, ["models", "nope"])
    assert res.exit_code == 1 and "bundled models: mitoscope-classifier" in res.output
