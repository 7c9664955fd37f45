"""The HTML report rendered in a real headless Chromium: scripts ran, elements exist, the screenshot is not blank.

``make test`` installs Debian's ``chromium``; set ``MITOSCOPE_SKIP_BROWSER=1`` to skip on machines without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mitoscope.report.html import write_report

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    if os.environ.get("MITOSCOPE_SKIP_BROWSER") == "1":
        pytest.skip("no chromium and MITOSCOPE_SKIP_BROWSER=1")
    pytest.fail(
        "headless Chromium is needed for the report test: `make test` installs it (apt-get install chromium); "
        "set MITOSCOPE_SKIP_BROWSER=1 to skip"
    )


def run_browser(args: list[str], tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{name}"
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def dump_dom(page: Path, tmp_path: Path, name: str) -> str:
    proc = run_browser(["--virtual-time-budget=3000", "--dump-dom", page.as_uri()], tmp_path, name)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def screenshot(page: Path, tmp_path: Path, name: str) -> np.ndarray:
    png = tmp_path / f"{name}.png"
    proc = run_browser([f"--screenshot={png}", "--window-size=1280,2000", page.as_uri()], tmp_path, name)
    assert proc.returncode == 0 and png.is_file(), proc.stderr[-2000:]
    with Image.open(png) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


@pytest.mark.slow
def test_reports_render_in_headless_chromium(analysis_dir, tmp_path) -> None:
    index = write_report(analysis_dir)
    slide_page = index.parent / "case_0.html"

    dom = dump_dom(slide_page, tmp_path, "slide")
    # The inline script ran: it marked the body and wrote the summary from the embedded data.
    assert re.search(r'<body[^>]*data-rendered="1"', dom), dom[:500]
    summary = re.search(r'<div id="summary">([^<]*)</div>', dom)
    assert summary and summary.group(1).startswith("8 mitotic figures (3 atypical, 37.5%)"), summary
    assert "8 of 8 crops shown" in dom
    assert len(re.findall(r'<figure class="crop (?:normal|atypical)', dom)) == 8
    for id_ in ("counts", "overview", "histogram", "score-histogram", "gallery", "tissue-legend"):
        assert f'id="{id_}"' in dom, id_

    dom = dump_dom(index, tmp_path, "cohort")
    assert re.search(r'<body[^>]*data-rendered="1"', dom)
    assert "2 of 3 slides analysed; 16 mitotic figures, 6 atypical (37.5%); 1 failed" in dom
    assert len(re.findall(r'class="slide-row', dom)) == 3

    for page, name in ((slide_page, "slide"), (index, "cohort")):
        shot = screenshot(page, tmp_path, name)
        assert shot.shape == (2000, 1280, 3)
        # Not blank: many distinct colours, including the pink of the slide overview on the slide page.
        assert shot.std() > 10
        assert len(np.unique(shot.reshape(-1, 3)[::97], axis=0)) > 50
        if name == "slide":  # the analysed tissue is outlined on the overview (and its legend swatch shows)
            blue = np.abs(shot.astype(int) - (10, 92, 255)).max(axis=2) < 40
            assert blue.sum() > 500, blue.sum()
    keep = os.environ.get("MITOSCOPE_KEEP_SCREENSHOTS")
    if keep:
        for name in ("slide", "cohort"):
            shutil.copy(tmp_path / f"{name}.png", Path(keep) / f"report-{name}.png")
