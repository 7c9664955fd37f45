from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from mitoscope.cli.main import app
from mitoscope.inference.classify import Classifier
from mitoscope.io.catalog import make_catalog
from mitoscope.io.midog_outputs import read_track2_json
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.models.registry import register_model

ARCH = "c3_test_classify_cli_tiny"
runner = CliRunner()


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, stride=2)
        self.fc = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = 4.0 * self.fc(self.conv(x).mean(dim=(2, 3)))[:, 0]
        return {"logits": logits, "prob": torch.sigmoid(logits)}


try:

    @register_model(ARCH)
    def _build() -> nn.Module:
        return _Tiny()

except ValueError:
    pass


def _save(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    contract = ModelContract(
        architecture=ARCH, kwargs={}, task="classification", input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    return save_checkpoint(path, _Tiny().eval(), contract)


def _patches(n: int, size: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_folder_recursive(tmp_path: Path) -> None:
    ckpt = _save(tmp_path / "m.pt")
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    patches = _patches(3)
    names = [folder / "a.png", folder / "sub" / "b.png", folder / "sub" / "c.jpg"]
    for p, name in zip(patches, names, strict=True):
        Image.fromarray(p).save(name, quality=100) if name.suffix == ".jpg" else Image.fromarray(p).save(name)
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "pred.csv"
    res = runner.invoke(
        app, ["classify", "--model", str(ckpt), str(folder), "--out", str(out), "--batch-size", "2"]
    )
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["file", "p_atypical", "label"]
    assert [Path(f).name for f in frame["file"]] == ["a.png", "b.png", "c.jpg"]
    clf = Classifier.from_path(ckpt)
    expected = clf.predict_arrays([np.asarray(Image.open(n).convert("RGB")) for n in names])
    np.testing.assert_allclose(frame["p_atypical"], expected, atol=1e-5)
    assert set(frame["label"]) <= {"normal", "atypical"}
    assert not (tmp_path / "pred.json").exists()
    images = [np.asarray(Image.open(n).convert("RGB")) for n in names]
    stained = tmp_path / "stained.csv"
    res = runner.invoke(
        app,
        [
            "classify",
            "--model",
            str(ckpt),
            str(folder),
            "--out",
            str(stained),
            "--tta",
            "--set",
            "stain_tta=true",
        ],
    )
    assert res.exit_code == 0 and "stain TTA" in res.output, res.output
    expected = Classifier.from_path(ckpt, tta=True, stain_tta=True).predict_arrays(images)
    np.testing.assert_allclose(pd.read_csv(stained)["p_atypical"], expected, atol=1e-5)


def test_threshold_overrides_the_trained_one(tmp_path: Path) -> None:
    ckpt = _save(tmp_path / "m.pt")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, p in enumerate(_patches(6)):
        Image.fromarray(p).save(folder / f"{i}.png")
    labels = {}
    for t in ("0", "1", "0.5"):
        out = tmp_path / f"pred_{t}.csv"
        res = runner.invoke(
            app, ["classify", "--model", str(ckpt), str(folder), "--out", str(out), "--threshold", t]
        )
        assert res.exit_code == 0, res.output
        assert f"threshold {float(t):.3f}" in res.output
        frame = pd.read_csv(out)
        labels[t] = frame["label"].tolist()
        expected = np.where(frame["p_atypical"].to_numpy() >= float(t), "atypical", "normal").tolist()
        assert labels[t] == expected
    assert set(labels["0"]) == {"atypical"} and set(labels["1"]) == {"normal"}
    res = runner.invoke(
        app,
        ["classify", "--model", str(ckpt), str(folder), "--out", str(tmp_path / "x.csv"), "--threshold", "2"],
    )
    assert res.exit_code != 0 and "threshold" in res.output.lower()


def test_stack_writes_track2_json_and_ensemble_votes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for k in range(3):
        _save(run / f"fold_{k}" / "best.pt", seed=k)
    (run / "ensemble.json").write_text(
        json.dumps({"models": [f"fold_{k}/best.pt" for k in range(3)], "rule": "majority"})
    )
    stack = tmp_path / "stack.tiff"
    patches = _patches(5, size=32)
    tifffile.imwrite(stack, np.stack(patches))
    out = tmp_path / "res" / "pred.csv"
    res = runner.invoke(app, ["classify", "--model", str(run), str(stack), "--out", str(out), "--tta"])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["file", "page", "p_atypical", "label", "votes"]
    assert frame["page"].tolist() == [0, 1, 2, 3, 4]
    records = json.loads((tmp_path / "res" / "pred.json").read_text())
    assert len(records) == 5
    assert read_track2_json(tmp_path / "res" / "pred.json")["label"].tolist() == frame["label"].tolist()
    assert [r["class"] for r in records] == frame["label"].tolist()
    np.testing.assert_allclose([r["confidence"] for r in records], frame["p_atypical"], atol=1e-6)
    full = Classifier.from_path(run, tta=True).predict_arrays_full(patches)
    assert frame["votes"].tolist() == full.votes.tolist()
    assert frame["label"].tolist() == ["atypical" if v else "normal" for v in full.label]


def test_real_track2_stack(tmp_path: Path, shared_data: Path) -> None:
    ckpt = _save(tmp_path / "m.pt")
    stack = shared_data / "slides" / "midog25_track2_stack_5.tiff"
    out = tmp_path / "t2.csv"
    track2 = tmp_path / "custom.json"
    res = runner.invoke(
        app, ["classify", "--model", str(ckpt), str(stack), "--out", str(out), "--json", str(track2)]
    )
    assert res.exit_code == 0, res.output
    records = json.loads(track2.read_text())
    assert len(records) == 16 and pd.read_csv(out)["page"].tolist() == list(range(16))
    assert all(set(r) == {"class", "confidence"} and 0.0 <= r["confidence"] <= 1.0 for r in records)
    assert all(r["class"] in ("normal", "atypical") for r in records)


@pytest.mark.parametrize(
    ("model", "inp", "message"),
    [
        ("missing.pt", "imgs", "model path not found"),
        ("m.pt", "nothing_here", "input not found"),
        ("m.pt", "empty", "no image files"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, model: str, inp: str, message: str) -> None:
    _save(tmp_path / "m.pt")
    (tmp_path / "imgs").mkdir()
    Image.fromarray(_patches(1)[0]).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "o.csv"
    res = runner.invoke(
        app, ["classify", "--model", str(tmp_path / model), str(tmp_path / inp), "--out", str(out)]
    )
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_source_csv_then_evaluate(tmp_path: Path) -> None:
    """classify a labelled source (AtNorM-MD layout: class folders + expert_votes.csv), then score it."""
    ckpt = _save(tmp_path / "m.pt")
    root = tmp_path / "atnorm"
    rows = []
    for i, p in enumerate(_patches(6)):
        cls = "Atypical" if i < 2 else "Normal"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(root / cls / f"{i}.png")
        rows.append({"Filename": f"{i}.png", "Expert_1": cls, "Expert_2": cls, "Majority": cls})
    votes = root / "expert_votes.csv"
    pd.DataFrame(rows).to_csv(votes, index=False)
    out = tmp_path / "pred.csv"
    res = runner.invoke(app, ["classify", "--model", str(ckpt), str(votes), "--out", str(out)])
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(out)
    assert len(frame) == 6 and sorted(Path(f).name for f in frame["file"]) == [f"{i}.png" for i in range(6)]
    report = tmp_path / "r.json"
    res = runner.invoke(
        app, ["evaluate", "classification", str(out), "--truth", str(votes), "--json", str(report)]
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(report.read_text())
    assert rep["n"] == 6 and rep["n_atypical"] == 2 and rep["n_unmatched_predictions"] == 0


class _TinyBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, stride=2)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = 4.0 * self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))[:, 0]
        return {"logits": logits, "prob": torch.sigmoid(logits)}


try:

    @register_model(ARCH + "_bn")
    def _build_bn() -> nn.Module:
        return _TinyBN()

except ValueError:
    pass


def test_adapt_bn_reestimates_statistics_on_the_input(tmp_path: Path) -> None:
    torch.manual_seed(0)
    contract = ModelContract(architecture=ARCH + "_bn", kwargs={}, task="classification", input_size=32)
    ckpt = save_checkpoint(tmp_path / "bn.pt", _TinyBN().eval(), contract)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, p in enumerate(_patches(40)):
        Image.fromarray(p).save(folder / f"{i:02d}.png")
    outs = {}
    for flag in ([], ["--set=adapt_bn=true"]):
        out = tmp_path / f"pred{len(flag)}.csv"
        res = runner.invoke(
            app,
            ["classify", "--model", str(ckpt), str(folder), "--out", str(out), "--precision", "fp32", *flag],
        )
        assert res.exit_code == 0, res.output
        assert ("re-estimated on 40 patches" in res.output) == bool(flag)
        outs[len(flag)] = pd.read_csv(out)["p_atypical"].to_numpy()
    clf = Classifier.from_path(ckpt, precision="fp32", fuse_batchnorm=False)
    catalog = make_catalog({"image": str(p)} for p in sorted(folder.iterdir()))
    clf.adapt_batchnorm(catalog)
    np.testing.assert_allclose(outs[1], clf.predict_catalog(catalog)["p_atypical"], atol=1e-5)
    assert np.abs(outs[1] - outs[0]).max() > 1e-3

    few = tmp_path / "few"
    few.mkdir()
    for i, p in enumerate(_patches(5)):
        Image.fromarray(p).save(few / f"{i}.png")
    res = runner.invoke(
        app,
        [
            "classify",
            "--model",
            str(ckpt),
            str(few),
            "--out",
            str(tmp_path / "f.csv"),
            "--set",
            "adapt_bn=true",
        ],
    )
    assert res.exit_code != 0 and "at least 32 patches" in res.output
    assert not (tmp_path / "f.csv").exists()


def test_stain_normalisation_fits_saves_and_reuses_a_reference(tmp_path: Path) -> None:
    from mitoscope.data.stain_normalization import StainNormalizer

    ckpt = _save(tmp_path / "m.pt")
    rng = np.random.default_rng(3)
    reference, folder = tmp_path / "ref", tmp_path / "imgs"
    reference.mkdir()
    folder.mkdir()
    for i in range(6):
        tint = rng.integers(60, 200, 3)
        Image.fromarray(np.clip(tint + rng.integers(-40, 40, (40, 40, 3)), 0, 255).astype(np.uint8)).save(
            reference / f"{i}.png"
        )
    images = _patches(5)
    for i, p in enumerate(images):
        Image.fromarray(p).save(folder / f"{i}.png")
    saved = tmp_path / "stain.json"
    base = [
        "classify",
        "--model",
        str(ckpt),
        str(folder),
        "--precision",
        "fp32",
        "--set",
        "stain_normalize=reinhard",
    ]
    res = runner.invoke(
        app,
        [
            *base,
            "--set",
            f"stain_reference={reference}",
            "--set",
            f"save_stain_reference={saved}",
            "--out",
            str(tmp_path / "a.csv"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "reinhard stain" in res.output
    res = runner.invoke(app, [*base, "--set", f"stain_reference={saved}", "--out", str(tmp_path / "b.csv")])
    assert res.exit_code == 0, res.output
    first, second = (pd.read_csv(tmp_path / n)["p_atypical"].to_numpy() for n in ("a.csv", "b.csv"))
    np.testing.assert_array_equal(first, second)

    # the same as classifying patches normalised beforehand
    norm = StainNormalizer.load(saved)
    plain = Classifier.from_path(ckpt, precision="fp32")
    expected = plain.predict_arrays([norm(np.asarray(Image.open(folder / f"{i}.png"))) for i in range(5)])
    np.testing.assert_allclose(first, expected, atol=1e-5)
    assert np.abs(first - plain.predict_arrays(images)).max() > 1e-3

    for extra, message in (
        ([], "needs stain_reference"),
        (["--set", f"stain_reference={saved}", "--set", "stain_normalize=macenko"], "a reinhard reference"),
    ):
        res = runner.invoke(app, [*base, *extra, "--out", str(tmp_path / "c.csv")])
        assert res.exit_code != 0 and message in res.output, res.output
    assert not (tmp_path / "c.csv").exists()


def test_unreadable_images_are_listed_and_the_rest_written(tmp_path: Path) -> None:
    ckpt = _save(tmp_path / "m.pt")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, p in enumerate(_patches(3)):
        Image.fromarray(p).save(folder / f"ok{i}.png")
    whole = (folder / "ok0.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])  # a truncated PNG
    (folder / "text.png").write_text("not an image")
    out = tmp_path / "pred.csv"
    res = runner.invoke(app, ["classify", "--model", str(ckpt), str(folder), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "2 unreadable image(s) skipped" in res.output
    assert "cut.png" in res.output and "text.png" in res.output
    assert [Path(f).name for f in pd.read_csv(out)["file"]] == ["ok0.png", "ok1.png", "ok2.png"]


def test_a_text_file_given_as_the_model_is_not_a_model(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_text("hello")
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(_patches(1)[0]).save(folder / "a.png")
    res = runner.invoke(
        app, ["classify", "--model", str(model), str(folder), "--out", str(tmp_path / "p.csv")]
    )
    assert res.exit_code == 1 and "not a mitoscope model" in res.output
    assert "could run code" not in res.output


def test_several_inputs_and_the_bundled_model_by_default(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, patch in zip((a, b), _patches(2, size=128), strict=True):
        folder.mkdir()
        Image.fromarray(patch).save(folder / "x.png")
    out = tmp_path / "pred.csv"
    res = runner.invoke(app, ["classify", str(a), str(b), "--out", str(out), "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out)) == 2 and "1 model(s)" in res.output
