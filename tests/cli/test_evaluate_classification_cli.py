from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.data.sources import load_catalog
from mitoscope.metrics.classification import classification_report

runner = CliRunner()


def _atnorm_like(root: Path) -> Path:
    """Class folders + expert_votes.csv (AtNorM-MD layout): 4 atypical, 6 normal."""
    rows = []
    for i in range(10):
        cls = "Atypical" if i < 4 else "Normal"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / cls / f"{i}.png")
        rows.append(
            {"Filename": f"{i}.png", "Expert_1": cls, "Expert_2": cls, "Expert_3": cls, "Majority": cls}
        )
    votes = root / "expert_votes.csv"
    pd.DataFrame(rows).to_csv(votes, index=False)
    return votes


def _predictions(path: Path, probs: list[float], labels: list[str], root: str = "") -> Path:
    """A ``mitoscope classify`` CSV for the ten patches of :func:`_atnorm_like` (4 atypical, 6 normal)."""
    files = [f"{root}{'Atypical' if i < 4 else 'Normal'}/{i}.png" for i in range(10)]
    pd.DataFrame({"file": files, "p_atypical": probs, "label": labels}).to_csv(path, index=False)
    return path


def test_metrics_json_and_threshold(tmp_path: Path) -> None:
    votes = _atnorm_like(tmp_path / "atnorm")
    probs = [0.9, 0.8, 0.4, 0.55, 0.1, 0.2, 0.6, 0.3, 0.45, 0.05]
    # predictions name the files by another root: they are matched by their trailing path
    labels = ["atypical" if p >= 0.5 else "normal" for p in probs]
    pred_csv = _predictions(tmp_path / "pred.csv", probs, labels, root="/elsewhere/")
    out_json = tmp_path / "rep" / "report.json"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "classification",
            str(pred_csv),
            "--truth",
            str(votes),
            "--json",
            str(out_json),
            "--bootstrap",
            "50",
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out_json.read_text())
    expected = classification_report([1] * 4 + [0] * 6, probs)
    for key in ("balanced_accuracy", "auroc", "sensitivity", "specificity", "f1", "tp", "fp"):
        assert report[key] == pytest.approx(expected[key])
    assert report["n"] == 10 and report["n_unmatched_predictions"] == 0
    assert len(report["balanced_accuracy_ci"]) == 2
    assert "0.792" in res.output  # balanced accuracy (3/4 + 5/6) / 2 in the table

    # a threshold overrides the label column
    res = runner.invoke(
        app,
        [
            "evaluate",
            "classification",
            str(pred_csv),
            "-t",
            str(votes),
            "--threshold",
            "0.35",
            "--json",
            str(out_json),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out_json.read_text())["sensitivity"] == 1.0


def test_real_amibr_subset_by_domain(tmp_path: Path, shared_data: Path) -> None:
    truth = shared_data / "amibr" / "amibr_train.csv"
    catalog = load_catalog(truth)
    sub = pd.concat([catalog[catalog["domain"] == d].head(30) for d in sorted(catalog["domain"].unique())])
    rng = np.random.default_rng(0)
    probs = np.clip(sub["target"].to_numpy() * 0.3 + rng.random(len(sub)) * 0.7, 0, 1)
    pred = pd.DataFrame({"file": sub["image"].to_numpy(), "p_atypical": probs})
    pred.loc[len(pred)] = ["/nowhere/not_in_truth.png", 0.5]
    pred_csv = tmp_path / "pred.csv"
    pred.to_csv(pred_csv, index=False)
    out_json = tmp_path / "r.json"
    res = runner.invoke(
        app,
        [
            "evaluate",
            "classification",
            str(pred_csv),
            "--truth",
            str(truth),
            "--by",
            "domain",
            "--json",
            str(out_json),
        ],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out_json.read_text())
    assert report["n"] == len(sub) and report["n_unmatched_predictions"] == 1
    assert report["n_truth_without_prediction"] == len(catalog) - len(sub)
    assert set(report["groups"]) == set(catalog["domain"].unique())
    exp = classification_report(sub["target"].to_numpy(), probs, groups=sub["domain"].tolist())
    assert report["auroc"] == pytest.approx(exp["auroc"])
    for name, g in exp["groups"].items():
        assert report["groups"][name]["balanced_accuracy"] == pytest.approx(g["balanced_accuracy"])
    assert "warning" in res.output and "MIDOG21" in res.output


def test_errors(tmp_path: Path) -> None:
    votes = _atnorm_like(tmp_path / "atnorm")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\na.png,0.3\n")
    res = runner.invoke(app, ["evaluate", "classification", str(bad), "--truth", str(votes)])
    assert res.exit_code == 1 and "p_atypical" in res.output and "Traceback" not in res.output
    nomatch = tmp_path / "nomatch.csv"
    nomatch.write_text("file,p_atypical\nzzz.png,0.3\n")
    res = runner.invoke(app, ["evaluate", "classification", str(nomatch), "--truth", str(votes)])
    assert res.exit_code == 1 and "no prediction matches" in res.output
    res = runner.invoke(
        app, ["evaluate", "classification", str(tmp_path / "none.csv"), "--truth", str(votes)]
    )
    assert res.exit_code == 1 and "not found" in res.output
    ok = tmp_path / "ok.csv"
    ok.write_text("file,p_atypical\n0.png,0.3\n")
    res = runner.invoke(app, ["evaluate", "classification", str(ok), "--truth", str(votes), "--by", "colour"])
    assert res.exit_code == 1 and "colour" in res.output


def test_choose_threshold_reports_the_local_operating_point(tmp_path: Path) -> None:
    votes = _atnorm_like(tmp_path / "atnorm")
    # atypical 0.3-0.45, normal 0.05-0.25: the trained threshold 0.5 misses every atypical figure
    probs = [0.45, 0.4, 0.35, 0.3, 0.05, 0.1, 0.15, 0.2, 0.25, 0.1]
    _predictions(tmp_path / "pred.csv", probs, ["normal"] * 10)
    args = ["evaluate", "classification", str(tmp_path / "pred.csv"), "-t", str(votes), "--bootstrap", "0"]
    res = runner.invoke(app, [*args, "--choose-threshold", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["balanced_accuracy"] == pytest.approx(0.5)  # the CSV's own labels
    chosen = report["chosen_threshold"]
    assert 0.25 < chosen["threshold"] < 0.3 and chosen["balanced_accuracy"] == pytest.approx(1.0)
    assert "--threshold 0.275" in " ".join(res.output.split())
    assert chosen["fewest_of_a_class"] == 4
    assert "only 4 labelled patches of one class" in " ".join(res.output.split())  # too few to trust, said so

    # one class only: nothing to choose, said plainly
    pd.DataFrame({"Filename": ["0.png"], "Majority": ["Atypical"]}).to_csv(tmp_path / "one.csv", index=False)
    (tmp_path / "Atypical").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "Atypical" / "0.png")
    res = runner.invoke(
        app,
        ["evaluate", "classification", str(tmp_path / "pred.csv"), "-t", str(tmp_path / "one.csv"),
         "--bootstrap", "0", "--choose-threshold"],
    )  # fmt: skip
    assert res.exit_code != 0 and "needs both atypical and normal labels" in res.output


def test_out_of_fold_file_is_decided_by_its_threshold_column_not_its_truth_labels(tmp_path: Path) -> None:
    """``oof_predictions.csv`` carries the truth in ``label`` and each fold's threshold: scoring it must
    threshold ``p_atypical`` per row, not read the truth back as decisions (balanced accuracy 1.0)."""
    votes = _atnorm_like(tmp_path / "atnorm")
    probs = [0.9, 0.8, 0.4, 0.55, 0.1, 0.2, 0.6, 0.3, 0.45, 0.05]
    truth = ["atypical"] * 4 + ["normal"] * 6
    pred_csv = _predictions(tmp_path / "oof.csv", probs, truth)
    frame = pd.read_csv(pred_csv)
    frame["threshold"] = [0.5] * 5 + [0.35] * 5  # two folds
    frame.to_csv(pred_csv, index=False)
    out_json = tmp_path / "report.json"
    res = runner.invoke(
        app, ["evaluate", "classification", str(pred_csv), "--truth", str(votes), "--json", str(out_json)]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(out_json.read_text())
    assert report["decision"] == "threshold column"
    # decisions: 1 1 0 1 0 | 0 1 0 1 0 → sensitivity 3/4, specificity 4/6
    assert report["sensitivity"] == pytest.approx(0.75)
    assert report["specificity"] == pytest.approx(4 / 6)


def test_experts_option_scores_each_expert_and_the_model_against_the_others(tmp_path: Path) -> None:
    root = tmp_path / "atnorm"
    votes = _atnorm_like(root)
    frame = pd.read_csv(votes)
    frame.loc[[0, 5], "Expert_3"] = ["Normal", "Atypical"]  # expert 3 disagrees twice
    frame.to_csv(votes, index=False)
    probs = [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.3, 0.2, 0.05]
    pred_csv = _predictions(tmp_path / "pred.csv", probs, ["atypical"] * 4 + ["normal"] * 6)
    out_json = tmp_path / "report.json"
    args = ["evaluate", "classification", str(pred_csv), "--truth", str(votes), "--json", str(out_json)]
    res = runner.invoke(app, [*args, "--experts", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    agreement = json.loads(out_json.read_text())["expert_agreement"]
    # experts 1 and 2 agree everywhere: expert 3 is scored on all ten records and misses one of each class
    assert agreement["experts"]["expert_3"]["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    # for experts 1 and 2 the others tie on the two disputed records, which are left out
    assert agreement["experts"]["expert_1"]["n"] == 8
    assert agreement["models"]["model"]["balanced_accuracy"] == 1.0
    assert agreement["by_agreement"]["disputed"]["n"] == 2
    assert "experts' mean" in res.output
