"""``mitoscope classify``: P(atypical) for patches in a folder, a labelled-source CSV or a Track 2 TIFF stack."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


@dataclasses.dataclass
class ClassifySettings:
    """What ``--set`` reaches on ``classify`` (the options measurements did not support: docs/training.md,
    "Experimental options")."""

    rule: str | None = None
    adapt_bn: bool = False
    stain_tta: bool = False
    stain_normalize: str | None = None
    stain_reference: Path | None = None
    save_stain_reference: Path | None = None


SET_HELP = (
    "rule=majority|mean (override an ensemble's rule); experimental, not recommended (see the documentation): "
    "adapt_bn, stain_tta, stain_normalize=macenko|reinhard, stain_reference=PATH, save_stain_reference=PATH."
)


def classify(
    inputs: list[Path] = typer.Argument(
        ..., help="Folders of images (recursive), source CSVs, or MIDOG Track 2 TIFF stacks."
    ),
    out: Path = opt.out_option("Output CSV: file, page (stacks only), p_atypical, label."),
    model: str = opt.model_option(
        "mitoscope-classifier",
        "A bundled model's name (`mitoscope models`), a checkpoint (.pt), an ensemble.json / ensemble directory, "
        "or a training RUN directory.",
    ),
    tta: bool = opt.tta_option(),
    threshold: float | None = opt.threshold_option(
        "Decide at this P(atypical) (default: the threshold chosen on validation data in training; with an "
        "ensemble's majority rule every member votes at it).",
        probability=True,
    ),
    device: str = opt.device_option(),
    precision: str = opt.precision_option(),
    batch_size: int = opt.batch_size_option(64, "Patches"),
    workers: int | None = opt.workers_option(
        None, " (processes; 0: a reader thread). Default: 0 on the CPU, half the cores (≤ 8) on a GPU"
    ),
    json_out: Path | None = opt.json_option("Track 2 JSON path for a TIFF stack (default: OUT with .json)."),
    settings: list[str] = opt.set_option(SET_HELP),
) -> None:
    """Classify mitotic-figure patches as normal or atypical (P(atypical) and label per patch).

    Unreadable images in a folder are skipped and listed at the end (exit code 1); the others are written.
    """
    from rich.console import Console

    from mitoscope.inference.patches import classify_patches

    err = Console(stderr=True)
    try:
        extra = opt.parse_settings(settings, ClassifySettings())
        res = classify_patches(
            inputs, out, model=model, device=device, precision=precision, tta=tta, threshold=threshold,
            batch_size=batch_size, num_workers=workers, track2_json=json_out,
            log=lambda msg: err.print(msg, highlight=False), **dataclasses.asdict(extra),
        )  # fmt: skip
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError) as exc:
        fail(exc)
    clf = res.classifier
    flags = ((", TTA", tta), (", stain TTA", extra.stain_tta), (", AdaBN", extra.adapt_bn))
    views = "".join(text for text, on in flags if on)
    if extra.stain_normalize is not None:
        views += f", {extra.stain_normalize} stain"
    msg = (
        f"{len(res.table)} patches → {out} ({res.n_atypical} atypical; {len(clf.ensemble)} model(s), "
        f"{clf.ensemble.rule}, threshold {clf.threshold:.3f}{views}, {clf.precision})"
    )
    if res.track2_json is not None:
        msg += f"; Track 2 JSON → {res.track2_json}"
    err.print(msg, highlight=False, soft_wrap=True)
    if res.unreadable:
        err.print(f"{len(res.unreadable)} unreadable image(s) skipped:", highlight=False)
        for path, reason in res.unreadable:
            err.print(f"  {path}: {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
