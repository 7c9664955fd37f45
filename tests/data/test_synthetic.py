"""Synthetic H&E generator: stains, domains, figures, experts, regions."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.data.synthetic import get_domain, list_domains, render_region, select_domains
from mitoscope.data.synthetic.experts import FigureSpec, sample_imposter, sample_mitosis
from mitoscope.data.synthetic.figures import ATYPICAL_KINDS, IMPOSTER_KINDS, NORMAL_KINDS, figure_sprite
from mitoscope.data.synthetic.patches import render_patch
from mitoscope.data.synthetic.region import BORDER, MIN_DISTANCE, POINT_COLUMNS
from mitoscope.data.synthetic.stain import StainMatrix, od_to_rgb
from mitoscope.utils.errors import InputError


def test_at_least_six_distinct_domains():
    names = list_domains()
    assert len(names) >= 6
    assert len(set(names)) == len(names)
    tumors = {get_domain(n).tumor for n in names}
    assert len(tumors) >= 5


@pytest.mark.parametrize("bad", [0, -1, len(list_domains()) + 1])
def test_select_domains_rejects_bad_counts(bad):
    with pytest.raises(InputError, match="domains"):
        select_domains(bad)


def test_select_domains_first_k_and_names():
    assert [s.name for s in select_domains(3)] == list_domains()[:3]
    assert select_domains(["lung_gt450"])[0].name == "lung_gt450"
    with pytest.raises(InputError, match="unknown domain"):
        get_domain("nope")


def test_beer_lambert_colours():
    z = np.zeros((1, 1), np.float32)
    stains = StainMatrix(white=(255.0, 255.0, 255.0))
    white = od_to_rgb(z, z, stains)[0, 0]
    np.testing.assert_allclose(white, 255.0)
    pink = od_to_rgb(z, z + 0.6, stains)[0, 0]
    blue = od_to_rgb(z + 0.8, z, stains)[0, 0]
    assert pink[0] > pink[1] and pink[2] > pink[1]  # eosin: red + blue, green absorbed
    assert blue[2] > blue[0] and blue[2] > blue[1]  # hematoxylin: blue-purple
    darker = od_to_rgb(z + 1.6, z, stains)[0, 0]
    assert np.all(darker < blue)


def test_region_is_deterministic_and_seed_dependent():
    a = render_region((200, 180), domain=1, seed=7, n_mitoses=2, n_imposters=1)
    b = render_region((200, 180), domain=1, seed=7, n_mitoses=2, n_imposters=1)
    c = render_region((200, 180), domain=1, seed=8, n_mitoses=2, n_imposters=1)
    assert a.image.shape == (180, 200, 3) and a.image.dtype == np.uint8
    assert a.image.tobytes() == b.image.tobytes()
    assert a.points.equals(b.points)
    assert a.image.tobytes() != c.image.tobytes()


def test_region_points_are_consistent():
    reg = render_region(
        (640, 512), domain="breast_xr", seed=3, n_mitoses=5, n_imposters=4, atypical_fraction=0.5
    )
    pts = reg.points
    assert list(pts.columns) == list(POINT_COLUMNS)
    assert reg.mpp == 0.25 and reg.tumor == "human breast cancer" and reg.domain == "breast_xr"
    assert (pts.label == "mitotic figure").sum() == 5
    assert (pts.label == "hard negative").sum() == 4
    xy = pts[["x", "y"]].to_numpy(float)
    assert np.all(xy[:, 0] >= BORDER) and np.all(xy[:, 0] <= 640 - BORDER)
    assert np.all(xy[:, 1] >= BORDER) and np.all(xy[:, 1] <= 512 - BORDER)
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    assert d.min() >= MIN_DISTANCE
    mit = pts[pts.label == "mitotic figure"]
    neg = pts[pts.label == "hard negative"]
    assert set(mit.kind) <= set(NORMAL_KINDS) | set(ATYPICAL_KINDS)
    assert set(neg.kind) <= set(IMPOSTER_KINDS)
    assert not neg.atypical.any()
    for votes, atyp in zip(mit.experts, mit.atypical, strict=True):
        assert len(votes) == 3 and (sum(votes) >= 2) == atyp
    assert all(len(v) == 3 and set(v) <= {1, 2} for v in pts.votes)


def test_region_default_counts_vary_and_allow_none():
    counts = [len(render_region((256, 256), domain=0, seed=s).points) for s in range(8)]
    assert min(counts) == 0 or len(set(counts)) > 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (10, 10)},
        {"size": (0, 300)},
        {"n_mitoses": -1},
        {"n_imposters": -2},
        {"atypical_fraction": 1.5},
        {"domain": 99},
        {"domain": "nope"},
    ],
)
def test_region_bad_arguments(kwargs):
    args = {"size": (256, 256), "domain": 0, "seed": 0, **kwargs}
    size = args.pop("size")
    with pytest.raises(InputError):
        render_region(size, **args)


def test_all_kinds_render():
    rng = np.random.default_rng(0)
    style = get_domain(0)
    for kind in (*NORMAL_KINDS, *ATYPICAL_KINDS, *IMPOSTER_KINDS, "nucleus"):
        s = figure_sprite(rng, kind, style, severity=0.6)
        assert s.h.shape == s.e.shape == s.alpha.shape
        assert s.h.max() > 0.3 and s.alpha.min() >= 0.0 and s.alpha.max() <= 1.0
    with pytest.raises(ValueError, match="unknown"):
        figure_sprite(rng, "banana", style)


def _darkest(img: np.ndarray, n: int = 150) -> float:
    c = img.shape[0] // 2
    centre = img[c - 24 : c + 24, c - 24 : c + 24].astype(float).mean(-1).ravel()
    return float(np.sort(centre)[:n].mean())


def test_mitoses_darker_than_nuclei_and_classes_same_colour():
    rng = np.random.default_rng(1)
    style = get_domain(0)
    nucleus = FigureSpec("nucleus", False, 0.0, 0.0, (), False, ())
    normal = [_darkest(render_patch(sample_mitosis(rng, 0.0), style, rng)) for _ in range(8)]
    atyp = [_darkest(render_patch(sample_mitosis(rng, 1.0), style, rng)) for _ in range(8)]
    nuclei = [_darkest(render_patch(nucleus, style, rng)) for _ in range(8)]
    assert np.mean(normal) < np.mean(nuclei) - 30
    assert np.mean(atyp) < np.mean(nuclei) - 30
    # atypical and normal figures differ in structure, not in darkness
    assert abs(np.mean(normal) - np.mean(atyp)) < 12


def _stain_features(img: np.ndarray) -> np.ndarray:
    """Mean OD chromaticity of light (cytoplasm/stroma) and dark (nuclear) pixels."""
    od = -np.log(np.clip(img.reshape(-1, 3).astype(float), 1, 255) / 255)
    s = od.sum(1)
    out = []
    for lo, hi in ((0.25, 0.8), (0.9, 3.0)):
        m = (s > lo) & (s < hi)
        out.append((od[m] / s[m, None]).mean(0))
    return np.concatenate(out)


def test_domains_differ_measurably_in_colour():
    names = list_domains()[:6]
    feats = {
        (d, s): _stain_features(render_region((192, 192), domain=d, seed=s, n_mitoses=0, n_imposters=0).image)
        for d in names
        for s in range(3)
    }
    centroids = {d: (feats[d, 0] + feats[d, 1]) / 2 for d in names}
    correct = 0
    for d in names:
        pred = min(names, key=lambda e: np.linalg.norm(feats[d, 2] - centroids[e]))
        correct += pred == d
    assert correct >= 5, "held-out regions should be recognisable by their stain colour"
    # and the shift is large: mean RGB spans a wide range across domains
    means = np.array(
        [
            render_region((192, 192), domain=d, seed=0, n_mitoses=0, n_imposters=0).image.mean((0, 1))
            for d in names
        ]
    )
    assert np.ptp(means, axis=0).max() > 25


def test_experts_disagree_more_on_borderline_figures():
    rng = np.random.default_rng(0)
    specs = [sample_mitosis(rng, 0.3) for _ in range(3000)]
    lat = np.array([s.latent for s in specs])
    dis = np.array([len(set(s.votes)) > 1 for s in specs])
    assert dis[np.abs(lat) < 0.5].mean() > 2 * dis[np.abs(lat) > 1.5].mean()
    assert all(s.atypical == (sum(s.votes) >= 2) for s in specs)
    share = np.mean([s.atypical for s in specs])
    assert 0.2 < share < 0.4
    assert not sample_imposter(rng).mitotic
    with pytest.raises(ValueError):
        sample_mitosis(rng, 0.5, kind="apoptotic")
