"""``mitoscope tune classifier``: Optuna search over a classifier recipe (resumable, shareable storage)."""

from __future__ import annotations

from pathlib import Path

import typer

from mitoscope.cli import options as opt
from mitoscope.cli.errors import fail


def tune_classifier(
    config: Path = opt.recipe_option(..., "classifier-kotte; an optional 'hpo:' section"),
    data: Path = typer.Option(
        ..., "--data", "-d", help="Training source (AMi-Br/MIDOG25 CSV, folders, catalog…)."
    ),
    out: Path = opt.out_option("Output directory (trials, study.sqlite, best_*.yaml)."),
    trials: int = typer.Option(20, "--trials", "-n", min=1, help="Total finished trials wanted (resumes)."),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL shared by machines (default sqlite:///OUT/study.sqlite)."
    ),
    study_name: str = typer.Option("mitoscope-classifier", "--study-name", help="Study name in the storage."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Epochs per trial (default: hpo.epochs or recipe)."
    ),
    device: str = opt.device_option(),
    seed: int = typer.Option(0, "--seed", help="Sampler seed."),
    overrides: list[str] = opt.overrides_option("optim.lr=1e-4"),
) -> None:
    """Search focal α/γ, learning rate and dropout (or the config's hpo.space) for the best validation balanced
    accuracy; write best_params.yaml and a ready-to-use best_config.yaml."""
    from rich.console import Console

    err = Console(stderr=True)
    try:
        from mitoscope.data.sources import load_catalog
        from mitoscope.engine.config import parse_overrides
        from mitoscope.engine.hpo import BEST_CONFIG_FILE, BEST_PARAMS_FILE, read_tuning_config, set_dotted
        from mitoscope.engine.hpo import tune_classifier as run_study
        from mitoscope.utils.device import resolve_device

        resolve_device(device)  # an unknown or missing device fails before any data is read
        recipe, hpo = read_tuning_config(config)
        for key, value in parse_overrides(overrides).items():
            set_dotted(recipe, key, value)
        if epochs is not None:
            hpo["epochs"] = epochs
        catalog = load_catalog(data)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = run_study(
            recipe,
            catalog,
            out,
            n_trials=trials,
            hpo=hpo,
            storage=storage,
            study_name=study_name,
            device=device,
            seed=seed,
        )
    except (ValueError, FileNotFoundError, KeyError, ImportError) as exc:
        fail(exc)

    done = [t for t in study.trials if t.value is not None]
    if not done:
        fail(f"no trial finished; see the trial directories under {out / 'trials'}")
    best = study.best_trial
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
    err.print(
        f"{len(done)} trial(s) finished; best #{best.number}: balanced accuracy {best.value:.4f} with {params}",
        highlight=False,
        soft_wrap=True,
    )
    err.print(f"→ {out / BEST_PARAMS_FILE}, {out / BEST_CONFIG_FILE}", highlight=False, soft_wrap=True)
