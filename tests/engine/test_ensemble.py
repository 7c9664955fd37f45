from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mitoscope.engine.ensemble import Ensemble, load_ensemble, model_prob, resolve_ensemble
from mitoscope.models.checkpoint import ModelContract, save_checkpoint
from mitoscope.models.registry import register_model
from mitoscope.utils.errors import InputError

ARCH = "c3_test_ensemble_tiny"


class _Tiny(nn.Module):
    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 1)
        nn.init.constant_(self.fc.bias, bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(self.conv(x).mean(dim=(2, 3)))[:, 0]
        return {"logits": logits, "prob": torch.sigmoid(logits)}


try:

    @register_model(ARCH)
    def _build(*, bias: float = 0.0) -> nn.Module:
        return _Tiny(bias)

except ValueError:  # registered already by another import of this module
    pass


class _Const(nn.Module):
    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.probs = torch.tensor(probs)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prob": self.probs[: x.shape[0]]}


def _contract(threshold: float = 0.5, size: int = 16) -> ModelContract:
    return ModelContract(
        architecture=ARCH,
        kwargs={},
        task="classification",
        input_size=size,
        thresholds={"default": threshold},
    )


def _save(path: Path, seed: int, threshold: float = 0.5) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(path, _Tiny(), _contract(threshold))


def test_majority_vote_tie_break_and_mean_rule() -> None:
    x = torch.zeros(3, 3, 16, 16)
    c = _contract()
    members = [_Const([0.9, 0.6, 0.1]), _Const([0.8, 0.4, 0.45]), _Const([0.2, 0.3, 0.6])]
    ens = Ensemble(members, [c, c, c], rule="majority")
    out = ens.predict(x)
    assert out.votes.tolist() == [2, 1, 1]
    assert out.label.tolist() == [1, 0, 0]
    np.testing.assert_allclose(
        out.prob, [(0.9 + 0.8 + 0.2) / 3, (0.6 + 0.4 + 0.3) / 3, (0.1 + 0.45 + 0.6) / 3]
    )
    # majority label differs from the thresholded mean for row 2 under a low ensemble threshold
    mean_ens = Ensemble(members, [c, c, c], rule="mean", threshold=0.35)
    assert mean_ens.predict(x).label.tolist() == [1, 1, 1]
    # two members: a 1-1 tie is broken by the mean probability
    tie = Ensemble(members[:2], [c, c], rule="majority")
    res = tie.predict(x)
    assert res.votes.tolist() == [2, 1, 0]
    assert res.label.tolist() == [1, 1, 0]  # row 1: mean 0.5 >= 0.5


def test_member_thresholds_are_used_for_votes() -> None:
    x = torch.zeros(1, 3, 16, 16)
    members = [_Const([0.3]), _Const([0.3]), _Const([0.9])]
    contracts = [_contract(0.25), _contract(0.25), _contract(0.5)]
    ens = Ensemble(members, contracts, rule="majority")
    assert ens.threshold == pytest.approx(1 / 3)
    assert ens.predict(x).votes.tolist() == [3]


def test_tta_views_merged_by_logits_or_prob() -> None:
    class ViewProb(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"prob": x[:, 0, 0, 0]}

    c = _contract()
    views = [torch.full((1, 3, 2, 2), 0.9), torch.full((1, 3, 2, 2), 0.5)]
    by_prob = Ensemble([ViewProb()], [c], tta_reduce="prob").member_probs(views)
    by_logit = Ensemble([ViewProb()], [c], tta_reduce="logits").member_probs(views)
    assert float(by_prob[0, 0]) == pytest.approx(0.7)
    expected = torch.sigmoid(torch.logit(torch.tensor([0.9, 0.5])).mean())
    assert float(by_logit[0, 0]) == pytest.approx(float(expected), abs=1e-5)


def test_bad_inputs() -> None:
    c = _contract()
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([], [])
    with pytest.raises(ValueError, match="rule"):
        Ensemble([_Const([0.1])], [c], rule="vote")
    with pytest.raises(ValueError, match="input_size"):
        Ensemble([_Const([0.1]), _Const([0.1])], [c, _contract(size=32)])

    class NoProb(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"features": x}

    with pytest.raises(ValueError, match="neither 'prob' nor 'logits'"):
        model_prob(NoProb(), torch.zeros(1, 3, 2, 2))


def test_load_single_checkpoint_run_dir_and_json(tmp_path: Path) -> None:
    x = torch.rand(4, 3, 16, 16)
    single = _save(tmp_path / "one.pt", 0)
    ens1 = load_ensemble(single)
    assert len(ens1) == 1 and ens1.rule == "mean"

    run = tmp_path / "run"
    paths = [_save(run / f"fold_{k}" / "best.pt", k, threshold=0.4 + 0.1 * k) for k in range(3)]
    ens3 = load_ensemble(run)
    assert len(ens3) == 3 and ens3.rule == "majority"
    assert ens3.member_thresholds.tolist() == pytest.approx([0.4, 0.5, 0.6])
    probs = ens3.member_probs(x).numpy()
    # the loaded members are the saved models, in fold order
    for k, p in enumerate(paths):
        torch.manual_seed(k)
        ref = _Tiny().eval()
        assert p.is_file()
        np.testing.assert_allclose(probs[:, k], model_prob(ref, x).detach().numpy(), rtol=1e-5)

    spec = {"models": ["fold_0/best.pt", {"path": "fold_2/best.pt"}], "rule": "mean", "threshold": 0.3}
    (run / "ensemble.json").write_text(json.dumps(spec))
    ens_json = load_ensemble(run)
    assert len(ens_json) == 2 and ens_json.rule == "mean" and ens_json.threshold == 0.3
    assert load_ensemble(run / "ensemble.json", rule="majority").rule == "majority"


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        resolve_ensemble(tmp_path / "missing.pt")
    with pytest.raises(InputError, match=r"no ensemble\.json"):
        resolve_ensemble(tmp_path)
    bad = tmp_path / "ensemble.json"
    bad.write_text(json.dumps({"models": ["fold_9/best.pt"]}))
    with pytest.raises(InputError, match="fold_9"):
        resolve_ensemble(bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"ensemble\.json: not valid JSON"):
        resolve_ensemble(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"nope")
    with pytest.raises(InputError, match=r"junk\.pt"):
        load_ensemble(junk)
