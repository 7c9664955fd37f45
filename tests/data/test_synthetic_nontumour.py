"""Opt-in non-tumour tissue of synthetic regions: off by default, deterministic, each kind what it says."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage as ndi

import mitoscope.data.synthetic.region as region_mod
from mitoscope.data.synthetic import get_domain, list_domains, make_region_set, render_region
from mitoscope.data.synthetic.nontumour import KINDS, plan_nontumour, single_kind_plan
from mitoscope.data.synthetic.region import BORDER, MIN_DISTANCE, render_canvas
from mitoscope.data.synthetic.stain import EOSIN, HEMATOXYLIN, INKS, StainMatrix, unit
from mitoscope.data.synthetic.tissue import make_layout
from mitoscope.utils.errors import InputError

S = 384


def _canvas(kind: str | None, domain: int = 0, seed: int = 0) -> np.ndarray:
    """A tumour canvas with no figures, entirely of one non-tumour ``kind`` (``None``: plain tumour)."""
    rng = np.random.default_rng(seed)
    plan = None if kind is None else single_kind_plan(kind, (S, S), np.random.default_rng(seed + 100))
    return render_canvas((S, S), get_domain(domain), rng, [], extra=plan).astype(np.float64)


@pytest.mark.parametrize("domain", [0, 5])
def test_zero_extra_tissue_renders_exactly_as_before(domain):
    for kwargs in ({"n_mitoses": 2, "n_imposters": 2}, {}):
        old = render_region((320, 256), domain=domain, seed=4, **kwargs)
        new = render_region((320, 256), domain=domain, seed=4, extra_tissue=0.0, **kwargs)
        assert old.image.tobytes() == new.image.tobytes()
        assert old.points.equals(new.points)


def test_zero_extra_tissue_region_set_is_byte_identical(tmp_path):
    def digest(root):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}

    a = make_region_set(tmp_path / "a", n=1, size=(256, 256), seed=2)
    b = make_region_set(tmp_path / "b", n=1, size=(256, 256), seed=2, extra_tissue=0.0)
    assert digest(a) == digest(b)


def test_extra_tissue_changes_image_is_deterministic_and_keeps_figures_in_tumour(monkeypatch):
    masks = []
    original = region_mod.forbidden

    def spy(plan, layout):
        masks.append(original(plan, layout))
        return masks[-1]

    monkeypatch.setattr(region_mod, "forbidden", spy)
    kw = {"domain": 0, "seed": 3, "n_mitoses": 4, "n_imposters": 4}
    a = render_region((512, 512), extra_tissue=0.5, **kw)
    b = render_region((512, 512), extra_tissue=0.5, **kw)
    plain = render_region((512, 512), **kw)
    assert a.image.tobytes() == b.image.tobytes() and a.points.equals(b.points)
    assert a.image.tobytes() != plain.image.tobytes()
    assert np.abs(a.image.astype(int) - plain.image.astype(int)).mean() > 5
    xy = a.points[["x", "y"]].to_numpy(float)
    assert len(xy) >= 1
    assert np.all((xy >= BORDER) & (xy <= 512 - BORDER))
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
    assert d.min() >= MIN_DISTANCE
    free = masks[0]
    assert all(free[int(y) // 2, int(x) // 2] <= 0.2 for x, y in xy)  # not in glass, zones, ink or heavy blur
    assert set(a.points.label) <= {"mitotic figure", "hard negative"}


def test_default_counts_shrink_with_the_tumour_area():
    total = {x: 0 for x in (0.0, 0.8)}
    for seed in range(6):
        for x in total:
            total[x] += len(render_region((512, 512), domain=0, seed=seed, extra_tissue=x).points)
    assert total[0.8] < total[0.0]


def test_plan_covers_the_share_and_is_seeded():
    style = get_domain(0)
    for share in (0.2, 0.6):
        lay = make_layout(np.random.default_rng(0), (512, 512), style)
        plan = plan_nontumour(np.random.default_rng(1), (512, 512), lay, share)
        assert abs(float(plan.cover((256, 256)).mean()) - share) < 0.1
        again = plan_nontumour(np.random.default_rng(1), (512, 512), lay, share)
        assert plan.zones.keys() == again.zones.keys()
        assert all(np.array_equal(plan.zones[k], again.zones[k]) for k in plan.zones)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_extra_tissue_raises(tmp_path, bad):
    with pytest.raises(InputError, match="extra_tissue"):
        render_region((128, 128), domain=0, seed=0, extra_tissue=bad)
    with pytest.raises(InputError, match="extra_tissue"):
        make_region_set(tmp_path / "r", n=1, size=(128, 128), extra_tissue=bad)
    assert not (tmp_path / "r").exists()


def test_single_kind_plan_rejects_unknown_kind():
    assert set(KINDS) == {"fat", "vessel", "necrosis", "collagen", "ink", "blur"}
    with pytest.raises(ValueError, match="unknown"):
        single_kind_plan("bone", (64, 64), np.random.default_rng(0))


def test_fat_is_mostly_white_with_thin_membranes():
    im = _canvas("fat")
    white = (im.min(-1) > 215).mean()
    membrane = ((im[..., 0] - im[..., 1]) > 40).mean()  # eosin: green absorbed
    assert white > 0.85
    assert 0.003 < membrane < 0.1


def test_vessels_hold_red_blood_cells():
    im = _canvas("vessel")
    r, g, b = im[..., 0], im[..., 1], im[..., 2]
    red = (r > 150) & (g < 120) & (r - b > 40)  # red, not the pink (blue-transmitting) of eosin
    base = _canvas(None)
    base_red = (base[..., 0] > 150) & (base[..., 1] < 120) & (base[..., 0] - base[..., 2] > 40)
    assert red.sum() > 500
    assert base_red.sum() < 50
    v = StainMatrix().blood()
    assert v[2] > unit(EOSIN)[2] + 0.3  # blood absorbs blue too, eosin hardly


def test_necrosis_is_nuclear_dust_not_nuclei():
    def dark_blobs(img):
        lab, n = ndi.label(img.mean(-1) < 140)
        sizes = ndi.sum(np.ones(lab.shape), lab, range(1, n + 1))
        return int((sizes < 80).sum()), int((sizes >= 300).sum())

    small, large = dark_blobs(_canvas("necrosis"))
    _, tumour_large = dark_blobs(_canvas(None))
    assert small > 50  # many small fragments (karyorrhexis)
    assert large <= 1 < tumour_large  # no intact nuclei


def test_collagen_is_pink_with_sparse_nuclei():
    im = _canvas("collagen")
    assert (im[..., 0] - im[..., 1]).mean() > 50
    assert (im.mean(-1) < 140).mean() < 0.02 < (_canvas(None).mean(-1) < 140).mean()


def test_ink_is_dark_and_not_an_h_and_e_colour():
    im = _canvas("ink")
    sat = (im.max(-1) - im.min(-1)) / np.maximum(im.max(-1), 1)
    assert im.mean() < 60  # darker than any nucleus
    assert np.median(sat) < 0.55  # black ink: near-neutral
    for name, vector in INKS.items():
        for stain in (HEMATOXYLIN, EOSIN):
            angle = np.degrees(np.arccos(float(unit(vector) @ unit(stain))))
            assert angle > 15, (name, angle)


def test_out_of_focus_area_has_less_gradient_energy():
    def energy(img):
        return float((np.diff(img.mean(-1), axis=1) ** 2).mean())

    assert energy(_canvas("blur")) < energy(_canvas(None)) / 3


def test_extra_tissue_renders_in_every_domain():
    for d in range(len(list_domains())):
        reg = render_region((256, 256), domain=d, seed=1, extra_tissue=0.7)
        assert reg.image.shape == (256, 256, 3) and reg.image.dtype == np.uint8
