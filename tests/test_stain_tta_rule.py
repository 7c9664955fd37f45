"""benchmarks/stain_tta.py: the rows from one 40-view pass and rule 19's verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import stain_tta  # a benchmark script, importable from its folder


def _json(path: Path, ba: float, auroc: float) -> Path:
    path.write_text(json.dumps({"balanced_accuracy": ba, "auroc": auroc}))
    return path


def test_rows_pick_their_views() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.full((4, 40), 0.2)
    probs[2:, :8] = 0.9  # the dihedral views of the unchanged patch separate the classes, the rest do not
    rows = stain_tta.view_rows(y, probs, threshold=0.5, n_bootstrap=0)
    assert rows["single"]["balanced_accuracy"] == rows["tta"]["balanced_accuracy"] == 1.0
    assert rows["stain"]["balanced_accuracy"] == 0.5  # one view of five is high: mean logit below 0.5
    assert rows["stain+tta"]["auroc"] == 1.0


def test_verdict_needs_every_run_to_pass(tmp_path: Path) -> None:
    def val(tta: float, stained: float) -> dict:
        return {"rows": {"tta": {"auroc": tta}, "stain+tta": {"auroc": stained}}}

    refs = [_json(tmp_path / "r0.json", 0.78, 0.88), _json(tmp_path / "r1.json", 0.77, 0.89)]
    good = [_json(tmp_path / "c0.json", 0.79, 0.89), _json(tmp_path / "c1.json", 0.78, 0.90)]
    validation = {"a": val(0.89, 0.887), "b": val(0.89, 0.90)}
    assert stain_tta.verdict(validation, refs, good, max_drop=0.005)["met"]
    assert not stain_tta.verdict({"a": val(0.89, 0.88), "b": val(0.89, 0.9)}, refs, good, 0.005)["met"]
    mixed = [good[0], _json(tmp_path / "c1b.json", 0.76, 0.90)]
    out = stain_tta.verdict(validation, refs, mixed, 0.005)
    assert not out["met"] and out["runs"][1]["ood_balanced_accuracy_rises"] is False


def test_verdict_again_from_saved_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {"tta": {"balanced_accuracy": 0.8, "auroc": 0.9, "sensitivity": 0.8, "specificity": 0.8}}
    rows["stain+tta"] = {**rows["tta"], "auroc": 0.91}
    saved = tmp_path / "validation.json"
    saved.write_text(json.dumps({"runs": {"runs/a": {"rows": rows}}}))
    ref, cand = _json(tmp_path / "r.json", 0.78, 0.88), _json(tmp_path / "c.json", 0.77, 0.89)
    out = tmp_path / "verdict.json"
    argv = ["--from-json", str(saved), "--atnorm-reference", str(ref), "--atnorm-candidate", str(cand)]
    assert stain_tta.main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["verdict"]["met"] is False and report["runs"]["runs/a"]["rows"] == rows
    assert "rule 19 not met" in capsys.readouterr().out
