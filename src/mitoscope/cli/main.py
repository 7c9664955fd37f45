"""The ``mitoscope`` command: one entry point, thin commands that call the library.

Each command lives in its own module under ``mitoscope.cli``; this file only wires them together.
Library modules are imported inside the commands so that ``mitoscope --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

from mitoscope import __version__

app = typer.Typer(
    name="mitoscope",
    help="Find mitotic figures in H&E slides and tell normal from atypical ones.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# (group or None, command name, module under mitoscope.cli, attribute)
_COMMANDS: list[tuple[str | None, str, str, str]] = [
    (None, "demo", "demo", "demo"),
    (None, "analyze", "analyze", "analyze"),
    (None, "report", "report", "report"),
    (None, "classify", "classify", "classify"),
    (None, "detect", "detect", "detect"),
    (None, "models", "models", "models"),
    ("train", "classifier", "train_classifier", "train_classifier"),
    ("train", "detector", "train_detector", "train_detector"),
    ("evaluate", "classification", "evaluate_classification", "evaluate_classification"),
    ("evaluate", "detection", "evaluate_detection", "evaluate_detection"),
    ("tune", "classifier", "tune", "tune_classifier"),
    ("data", "extract-patches", "data_convert", "extract_patches_command"),
    ("data", "mosaics", "data_convert", "mosaics_command"),
    ("data", "convert", "data_convert", "convert"),
    ("data", "masks", "masks", "masks"),
]
# (group name, module whose ``app`` is a Typer group)
_GROUPS: list[tuple[str, str]] = [("synth", "synth"), ("data", "data"), ("challenge", "challenge")]

_GROUP_HELP = {
    "train": "Train a classifier or a detector from a recipe.",
    "evaluate": "Score predictions against ground truth.",
    "tune": "Hyper-parameter search (Optuna).",
}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mitoscope {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
) -> None:
    """Find mitotic figures in H&E slides and tell normal from atypical ones."""


def _build() -> None:
    groups: dict[str, typer.Typer] = {}
    for name, module in _GROUPS:
        groups[name] = importlib.import_module(f"mitoscope.cli.{module}").app
    for group, name, module, attr in _COMMANDS:
        if group is not None and group not in groups:
            groups[group] = typer.Typer(help=_GROUP_HELP.get(group), no_args_is_help=True)
        target = app if group is None else groups[group]
        target.command(name)(getattr(importlib.import_module(f"mitoscope.cli.{module}"), attr))
    for name, sub in groups.items():
        app.add_typer(sub, name=name)


_build()


def main() -> None:
    """Console-script entry point."""
    app()
