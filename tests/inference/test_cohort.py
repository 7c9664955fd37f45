"""Cohort runs: resume, failures, settings changes, the cohort table and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mitoscope.inference.analyze import AnalysisConfig
from mitoscope.inference.cohort import Pipeline, run_cohort, unique_names
from mitoscope.io.slide_base import ArraySlide

ROOT = Path(__file__).resolve().parents[2]


def npy_opener(path: str, mpp: float | None) -> ArraySlide:
    return ArraySlide(np.load(path), mpp=mpp or 0.5, path=path)


def write_slides(tmp_path: Path, n: int) -> list[Path]:
    """``n`` small slides; slide k holds k + 1 dark dots on a row (the stand-in detector finds them)."""
    paths = []
    for k in range(n):
        img = np.full((200, 300, 3), 240, np.uint8)
        for j in range(k + 1):
            img[95:105, 20 + 40 * j : 30 + 40 * j] = 10
        p = tmp_path / f"slide_{k}.npy"
        np.save(p, img)
        paths.append(p)
    return paths


def dark_dot_detect(slide) -> pd.DataFrame:
    img = slide.read_rect(0, 0, *slide.dimensions)
    cols = np.where(img[100, :, 0] < 50)[0]
    starts = cols[np.r_[True, np.diff(cols) > 1]]
    return pd.DataFrame({"x": starts + 5.0, "y": 100.0, "score": 0.9})


class Counter:
    def __init__(self, fail_on: str | None = None) -> None:
        self.builds = 0
        self.slides: list[str] = []
        self.fail_on = fail_on

    def make(self) -> Pipeline:
        self.builds += 1

        def detect(slide):
            self.slides.append(Path(slide.path).stem)
            if self.fail_on and self.fail_on in slide.path:
                raise RuntimeError("model exploded")
            return dark_dot_detect(slide)

        # Every second figure is atypical.
        return Pipeline(
            detect,
            lambda s, p: np.arange(len(p)) % 2 * 0.8 + 0.1,
            None,
            0.5,
            {"detection_threshold": 0.4},
        )


CFG = AnalysisConfig(thumbnail_size=64, max_crops=8, crop_size=16)


def run(paths, out, counter, **kw):
    return run_cohort(
        paths,
        out,
        make_pipeline=counter.make,
        settings={"detector": "d.pt", "classifier": "c.pt"},
        config=kw.pop("config", CFG),
        formats=(),
        open_slide_fn=npy_opener,
        **kw,
    )


def test_cohort_table_and_json(tmp_path) -> None:
    paths = write_slides(tmp_path, 3)
    counter = Counter()
    out = run(paths, tmp_path / "out", counter)
    assert out.ok and out.done == ["slide_0", "slide_1", "slide_2"] and counter.builds == 1
    table = pd.read_csv(out.cohort_csv)
    assert table["mitotic_count"].tolist() == [1, 2, 3]
    assert table["atypical_count"].tolist() == [0, 1, 1]
    assert table["status"].tolist() == ["ok"] * 3
    assert table["detection_threshold"].tolist() == [0.4] * 3
    meta = json.loads((tmp_path / "out" / "cohort.json").read_text())
    assert meta["settings"]["detector"] == "d.pt"
    assert meta["totals"]["mitotic_count"] == 6 and meta["failed"] == {}
    assert "mitoscope" in meta["versions"]


def test_resume_skips_finished_slides(tmp_path) -> None:
    paths = write_slides(tmp_path, 3)
    run(paths[:2], tmp_path / "out", Counter())
    counter = Counter()
    out = run(paths, tmp_path / "out", counter)
    assert out.skipped == ["slide_0", "slide_1"] and out.done == ["slide_2"]
    assert counter.slides == ["slide_2"]
    # All done: the models are not even loaded.
    counter = Counter()
    out = run(paths, tmp_path / "out", counter)
    assert counter.builds == 0 and len(out.skipped) == 3
    assert pd.read_csv(out.cohort_csv)["mitotic_count"].tolist() == [1, 2, 3]
    # Other settings: the slides are redone.
    counter = Counter()
    out = run(paths, tmp_path / "out", counter, config=AnalysisConfig(thumbnail_size=0, hpf_area_mm2=1.0))
    assert out.done == ["slide_0", "slide_1", "slide_2"]
    # resume=False redoes everything.
    counter = Counter()
    out = run(paths, tmp_path / "out", counter, resume=False)
    assert len(out.done) == 3


def test_missing_and_unreadable_slides_do_not_stop_the_others(tmp_path) -> None:
    paths = write_slides(tmp_path, 2)
    bad = tmp_path / "garbage.npy"
    bad.write_bytes(b"not a numpy file")
    listed = [paths[0], tmp_path / "missing.npy", bad, paths[1]]
    out = run(listed, tmp_path / "out", Counter())
    assert not out.ok
    assert out.done == ["slide_0", "slide_1"]
    assert set(out.failed) == {"missing", "garbage"}
    assert "not found" in out.failed["missing"]
    table = pd.read_csv(out.cohort_csv, keep_default_na=False)
    assert table["status"].tolist() == ["ok", "failed", "failed", "ok"]
    assert "not found" in table.loc[1, "error"]


def test_failure_mid_slide_leaves_no_partial_output(tmp_path) -> None:
    paths = write_slides(tmp_path, 3)
    out = run(paths, tmp_path / "out", Counter(fail_on="slide_1"))
    assert set(out.failed) == {"slide_1"} and "model exploded" in out.failed["slide_1"]
    assert sorted(p.name for p in (tmp_path / "out" / "slides").iterdir()) == ["slide_0", "slide_2"]
    # The next run only redoes the failed slide.
    counter = Counter()
    out = run(paths, tmp_path / "out", counter)
    assert out.ok and counter.slides == ["slide_1"]


def test_unique_names() -> None:
    assert unique_names(["a/s.tif", "b/s.tif", "c/s.tif"]) == ["s", "s-2", "s-3"]


SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np, pandas as pd
    sys.path.insert(0, {test_dir!r})
    from test_cohort import Counter, run
    from mitoscope.engine.distributed import init_distributed, get_info, cleanup
    init_distributed(device="cpu")
    paths = sorted(Path({data!r}).glob("slide_*.npy")) + [Path({data!r}) / "missing.npy"]
    counter = Counter()
    out = run(paths, {out!r}, counter)
    rank = get_info().rank
    Path({out!r}, f"rank{{rank}}.txt").write_text(",".join(counter.slides))
    cleanup()
    sys.exit(0 if out.ok else 3)
    """
)


@pytest.mark.slow
def test_torchrun_two_processes_shard_and_merge(tmp_path) -> None:
    paths = write_slides(tmp_path, 4)
    out_dir = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(
        SCRIPT.format(test_dir=str(Path(__file__).parent), data=str(tmp_path), out=str(out_dir))
    )
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    # The missing slide makes every rank exit non-zero, after the others were analysed.
    assert proc.returncode != 0, proc.stderr[-3000:]
    rank0 = (out_dir / "rank0.txt").read_text().split(",")
    rank1 = (out_dir / "rank1.txt").read_text().split(",")
    assert rank0 == ["slide_0", "slide_2"] and rank1 == ["slide_1", "slide_3"]
    table = pd.read_csv(out_dir / "cohort.csv")
    assert table["slide"].tolist() == [p.stem for p in paths] + ["missing"]
    assert table["mitotic_count"].tolist()[:4] == [1, 2, 3, 4]
    assert table["status"].tolist()[-1] == "failed"
