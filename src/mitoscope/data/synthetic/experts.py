"""Per-figure atypicality latent and three simulated experts who disagree on borderline figures.

Each mitotic figure gets a latent ``a`` (negative: clearly normal, positive: clearly atypical,
near 0: borderline). The figure's structure follows it (severity of the atypical change, or stray
chromosomes on a borderline normal figure) and each expert votes ``a + bias + noise > 0``, so
experts agree on clear cases and split on borderline ones, as in AMi-Br / MIDOG 2025.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mitoscope.data.synthetic.figures import (
    ATYPICAL_KINDS,
    ATYPICAL_WEIGHTS,
    IMPOSTER_KINDS,
    NORMAL_KINDS,
    NORMAL_WEIGHTS,
    SUBCLASS,
    SUBCLASS_IF_FLIPPED,
)

#: Each expert's bias (positive: calls atypical more readily) and noise.
EXPERT_BIAS: tuple[float, ...] = (-0.1, 0.05, 0.2)
EXPERT_NOISE = 0.55


@dataclass(frozen=True)
class FigureSpec:
    """What to draw and how it is labelled.

    Attributes:
        kind: figure kind (``metaphase``, ``multipolar``, ``apoptotic``, …).
        mitotic: True for mitotic figures, False for imposters.
        latent: atypicality latent (0 for imposters).
        severity: structural parameter passed to the renderer.
        votes: each expert's atypical vote (1/0); empty for imposters.
        atypical: majority of ``votes``.
        subclasses: each expert's subclass (AMi-Br style), empty for imposters.
    """

    kind: str
    mitotic: bool
    latent: float
    severity: float
    votes: tuple[int, ...]
    atypical: bool
    subclasses: tuple[str, ...]


def _weighted(rng: np.random.Generator, kinds: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, dtype=float)
    return str(kinds[int(rng.choice(len(kinds), p=p / p.sum()))])


def sample_mitosis(
    rng: np.random.Generator, atypical_fraction: float, *, kind: str | None = None
) -> FigureSpec:
    """Draw a mitotic figure: its kind, latent, severity and the experts' votes.

    Args:
        rng: random generator.
        atypical_fraction: probability that the figure is drawn from an atypical kind.
        kind: force a kind (the gallery does); its class then decides the latent's sign.

    Examples:
        >>> s = sample_mitosis(np.random.default_rng(0), 1.0)
        >>> s.kind in ATYPICAL_KINDS, len(s.votes)
        (True, 3)
    """
    if kind is None:
        is_atyp = bool(rng.random() < atypical_fraction)
        kind = (
            _weighted(rng, ATYPICAL_KINDS, ATYPICAL_WEIGHTS)
            if is_atyp
            else _weighted(rng, NORMAL_KINDS, NORMAL_WEIGHTS)
        )
    elif kind in ATYPICAL_KINDS:
        is_atyp = True
    elif kind in NORMAL_KINDS:
        is_atyp = False
    else:
        raise ValueError(f"not a mitotic kind: {kind!r}")
    margin = abs(float(rng.normal(1.3, 0.75)))
    latent = margin if is_atyp else -margin
    if is_atyp:
        severity = float(np.clip(0.1 + margin / 2.5, 0.1, 1.0))
    else:
        severity = float(np.clip(0.6 * (1.0 - margin / 1.2), 0.0, 0.6))
    votes = tuple(int(latent + b + rng.normal(0, EXPERT_NOISE) > 0) for b in EXPERT_BIAS)
    atypical = sum(votes) * 2 > len(votes)
    subclasses = tuple(SUBCLASS[kind] if bool(v) == is_atyp else SUBCLASS_IF_FLIPPED[kind] for v in votes)
    return FigureSpec(kind, True, latent, severity, votes, atypical, subclasses)


def sample_imposter(rng: np.random.Generator, *, kind: str | None = None) -> FigureSpec:
    """Draw a hard negative (imposter) kind.

    Examples:
        >>> sample_imposter(np.random.default_rng(0)).mitotic
        False
    """
    if kind is None:
        kind = str(IMPOSTER_KINDS[int(rng.integers(len(IMPOSTER_KINDS)))])
    elif kind not in IMPOSTER_KINDS:
        raise ValueError(f"not an imposter kind: {kind!r}")
    return FigureSpec(kind, False, 0.0, 0.0, (), False, ())
