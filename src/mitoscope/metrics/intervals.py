"""Confidence intervals for the counts behind detection figures: a proportion (recall) and a rate (false
detections per mm²). Small test sets make these wide; the intervals say how wide."""

from __future__ import annotations

import math


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / trials`` (NaNs for no trials).

    Examples:
        >>> [round(v, 3) for v in wilson_interval(227, 276)]
        [0.773, 0.863]
        >>> wilson_interval(0, 0)
        (nan, nan)
    """
    if trials <= 0:
        return math.nan, math.nan
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def poisson_rate_interval(count: int, exposure: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of a rate ``count / exposure``, e.g. detections per mm² of tissue (NaNs for no
    exposure).

    Examples:
        >>> [round(v, 1) for v in poisson_rate_interval(6, 0.6)]
        [3.7, 21.8]
        >>> [round(v, 1) for v in poisson_rate_interval(0, 0.31)]
        [0.0, 11.9]
    """
    if exposure <= 0:
        return math.nan, math.nan
    from scipy.stats import chi2

    alpha = 1 - confidence
    low = float(chi2.ppf(alpha / 2, 2 * count)) / 2 if count > 0 else 0.0
    high = float(chi2.ppf(1 - alpha / 2, 2 * count + 2)) / 2
    return low / exposure, high / exposure
