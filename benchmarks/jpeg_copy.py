"""JPEG copies of the AMi-Br and AtNorM-MD patch sets, small enough to carry to a remote GPU machine.

The device machine that some sessions are lent takes at most 64 MiB of files per call, and the PNG sets are
85 + 74 MiB. This writes every patch as a JPEG (quality 93, Pillow's default 4:2:0 chroma subsampling; about a
quarter of the PNG's size) with the same folder layout and the label tables rewritten to the ``.jpg`` names,
so ``mitoscope`` reads the copies exactly as it reads the originals. Results measured on the copies are
labelled as such in ``benchmarks/README.md``: JPEG at quality 93 is close to, not identical with, the PNG pixels.

Run:  ``.venv/bin/python benchmarks/jpeg_copy.py --out .devbundle/data``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def to_jpeg(src: Path, dst: Path, quality: int) -> None:
    """``src`` re-encoded as an RGB JPEG at ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").save(dst, "JPEG", quality=quality)


def copy_table_set(table: Path, column: str, images_root: Path, out_root: Path, quality: int) -> int:
    """Re-encode every image the ``column`` of ``table`` names; write the table with ``.jpg`` names."""
    frame = pd.read_csv(table)
    renamed = []
    for name in frame[column].astype(str):
        jpg = str(Path(name).with_suffix(".jpg"))
        to_jpeg(images_root / name, out_root / jpg, quality)
        renamed.append(jpg)
    frame[column] = renamed
    out_root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_root / table.name, index=False)
    return len(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quality", type=int, default=93)
    args = parser.parse_args(argv)
    n_amibr = copy_table_set(
        args.data / "amibr" / "amibr_train.csv", "file", args.data / "amibr", args.out / "amibr", args.quality
    )
    atnorm = args.data / "atnorm-md"
    n_atnorm = 0
    for folder in ("Atypical", "Normal"):
        for png in sorted((atnorm / folder).glob("*.png")):
            to_jpeg(png, args.out / "atnorm-md" / folder / png.with_suffix(".jpg").name, args.quality)
            n_atnorm += 1
    votes = pd.read_csv(atnorm / "expert_votes.csv")
    votes["Filename"] = [str(Path(n).with_suffix(".jpg")) for n in votes["Filename"].astype(str)]
    votes.to_csv(args.out / "atnorm-md" / "expert_votes.csv", index=False)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{n_amibr} AMi-Br + {n_atnorm} AtNorM-MD patches as JPEG q{args.quality}: {size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
