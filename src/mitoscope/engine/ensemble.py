"""Ensembles of classifier checkpoints (e.g. the fold models of a cross-validation run).

Two rules:

* ``"majority"`` (Percannella et al., MIDOG 2025): each member thresholds its own P(atypical) at its own
  threshold and votes; the label is the majority of votes, ties are broken by the mean probability against
  the ensemble threshold. The reported probability is the mean of the members' probabilities.
* ``"mean"``: the mean probability, thresholded at the ensemble threshold.

An ``ensemble.json`` (written by a training run) looks like::

    {"models": ["fold_0/best.pt", "fold_1/best.pt", ...],   # paths relative to the JSON file
     "rule": "majority", "threshold": 0.5}

``models`` entries may also be ``{"path": ...}`` dicts; ``threshold`` is optional.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mitoscope.models.checkpoint import ModelContract, is_bundle_path, load_model
from mitoscope.utils.errors import InputError

RULES = ("majority", "mean")
ENSEMBLE_FILE = "ensemble.json"
_CHECKPOINT_NAMES = ("model.pt", "best.pt", "last.pt")


def _logit(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    p = p.clamp(eps, 1.0 - eps)
    return torch.log(p) - torch.log1p(-p)


def model_prob(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """P(atypical) of shape ``(N,)`` from a classifier that returns a dict with ``"prob"`` (or ``"logits"``).

    Examples:
        >>> class M(nn.Module):
        ...     def forward(self, x):
        ...         return {"logits": x.mean(dim=(1, 2, 3))}
        >>> model_prob(M(), torch.zeros(2, 3, 4, 4)).tolist()
        [0.5, 0.5]
    """
    out = model(x)
    if isinstance(out, dict):
        if "prob" in out:
            prob = out["prob"]
        elif "logits" in out:
            prob = torch.sigmoid(out["logits"])
        else:
            raise ValueError(f"classifier output has neither 'prob' nor 'logits' (keys: {sorted(out)})")
    else:
        prob = torch.sigmoid(out)
    prob = prob.float()
    if prob.ndim == 2 and prob.shape[1] == 1:
        prob = prob[:, 0]
    if prob.ndim != 1 or prob.shape[0] != x.shape[0]:
        raise ValueError(f"expected P(atypical) of shape ({x.shape[0]},), got {tuple(prob.shape)}")
    return prob


@dataclass
class EnsembleOutput:
    """Result of an ensemble on a batch (NumPy arrays)."""

    prob: np.ndarray  # (N,) mean P(atypical) over members
    label: np.ndarray  # (N,) 0/1 by the ensemble rule
    member_probs: np.ndarray  # (N, M)
    votes: np.ndarray  # (N,) number of members voting atypical


def combine_members(
    member_probs: np.ndarray | torch.Tensor,
    member_thresholds: Sequence[float] | np.ndarray,
    *,
    rule: str,
    threshold: float,
) -> EnsembleOutput:
    """Combine member probabilities ``(N, M)`` by ``rule`` (see the module docstring).

    ``member_thresholds`` are the members' own thresholds (their votes); ``threshold`` is the ensemble's
    (``mean``, and the tie-break of ``majority``).

    Examples:
        >>> out = combine_members(np.array([[0.9, 0.2, 0.7]]), [0.5, 0.5, 0.5], rule="majority", threshold=0.5)
        >>> int(out.label[0]), int(out.votes[0])
        (1, 2)
    """
    probs = np.asarray(member_probs, dtype=np.float64)
    thresholds = np.asarray(member_thresholds, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(thresholds):
        raise ValueError(f"expected member probabilities (N, {len(thresholds)}), got {probs.shape}")
    if rule not in RULES:
        raise ValueError(f"unknown ensemble rule {rule!r}; expected one of {RULES}")
    mean = probs.mean(axis=1)
    votes = (probs >= thresholds[None, :]).sum(axis=1)
    by_mean = mean >= threshold
    if rule == "majority":
        m = len(thresholds)
        label = np.where(2 * votes == m, by_mean, 2 * votes > m)
    else:
        label = by_mean
    return EnsembleOutput(
        prob=mean, label=label.astype(np.int64), member_probs=probs, votes=votes.astype(np.int64)
    )


class Ensemble:
    """Several classifiers with one contract, combined by majority vote or mean probability.

    Args:
        models: classifiers returning dicts with ``"prob"`` (N,) in eval mode.
        contracts: one :class:`ModelContract` per model; input size, mpp, mean and std must agree.
        rule: ``"majority"`` or ``"mean"``.
        threshold: ensemble threshold; default the mean of the members' ``thresholds["default"]``.
        tta_reduce: how test-time-augmentation views are merged per member: ``"logits"`` (mean logit)
            or ``"prob"`` (mean probability).

    Examples:
        >>> class Const(nn.Module):
        ...     def __init__(self, p):
        ...         super().__init__()
        ...         self.p = p
        ...     def forward(self, x):
        ...         return {"prob": torch.full((x.shape[0],), self.p)}
        >>> c = ModelContract(architecture="x", kwargs={}, task="classification", input_size=8)
        >>> ens = Ensemble([Const(0.9), Const(0.6), Const(0.1)], [c, c, c], rule="majority")
        >>> out = ens.predict(torch.zeros(1, 3, 8, 8))
        >>> round(float(out.prob[0]), 3), int(out.label[0]), int(out.votes[0])
        (0.533, 1, 2)
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        contracts: Sequence[ModelContract],
        *,
        rule: str = "majority",
        threshold: float | None = None,
        tta_reduce: str = "logits",
    ) -> None:
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if len(models) != len(contracts):
            raise ValueError(f"{len(models)} models but {len(contracts)} contracts")
        if rule not in RULES:
            raise ValueError(f"unknown ensemble rule {rule!r}; expected one of {RULES}")
        if tta_reduce not in ("logits", "prob"):
            raise ValueError(f"tta_reduce must be 'logits' or 'prob', got {tta_reduce!r}")
        first = contracts[0]
        for i, c in enumerate(contracts[1:], start=1):
            for key in ("input_size", "mpp", "mean", "std"):
                a, b = getattr(first, key), getattr(c, key)
                if not np.allclose(np.asarray(a, float), np.asarray(b, float)):
                    raise ValueError(f"ensemble member {i} has {key}={b}, member 0 has {a}")
        self.models = list(models)
        self.contracts = list(contracts)
        self.rule = rule
        self.tta_reduce = tta_reduce
        self.member_thresholds = np.array(
            [float(c.thresholds.get("default", 0.5)) for c in contracts], dtype=np.float64
        )
        self.threshold = float(self.member_thresholds.mean()) if threshold is None else float(threshold)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def contract(self) -> ModelContract:
        """The shared contract (that of the first member)."""
        return self.contracts[0]

    def override_threshold(self, threshold: float) -> None:
        """Decide at ``threshold`` instead of the trained thresholds: the ensemble's and every member's vote.

        Examples:
            >>> c = ModelContract(architecture="x", kwargs={}, task="classification", input_size=8)
            >>> ens = Ensemble([nn.Identity()] * 2, [c, c], rule="majority")
            >>> ens.override_threshold(0.2)
            >>> ens.combine(np.array([[0.3, 0.1]])).label.tolist(), ens.member_thresholds.tolist()
            ([1], [0.2, 0.2])
            >>> ens.override_threshold(1.5)
            Traceback (most recent call last):
            ...
            ValueError: threshold must be in [0, 1], got 1.5
        """
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.member_thresholds = np.full(len(self.models), float(threshold))

    def to(self, device: str | torch.device) -> Ensemble:
        """Move every member to ``device`` (in place) and return ``self``."""
        for m in self.models:
            m.to(device).eval()
        return self

    @torch.no_grad()
    def member_probs(self, views: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """P(atypical) of each member, ``(N, M)``; several ``views`` (TTA) are merged per member."""
        if isinstance(views, torch.Tensor):
            views = [views]
        cols = []
        for model in self.models:
            model.eval()
            per_view = torch.stack([model_prob(model, v) for v in views])  # (V, N)
            if len(views) == 1:
                cols.append(per_view[0])
            elif self.tta_reduce == "logits":
                cols.append(torch.sigmoid(_logit(per_view).mean(0)))
            else:
                cols.append(per_view.mean(0))
        return torch.stack(cols, dim=1).cpu()

    def combine(self, member_probs: np.ndarray | torch.Tensor) -> EnsembleOutput:
        """Apply the ensemble rule to member probabilities ``(N, M)``."""
        return combine_members(member_probs, self.member_thresholds, rule=self.rule, threshold=self.threshold)

    def predict(self, views: torch.Tensor | Sequence[torch.Tensor]) -> EnsembleOutput:
        """Member probabilities and the combined result for one batch (or its TTA views)."""
        return self.combine(self.member_probs(views).numpy())


def _resolve_entry(entry: Any, base: Path, where: Path) -> Path:
    if isinstance(entry, dict):
        entry = entry.get("path") or entry.get("file") or entry.get("checkpoint")
    if not isinstance(entry, str) or not entry:
        raise InputError(f"bad model entry {entry!r}", path=where)
    p = Path(entry)
    return p if p.is_absolute() else base / p


def read_ensemble_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an ``ensemble.json`` into ``{"models": [Path, ...], "rule": str, "threshold": float | None}``.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "ensemble.json").write_text('{"models": ["fold_0/best.pt"], "rule": "mean"}')
        >>> (d / "fold_0").mkdir(); (d / "fold_0" / "best.pt").touch()
        >>> spec = read_ensemble_spec(d / "ensemble.json")
        >>> spec["rule"], spec["models"][0].name
        ('mean', 'best.pt')
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("ensemble file not found", path=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc})", path=path) from exc
    if not isinstance(data, dict):
        raise InputError("expected a JSON object with a 'models' list", path=path)
    entries = data.get("models") or data.get("members") or data.get("checkpoints")
    if not isinstance(entries, list) or not entries:
        raise InputError("no 'models' list in ensemble file", path=path)
    models = [_resolve_entry(e, path.parent, path) for e in entries]
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        raise InputError(f"ensemble member checkpoint(s) not found: {', '.join(missing)}", path=path)
    rule = str(data.get("rule", "majority"))
    if rule not in RULES:
        raise InputError(f"unknown ensemble rule {rule!r}; expected one of {RULES}", path=path)
    thr = data.get("threshold")
    threshold = None if thr is None or (isinstance(thr, float) and math.isnan(thr)) else float(thr)
    return {"models": models, "rule": rule, "threshold": threshold}


def find_fold_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Checkpoints of a run directory without ``ensemble.json``: ``fold_*/model.pt`` (or ``best.pt``/``last.pt``),
    else ``*.pt`` files directly inside it (sorted).

    Examples:
        >>> import tempfile, pathlib
        >>> find_fold_checkpoints(pathlib.Path(tempfile.mkdtemp()))
        []
    """
    run_dir = Path(run_dir)
    found: list[Path] = []
    for fold in sorted(p for p in run_dir.glob("fold_*") if p.is_dir()):
        for name in _CHECKPOINT_NAMES:
            if (fold / name).is_file():
                found.append(fold / name)
                break
    if not found:
        found = sorted(p for p in run_dir.glob("*.pt") if p.is_file())
    return found


def resolve_ensemble(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Where the checkpoints of ``path`` are: an ``ensemble.json``, a run/ensemble directory or a checkpoint.

    Returns ``{"models": [Path, ...], "rule": str, "threshold": float | None}``.
    """
    if is_bundle_path(path):
        return {"models": [path], "rule": "mean", "threshold": None}
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_ensemble_spec(path)
    if path.is_file():
        return {"models": [path], "rule": "mean", "threshold": None}
    if path.is_dir():
        if (path / ENSEMBLE_FILE).is_file():
            return read_ensemble_spec(path / ENSEMBLE_FILE)
        found = find_fold_checkpoints(path)
        if not found:
            raise InputError(
                "no ensemble.json, fold_*/model.pt or *.pt checkpoint in this directory", path=path
            )
        return {"models": found, "rule": "majority" if len(found) > 1 else "mean", "threshold": None}
    raise InputError(
        "model path not found (expected a checkpoint, ensemble.json or run directory)", path=path
    )


def load_ensemble(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    rule: str | None = None,
    tta_reduce: str = "logits",
) -> Ensemble:
    """Load an :class:`Ensemble` from an ``ensemble.json``, a run directory, or a single checkpoint.

    Args:
        path: ``ensemble.json``; a directory holding one, or ``fold_*/model.pt`` checkpoints, or ``*.pt``
            files; or one checkpoint file (an ensemble of one).
        device: where to put the models.
        rule: override the rule stored in the ensemble file.
        tta_reduce: see :class:`Ensemble`.

    Examples:
        >>> load_ensemble("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: /nonexistent: model path not found ...
    """
    spec = resolve_ensemble(path)
    models, contracts = [], []
    for ckpt in spec["models"]:
        model, contract = load_model(ckpt, device=device)
        if contract.task != "classification":
            raise InputError(f"checkpoint is a {contract.task!r} model, not a classifier", path=ckpt)
        models.append(model)
        contracts.append(contract)
    return Ensemble(
        models,
        contracts,
        rule=rule or spec["rule"],
        threshold=spec["threshold"],
        tta_reduce=tta_reduce,
    )
