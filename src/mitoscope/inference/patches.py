"""Classify patch files into a CSV: folders of images, source CSVs, MIDOG 2025 Track 2 stacks (then also the Track 2
JSON). The library behind ``mitoscope classify``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mitoscope.data.sources import load_patch_input
from mitoscope.data.stain_normalization import reference_normalizer
from mitoscope.engine.ensemble import RULES
from mitoscope.inference.classify import Classifier
from mitoscope.io.midog_outputs import write_track2_json
from mitoscope.utils.atomic import write_text_atomic


@dataclasses.dataclass
class PatchPredictions:
    """What :func:`classify_patches` wrote and how."""

    table: pd.DataFrame  # the CSV: file, (page), p_atypical, label, (votes)
    classifier: Any  # the mitoscope.inference.classify.Classifier used
    csv: Path
    track2_json: Path | None  # written for a Track 2 stack
    unreadable: list[tuple[Path, str]]  # images of a folder left out, and why
    adapted_on: int | None  # patches the batch-norm statistics were re-estimated on (adapt_bn)

    @property
    def n_atypical(self) -> int:
        """Patches labelled atypical."""
        return int((self.table["label"] == self.classifier.class_names[1]).sum())


def load_inputs(
    inputs: Sequence[str | os.PathLike[str]],
) -> tuple[pd.DataFrame, bool, list[tuple[Path, str]]]:
    """``(catalog, is_stack, unreadable)`` of the patches in ``inputs`` (see ``data.sources.load_patch_input``);
    ``is_stack`` when the one input is a Track 2 stack."""
    unreadable: list[tuple[Path, str]] = []
    parts = [load_patch_input(path, unreadable) for path in inputs]
    catalog = pd.concat([c for c, _ in parts], ignore_index=True)
    catalog.attrs = parts[0][0].attrs
    if catalog.empty:
        raise ValueError(f"{', '.join(map(str, inputs))}: no records to classify")
    return catalog, len(parts) == 1 and parts[0][1], unreadable


def _csv_table(result: pd.DataFrame, *, is_stack: bool, members: int) -> pd.DataFrame:
    frame = result.rename(columns={"image": "file"})
    cols = ["file", "page", "p_atypical", "label"] if is_stack else ["file", "p_atypical", "label"]
    if "page" in frame and not is_stack and (frame["page"] >= 0).any():
        cols.insert(1, "page")
    if members > 1:
        cols.append("votes")
    return frame[cols]


def classify_patches(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] = "mitoscope-classifier",
    device: str = "auto",
    precision: str = "auto",
    tta: bool = False,
    threshold: float | None = None,
    rule: str | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    track2_json: str | os.PathLike[str] | None = None,
    adapt_bn: bool = False,
    stain_tta: bool = False,
    stain_normalize: str | None = None,
    stain_reference: str | os.PathLike[str] | None = None,
    save_stain_reference: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> PatchPredictions:
    """P(atypical) and a label for every patch of ``inputs``, written to the CSV ``out`` (atomically).

    Args:
        inputs: folders of images (recursive), source CSVs, single images or one MIDOG 2025 Track 2 TIFF stack.
        out: the CSV: ``file``, ``page`` (stacks), ``p_atypical``, ``label`` (and ``votes`` for an ensemble).
        model: a bundled model's name, a checkpoint, an ensemble JSON/folder or a training RUN folder.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        tta: average the 8 dihedral views.
        threshold: decide at this P(atypical) (default: the model's own).
        rule: override the ensemble rule: ``majority`` or ``mean``.
        batch_size: patches per forward pass.
        num_workers: reader processes (None: the default of ``Classifier.predict_catalog``).
        track2_json: where the Track 2 JSON of a stack goes (default: ``out`` with ``.json``); only for a stack.
        adapt_bn: first re-estimate the batch-norm statistics on the input patches (AdaBN; experimental).
        stain_tta: also average over re-stained copies (experimental).
        stain_normalize: map every patch onto a reference stain first: ``macenko`` or ``reinhard`` (experimental;
            see ``data.stain_normalization.reference_normalizer`` for ``stain_reference`` and
            ``save_stain_reference``).
        stain_reference: the reference stain: a saved JSON, or patches to fit it on.
        save_stain_reference: write the fitted reference stain here.
        log: where progress lines go.

    Returns:
        A :class:`PatchPredictions`.
    """
    if rule is not None and rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    catalog, is_stack, unreadable = load_inputs(inputs)
    if track2_json is not None and not is_stack:
        raise ValueError("--json needs exactly one input, a Track 2 TIFF stack")
    normalizer = reference_normalizer(stain_normalize, stain_reference, save=save_stain_reference)
    clf = Classifier.from_path(
        model, device=device, tta=tta, stain_tta=stain_tta, rule=rule, precision=precision, threshold=threshold,
        fuse_batchnorm=not adapt_bn, stain_normalizer=normalizer,
    )  # fmt: skip
    source = inputs[0]
    adapted = None
    if adapt_bn:
        adapted = clf.adapt_batchnorm(catalog, num_workers=num_workers, source=source)
        if log is not None:
            log(f"batch-norm statistics re-estimated on {adapted} patches")
    result = clf.predict_catalog(catalog, batch_size=batch_size, num_workers=num_workers, source=source)
    table = _csv_table(result, is_stack=is_stack, members=len(clf.ensemble))
    csv = write_text_atomic(Path(out), table.to_csv(index=False, float_format="%.6f"))
    written = None
    if is_stack:
        written = Path(track2_json) if track2_json is not None else Path(out).with_suffix(".json")
        write_track2_json(written, table["p_atypical"].to_numpy(), labels=table["label"].tolist())
    return PatchPredictions(table, clf, Path(csv), written, unreadable, adapted)
