"""``mitoscope classify``: P(atypical) for patches in a folder, a labelled-source CSV or a Track 2 TIFF stack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mitoscope.cli.errors import fail

if TYPE_CHECKING:
    from mitoscope.data.stain_normalization import StainNormalizer

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _unreadable(path: Path) -> str | None:
    """Why an image file cannot be decoded (None when it can)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # PIL raises many types for broken files
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'cannot decode'}"
    return None


def _folder_catalog(folder: Path, bad: list[tuple[Path, str]]) -> Any:
    """The readable images under ``folder``; each unreadable one is appended to ``bad`` with its reason."""
    from mitoscope.data.catalog import make_catalog

    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    good = []
    for p in files:
        reason = _unreadable(p)
        if reason is None:
            good.append(p)
        else:
            bad.append((p, reason))
    return make_catalog({"image": str(p), "source": "folder"} for p in good)


def _input_catalog(path: Path, bad: list[tuple[Path, str]] | None = None) -> tuple[Any, bool]:
    """``(catalog, is_stack)`` for a folder, a TIFF stack, a single image or a source CSV/JSON."""
    from mitoscope.data.catalog import make_catalog

    if path.is_dir():
        return _folder_catalog(path, bad if bad is not None else []), False
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input not found")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):  # a MIDOG 2025 Track 2 stack (one crop per page; one page is a stack too)
        from mitoscope.io.midog_outputs import read_track2_stack

        return read_track2_stack(path), True
    if suffix in IMAGE_SUFFIXES:
        return make_catalog([{"image": str(path), "source": "file"}]), False
    from mitoscope.data.sources import load_catalog

    return load_catalog(path), False


def _stain_normalizer(
    method: str | None, reference: Path | None, save: Path | None
) -> StainNormalizer | None:
    """The fitted normaliser ``--stain-normalize``/``--stain-reference`` ask for (``None`` without them)."""
    from mitoscope.data.stain_normalization import METHODS, StainNormalizer, fit_on_catalog

    if method is None:
        if reference is not None or save is not None:
            raise ValueError("--stain-reference and --save-stain-reference need --stain-normalize")
        return None
    if method not in METHODS:
        raise ValueError(f"--stain-normalize must be one of {', '.join(METHODS)}, got {method!r}")
    if reference is None:
        raise ValueError(
            "--stain-normalize needs --stain-reference (e.g. the training data, or a saved JSON)"
        )
    if reference.suffix.lower() == ".json":
        normalizer = StainNormalizer.load(reference)
        if normalizer.method != method:
            raise ValueError(f"{reference}: a {normalizer.method} reference, but --stain-normalize {method}")
    else:
        catalog, _ = _input_catalog(reference)
        normalizer = fit_on_catalog(catalog, method, source=reference)
    if save is not None:
        normalizer.save(save)
    return normalizer


def classify(
    inputs: list[Path] = typer.Argument(
        ..., help="Folders of images (recursive), source CSVs, or MIDOG Track 2 TIFF stacks."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output CSV: file, page (stacks only), p_atypical, label."
    ),
    model: str = typer.Option(
        "mitoscope-classifier",
        "--model",
        "-m",
        help="A bundled model's name (`mitoscope models`), a checkpoint (.pt), an ensemble.json / ensemble "
        "directory, or a training RUN directory.",
    ),
    tta: bool = typer.Option(False, "--tta", help="Average the 8 dihedral views (rotations x flips)."),
    stain_tta: bool = typer.Option(
        False,
        "--stain-tta",
        help="Also average over re-stained copies (haematoxylin and eosin each 20 % lighter and darker): "
        "5x the views, with --tta 40.",
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Patches per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 on a CPU with native bf16, fp16 on CUDA, else fp32), fp32, bf16 or fp16.",
    ),
    num_workers: int | None = typer.Option(
        None,
        "--num-workers",
        min=0,
        help="Reader processes (0: a reader thread). Default: 0 on the CPU, half the cores (≤ 8) on a GPU.",
    ),
    rule: str | None = typer.Option(None, "--rule", help="Override the ensemble rule: majority or mean."),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        min=0.0,
        max=1.0,
        help="Decide at this P(atypical) (default: the threshold chosen on validation data in training; "
        "with --rule majority every member votes at it).",
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Track 2 JSON path for a TIFF stack (default: OUT with .json)."
    ),
    adapt_bn: bool = typer.Option(
        False,
        "--adapt-bn",
        help="First re-estimate the batch-norm statistics on the input patches (AdaBN; labels unused): for a "
        "set from another lab or scanner, at least 32 patches of that one domain (up to 2,048 random ones "
        "are used). Each patch's result then depends on the whole set.",
    ),
    stain_normalize: str | None = typer.Option(
        None,
        "--stain-normalize",
        help="Map every patch onto a reference stain first: macenko or reinhard (needs --stain-reference).",
    ),
    stain_reference: Path | None = typer.Option(
        None,
        "--stain-reference",
        help="The reference stain: a JSON written by --save-stain-reference, or patches to fit it on "
        "(folder, source CSV or image; up to 512 random ones), e.g. the model's training data.",
    ),
    save_stain_reference: Path | None = typer.Option(
        None, "--save-stain-reference", help="Write the fitted reference stain to this JSON for reuse."
    ),
) -> None:
    """Classify mitotic-figure patches as normal or atypical (P(atypical) and label per patch).

    Unreadable images in a folder are skipped and listed at the end (exit code 1); the others are written.
    """
    from rich.console import Console

    err = Console(stderr=True)
    bad: list[tuple[Path, str]] = []
    input = inputs[0]
    try:
        import pandas as pd

        from mitoscope.engine.ensemble import RULES
        from mitoscope.inference.classify import Classifier
        from mitoscope.utils.atomic import write_text_atomic

        if rule is not None and rule not in RULES:
            raise ValueError(f"--rule must be one of {', '.join(RULES)}, got {rule!r}")
        parts = [_input_catalog(path, bad) for path in inputs]
        is_stack = len(parts) == 1 and parts[0][1]
        if json_out is not None and not is_stack:
            raise ValueError("--json needs exactly one input, a Track 2 TIFF stack")
        catalog = pd.concat([c for c, _ in parts], ignore_index=True)
        catalog.attrs = parts[0][0].attrs
        if catalog.empty:
            raise ValueError(f"{', '.join(map(str, inputs))}: no records to classify")
        normalizer = _stain_normalizer(stain_normalize, stain_reference, save_stain_reference)
        clf = Classifier.from_path(
            model,
            device=device,
            tta=tta,
            stain_tta=stain_tta,
            rule=rule,
            precision=precision,
            threshold=threshold,
            fuse_batchnorm=not adapt_bn,
            stain_normalizer=normalizer,
        )
        if adapt_bn:
            n_adapt = clf.adapt_batchnorm(catalog, num_workers=num_workers, source=input)
            err.print(f"batch-norm statistics re-estimated on {n_adapt} patches", highlight=False)
        result = clf.predict_catalog(catalog, batch_size=batch_size, num_workers=num_workers, source=input)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError) as exc:
        fail(exc)

    frame = result.rename(columns={"image": "file"})
    cols = ["file", "page", "p_atypical", "label"] if is_stack else ["file", "p_atypical", "label"]
    if "page" in frame and not is_stack and (frame["page"] >= 0).any():
        cols.insert(1, "page")
    if len(clf.ensemble) > 1:
        cols.append("votes")
    frame = frame[cols]
    write_text_atomic(out, frame.to_csv(index=False, float_format="%.6f"))
    n_atyp = int((frame["label"] == clf.class_names[1]).sum())
    msg = (
        f"{len(frame)} patches → {out} ({n_atyp} atypical; {len(clf.ensemble)} model(s), "
        f"{clf.ensemble.rule}, threshold {clf.threshold:.3f}{', TTA' if tta else ''}{', stain TTA' if stain_tta else ''}"
        f"{', AdaBN' if adapt_bn else ''}{f', {stain_normalize} stain' if normalizer else ''}, {clf.precision})"
    )
    if is_stack:
        track2 = json_out or out.with_suffix(".json")
        from mitoscope.io.midog_outputs import write_track2_json

        write_track2_json(track2, frame["p_atypical"].to_numpy(), labels=frame["label"].tolist())
        msg += f"; Track 2 JSON → {track2}"
    err.print(msg, highlight=False, soft_wrap=True)
    if bad:
        err.print(f"{len(bad)} unreadable image(s) skipped:", highlight=False)
        for path, reason in bad:
            err.print(f"  {path}: {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
