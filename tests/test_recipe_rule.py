"""benchmarks/recipe_rule.py: the two-seed adoption rule read from saved run folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "recipe_rule", Path(__file__).resolve().parents[1] / "benchmarks" / "recipe_rule.py"
)
assert _SPEC is not None and _SPEC.loader is not None
recipe_rule = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(recipe_rule)


def _run(folder: Path, *, val_auroc: float, ba: float, auroc: float, wall: str) -> Path:
    folder.mkdir(parents=True)
    fold = {"balanced_accuracy": 0.8, "auroc": val_auroc, "threshold": 0.3, "epochs_run": 16}
    (folder / "cv_summary.json").write_text(json.dumps({"folds": {"fold_0": fold}}))
    (folder / "atnorm_tta.json").write_text(json.dumps({"balanced_accuracy": ba, "auroc": auroc}))
    (folder / "time.txt").write_text(f"\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}\n")
    return folder


def test_adopts_only_when_every_check_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [
        _run(tmp_path / "r0", val_auroc=0.88, ba=0.79, auroc=0.86, wall="20:00.00"),
        _run(tmp_path / "r1", val_auroc=0.86, ba=0.74, auroc=0.86, wall="1:00:00"),
    ]
    better = [
        _run(tmp_path / "c0", val_auroc=0.89, ba=0.80, auroc=0.87, wall="20:30.00"),
        _run(tmp_path / "c1", val_auroc=0.86, ba=0.75, auroc=0.87, wall="59:00"),
    ]
    out = tmp_path / "verdict.json"
    recipe_rule.main(["--candidate", *map(str, better), "--reference", *map(str, refs), "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["adopt"] is True and saved["reference_mean"]["wall_s"] == pytest.approx(2400.0)
    assert saved["epoch_train_ratio"] is None  # no history.csv in these folders
    assert "adopt" in capsys.readouterr().out

    slower = _run(tmp_path / "c2", val_auroc=0.89, ba=0.80, auroc=0.87, wall="21:10.00")  # > 5 % over 20 min
    result = recipe_rule.verdict(
        [recipe_rule.read_run(slower), recipe_rule.read_run(better[1])],
        [recipe_rule.read_run(r) for r in refs],
        0.05,
    )
    assert result["checks"]["training_time_within_limit"] is False and result["adopt"] is False
    within_budget = recipe_rule.verdict(
        [recipe_rule.read_run(slower), recipe_rule.read_run(better[1])],
        [recipe_rule.read_run(r) for r in refs],
        0.05,
        budget_min=60,
    )
    assert within_budget["adopt"] is True
    worse_atnorm = _run(tmp_path / "c3", val_auroc=0.89, ba=0.70, auroc=0.87, wall="20:00.00")
    result = recipe_rule.verdict(
        [recipe_rule.read_run(worse_atnorm), recipe_rule.read_run(better[1])],
        [recipe_rule.read_run(r) for r in refs],
        0.05,
    )
    assert result["checks"]["atnorm_tta_balanced_accuracy_rises"] is False and result["adopt"] is False
    assert result["checks"]["atnorm_tta_auroc_rises"] and result["checks"]["val_auroc_does_not_fall"]


def test_reports_the_per_epoch_time_ratio_where_histories_exist(tmp_path: Path) -> None:
    runs = []
    for name, epoch_seconds in (("c", [90.0, 110.0]), ("r", [80.0, 80.0, 80.0])):
        folder = _run(tmp_path / name, val_auroc=0.88, ba=0.79, auroc=0.86, wall="20:00.00")
        rows = "".join(f"{i},{s}\n" for i, s in enumerate(epoch_seconds))
        (folder / "history.csv").write_text("epoch,train_time_s\n" + rows)
        runs.append(recipe_rule.read_run(folder))
    result = recipe_rule.verdict([runs[0]], [runs[1]], 0.05)
    assert result["epoch_train_ratio"] == [pytest.approx(1.25)]


def test_missing_file_names_the_folder(tmp_path: Path) -> None:
    folder = _run(tmp_path / "run", val_auroc=0.9, ba=0.8, auroc=0.9, wall="1:00.00")
    (folder / "atnorm_tta.json").unlink()
    with pytest.raises(SystemExit, match=r"run: missing atnorm_tta\.json"):
        recipe_rule.read_run(folder)
