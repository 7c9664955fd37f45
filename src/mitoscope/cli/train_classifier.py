"""``mitoscope train classifier``: cross-validated training of an atypical-vs-normal classifier from a recipe."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


def _parse_folds(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"--folds must be comma-separated fold numbers such as 0,1 (got {text!r})") from None


def _setup_logging(verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    rank = int(os.environ.get("RANK", 0))
    level = logging.INFO if rank == 0 else logging.WARNING
    handler = RichHandler(
        console=Console(stderr=True), show_path=False, show_time=True, markup=False, rich_tracebacks=False
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("mitoscope")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose and rank == 0 else level)
    log.propagate = False


def train_classifier(
    config: Path | None = opt.recipe_option(
        None, "classifier-cpu, classifier-percannella, classifier-kotte, ...; defaults when omitted"
    ),
    data: Path = typer.Option(
        ...,
        "--data",
        "-d",
        help="Training data: anything `load_catalog` reads (AMi-Br CSV, catalog CSV, folder, ...).",
    ),
    out: Path = opt.out_option("Run directory (created; reused to resume)."),
    overrides: list[str] = opt.overrides_option("optim.lr=1e-4"),
    device: str = opt.device_option(),
    resume: bool = opt.resume_option("Skip finished folds and resume from last.pt."),
    folds: str | None = typer.Option(None, "--folds", help="Only these folds, e.g. 0,1 (default: all)."),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Progress bars (default: when stderr is a terminal)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More log output."),
) -> None:
    """Train a normal-vs-atypical classifier with cross-validation; writes fold models, OOF predictions,
    cv_summary.json and ensemble.json into OUT. Launch under torchrun for several GPUs/processes."""
    from rich.console import Console

    err = Console(stderr=True)
    main_rank = int(os.environ.get("RANK", 0)) == 0
    _setup_logging(verbose)
    try:
        from mitoscope.data.sources import load_catalog
        from mitoscope.engine.classifier_training import train_classifier as run
        from mitoscope.engine.config import ClassifierConfig, load_config
        from mitoscope.utils.device import resolve_device

        resolve_device(device)  # an unknown or missing device fails before any data is read
        cfg = load_config(config, ClassifierConfig, overrides)
        fold_list = _parse_folds(folds)
        catalog = load_catalog(data)
        if main_rank:
            err.print(
                f"{len(catalog)} records from {data} ({catalog.attrs.get('format', '?')}); "
                f"model {cfg.model.name}, {cfg.cv.scheme} CV, {cfg.train.epochs} epochs → {out}",
                highlight=False,
                soft_wrap=True,
            )
        run_dir = run(
            cfg, catalog, out, device=device, resume=resume, folds=fold_list, progress=progress, source=data
        )
    except (ValueError, FileNotFoundError, KeyError, OSError, RuntimeError) as exc:
        fail(exc)
    finally:
        from mitoscope.engine.distributed import cleanup

        cleanup()
    if main_rank:
        import json

        summary = json.loads((run_dir / "cv_summary.json").read_text(encoding="utf-8"))
        oof = summary.get("oof", {})
        err.print(
            f"done: {len(summary.get('folds_finished', []))} fold(s) in {run_dir}; out-of-fold balanced accuracy "
            f"{oof.get('balanced_accuracy', float('nan')):.4f}, AUROC {oof.get('auroc', float('nan')):.4f} "
            f"(n={oof.get('n', 0)}); ensemble: {run_dir / 'ensemble.json'}",
            highlight=False,
            soft_wrap=True,
        )
