"""Synthetic multi-domain H&E: regions with mitoses and imposters, patch sets, a gallery.

Everything is rendered at 0.25 µm/px in optical-density space (Beer–Lambert), with several built-in
scanner / lab / tumour styles ("domains"), deterministic for a seed.
"""

from __future__ import annotations

from mitoscope.data.synthetic.domains import DomainStyle, get_domain, list_domains, select_domains
from mitoscope.data.synthetic.gallery import make_gallery
from mitoscope.data.synthetic.patches import make_patch_set
from mitoscope.data.synthetic.region import MPP, SyntheticRegion, render_region
from mitoscope.data.synthetic.regions import make_region_set

__all__ = [
    "MPP",
    "DomainStyle",
    "SyntheticRegion",
    "get_domain",
    "list_domains",
    "make_gallery",
    "make_patch_set",
    "make_region_set",
    "render_region",
    "select_domains",
]
