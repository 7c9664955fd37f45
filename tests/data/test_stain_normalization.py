from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from mitoscope.data.stain_normalization import (
    StainNormalizer,
    fit_on_catalog,
    macenko_stain_matrix,
    optical_density,
)
from mitoscope.io.catalog import make_catalog
from mitoscope.utils.errors import InputError

H_RUIFROK = np.array([0.65, 0.70, 0.29])
E_RUIFROK = np.array([0.07, 0.99, 0.11])
H_OTHER = np.array([0.45, 0.80, 0.40])
E_OTHER = np.array([0.20, 0.90, 0.38])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _he_image(h: np.ndarray, e: np.ndarray, seed: int, size: int = 48, scale: float = 1.0) -> np.ndarray:
    """A Beer-Lambert H&E patch: eosin everywhere, haematoxylin blobs, a little white background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    conc_h = np.zeros((size, size))
    for cy, cx in rng.uniform(6, size - 6, (5, 2)):
        conc_h += 1.2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    conc_e = rng.uniform(0.6, 1.2, (size, size))
    conc_e[:, : size // 8] = 0.0  # background strip
    od = scale * (conc_h[..., None] * _unit(h) + conc_e[..., None] * _unit(e))
    return np.clip(np.round(255.0 * np.exp(-od)), 0, 255).astype(np.uint8)


def test_macenko_recovers_the_stain_vectors() -> None:
    img = _he_image(H_RUIFROK, E_RUIFROK, seed=0)
    od = optical_density(img).reshape(-1, 3)
    stains = macenko_stain_matrix(od[np.all(od > 0.15, axis=1)])
    assert stains is not None
    assert np.dot(stains[0], _unit(H_RUIFROK)) > 0.99
    assert np.dot(stains[1], _unit(E_RUIFROK)) > 0.99


def test_macenko_maps_another_stain_onto_the_reference() -> None:
    reference = [_he_image(H_RUIFROK, E_RUIFROK, seed=s) for s in range(3)]
    norm = StainNormalizer("macenko").fit(reference)
    # the same tissue stained with other dyes, and more strongly
    other = _he_image(H_OTHER, E_OTHER, seed=0, scale=1.4)
    before = np.abs(other.astype(int) - reference[0].astype(int)).mean()
    after = np.abs(norm(other).astype(int) - reference[0].astype(int)).mean()
    assert before > 25
    assert after < 0.25 * before


def test_reinhard_matches_the_reference_lab_statistics() -> None:
    reference = [_he_image(H_RUIFROK, E_RUIFROK, seed=s) for s in range(3)]
    norm = StainNormalizer("reinhard").fit(reference)
    out = rgb2lab(norm(_he_image(H_OTHER, E_OTHER, seed=5, scale=0.7))).reshape(-1, 3)
    assert norm.reference is not None
    np.testing.assert_allclose(out.mean(axis=0), norm.reference["mean"], atol=1.5)
    np.testing.assert_allclose(out.std(axis=0), norm.reference["std"], atol=1.5)


def test_blank_patches_and_black_padding_are_kept() -> None:
    norm = StainNormalizer("macenko").fit([_he_image(H_RUIFROK, E_RUIFROK, seed=0)])
    white = np.full((32, 32, 3), 250, np.uint8)
    np.testing.assert_array_equal(norm(white), white)
    padded = _he_image(H_OTHER, E_OTHER, seed=1)
    padded[:6] = 0
    out = norm(padded)
    np.testing.assert_array_equal(out[:6], 0)
    assert np.abs(out[6:].astype(int) - padded[6:].astype(int)).mean() > 5


def test_save_load_round_trip_and_bad_references(tmp_path: Path) -> None:
    norm = StainNormalizer("macenko").fit([_he_image(H_RUIFROK, E_RUIFROK, seed=0)])
    path = tmp_path / "ref.json"
    norm.save(path)
    again = StainNormalizer.load(path)
    img = _he_image(H_OTHER, E_OTHER, seed=2)
    np.testing.assert_array_equal(again(img), norm(img))

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": "macenko", "reference": {"stain_matrix": [[1, 2, 3]]}}))
    with pytest.raises(ValueError, match=r"bad\.json: not a stain reference"):
        StainNormalizer.load(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json: cannot read a stain reference"):
        StainNormalizer.load(bad)
    with pytest.raises(ValueError, match="must be one of macenko, reinhard"):
        StainNormalizer("vahadane")
    with pytest.raises(RuntimeError, match="not fitted"):
        StainNormalizer("reinhard").transform(img)
    with pytest.raises(ValueError, match="too little stained tissue"):
        StainNormalizer("macenko").fit([np.full((32, 32, 3), 250, np.uint8)])


def test_fit_on_catalog_reads_the_records_and_names_bad_ones(tmp_path: Path) -> None:
    paths = []
    for s in range(4):
        p = tmp_path / f"{s}.png"
        Image.fromarray(_he_image(H_RUIFROK, E_RUIFROK, seed=s)).save(p)
        paths.append(p)
    norm = fit_on_catalog(make_catalog({"image": str(p)} for p in paths), "macenko", max_images=3)
    assert norm.reference is not None
    assert np.dot(norm.reference["stain_matrix"][0], _unit(H_RUIFROK)) > 0.99

    (tmp_path / "broken.png").write_bytes(b"not a png")
    catalog = make_catalog({"image": str(p)} for p in [*paths, tmp_path / "broken.png"])
    with pytest.raises(InputError, match=r"broken\.png"):
        fit_on_catalog(catalog, "reinhard", source="refs.csv")
