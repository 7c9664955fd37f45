"""``mitoscope train detector``: train the multi-task RetinaNet detector from a recipe."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


def train_detector(
    config: Path = opt.recipe_option(..., "detector-cpu, detector-zhang2022"),
    data: list[Path] = typer.Option(
        ...,
        "--data",
        "-d",
        help="Folder of regions + one MIDOG++-format JSON (e.g. `mitoscope synth regions` output), a catalog "
        "file (MIDOG++ JSON, catalog CSV) with slide paths relative to it, or patches centred on figures (AMi-Br "
        "CSV, AtNorM-MD, class folders: arranged into mosaics in OUT/mosaics, 20 % of their slides validate); "
        "repeatable.",
    ),
    out: Path = opt.out_option("Run folder (best.pt, last.pt, history.csv, config.yaml)."),
    overrides: list[str] = opt.overrides_option("train.epochs=5 --set model.kwargs.aux_tumor=false"),
    val: list[Path] = typer.Option(
        [],
        "--val",
        help="Validation folder(s) (default: data.val_dirs, else data.val_fraction of the regions).",
    ),
    cv: str | None = typer.Option(
        None, "--cv", help="`lotd`: leave-one-tumour-out cross-validation (one run per tumour type)."
    ),
    device: str = opt.device_option(),
    resume: bool = opt.resume_option("Continue an interrupted run in OUT."),
) -> None:
    """Train the multi-task RetinaNet mitosis detector; the checkpoint stores the validation-tuned threshold.
    Launch under torchrun for several GPUs/processes."""
    from rich.console import Console

    err = Console(stderr=True)
    try:
        from mitoscope.engine.detector_training import (
            cross_validate_lotd,
            detection_sources,
            load_detector_config,
            region_detector,
        )
        from mitoscope.engine.detector_training import train_detector as run_training
        from mitoscope.engine.distributed import init_distributed
        from mitoscope.inference.detect import detect_slide
        from mitoscope.utils.device import resolve_device

        resolve_device(device)  # an unknown or missing device fails before any data is read
        cfg_overrides = list(overrides)
        if cv is not None:
            cfg_overrides.append(f"cv={cv}")
        cfg = load_detector_config(config, cfg_overrides)
        init_distributed(device="cpu" if device == "cpu" else None)  # before rank 0 alone writes mosaics
        sources, patch_val = detection_sources(data, out, seed=cfg.train.seed)
        detect = region_detector(detect_slide)  # validation detects the way `mitoscope detect` does
        if cfg.cv == "lotd":
            table = cross_validate_lotd(cfg, sources, out, device=device, resume=resume, detect=detect)
            err.print(table.to_string(index=False), highlight=False)
            err.print(f"leave-one-tumour-out results → {out / 'lotd.csv'}", highlight=False)
            return
        run = run_training(
            cfg,
            sources,
            out,
            device=device,
            resume=resume,
            val_data=[*map(str, val), *patch_val] or None,
            detect=detect,
        )
    except (ValueError, FileNotFoundError, KeyError, RuntimeError, OSError) as exc:
        fail(exc)
    finally:
        from mitoscope.engine.distributed import cleanup

        cleanup()
    if int(os.environ.get("RANK", 0)) != 0:  # under torchrun rank 0 reports
        return
    err.print(
        f"best validation F1 {run.best_f1:.3f} at threshold {run.threshold:.3f} "
        f"({run.epochs_run} epochs) → {run.best_path}",
        highlight=False,
        soft_wrap=True,
    )
