"""Trained models shipped inside the package: safetensors weights, a JSON contract and a model card each.

A bundled model ``NAME`` is three files in ``mitoscope/pretrained/`` (installed with the package, read with
:mod:`importlib.resources`, so they work offline on the first call)::

    NAME.safetensors   the weights (float16 where the outputs hold; no pickle, nothing executable)
    NAME.json          {"format": "mitoscope-bundled-model", "version": 1, "name", "task", "sha256",
                        "contract": {... ModelContract ...}, "verifier": NAME or null, "summary": {...}}
    NAME.md            the model card: data, licences, command, code version, figures, intended use, limits

The weights are checked against the JSON's sha256 and the architecture's parameter shapes before use: a
mismatch is an error, never a silent load. The same pair of files anywhere on disk (``x.json`` beside
``x.safetensors``) loads the same way, so a user can ship their own model in this form.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mitoscope.models.checkpoint import ModelContract
from mitoscope.models.registry import create_model
from mitoscope.utils.atomic import atomic_path, write_text_atomic
from mitoscope.utils.errors import InputError

BUNDLE_FORMAT = "mitoscope-bundled-model"
BUNDLE_VERSION = 1
PACKAGE = "mitoscope.pretrained"
#: The bundled model each task uses when none is named.
DEFAULT_MODELS = {"detection": "mitoscope-detector", "classification": "mitoscope-classifier"}


def _folder() -> Path:
    return Path(str(resources.files(PACKAGE)))


def bundled_names() -> list[str]:
    """Names of the models shipped in the package.

    Examples:
        >>> isinstance(bundled_names(), list)
        True
    """
    return sorted(p.stem for p in _folder().glob("*.json"))


def bundled_path(name: str) -> Path:
    """The JSON of bundled model ``name``; ``InputError`` listing the bundled names when there is none."""
    path = _folder() / f"{name}.json"
    if not path.is_file():
        raise InputError(
            f"no bundled model named {name!r}; bundled models: {', '.join(bundled_names()) or 'none'} "
            "(or give a checkpoint file or a training run folder)"
        )
    return path


def read_bundle_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON of a bundled-model file pair, checked for format and version."""
    path = Path(path)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a mitoscope model ({exc})", path=path) from exc
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
        raise InputError(f"not a mitoscope model (no 'format': {BUNDLE_FORMAT!r})", path=path)
    if info.get("version") != BUNDLE_VERSION:
        raise InputError(f"bundled-model format version {info.get('version')!r} is not supported", path=path)
    return info


def bundle_info(name: str) -> dict[str, Any]:
    """The JSON of bundled model ``name``."""
    return read_bundle_info(bundled_path(name))


def bundle_card(name: str) -> str:
    """The model card (Markdown) of bundled model ``name``."""
    card = bundled_path(name).with_suffix(".md")
    return card.read_text(encoding="utf-8") if card.is_file() else f"(no card for {name})\n"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"
        >>> _ = p.write_bytes(b"abc")
        >>> sha256_of(p)[:12]
        'ba7816bf8f01'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(
    json_path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelContract]:
    """Build the model a bundled-model JSON describes and load its checked weights (float32, eval mode)."""
    from safetensors.torch import load_file

    json_path = Path(json_path)
    info = read_bundle_info(json_path)
    weights = json_path.with_suffix(".safetensors")
    if not weights.is_file():
        raise InputError("weights file missing beside the model's JSON", path=weights)
    digest = sha256_of(weights)
    if digest != info.get("sha256"):
        raise InputError(
            f"weights do not match their contract: sha256 {digest[:16]}… but the JSON records "
            f"{str(info.get('sha256'))[:16]}… (a damaged or replaced file)",
            path=weights,
        )
    contract = ModelContract.from_dict(info["contract"])
    model = create_model(contract.architecture, **contract.kwargs)
    state = load_file(str(weights))
    expected = model.state_dict()
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if wrong or missing or unexpected:
        detail = "; ".join(
            part
            for part in (
                f"shapes {', '.join(wrong[:3])}" if wrong else "",
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            )
            if part
        )
        raise InputError(f"weights do not fit architecture {contract.architecture!r}: {detail}", path=weights)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.to(device).eval()
    return model, contract


def load_bundled(name: str, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelContract]:
    """Load bundled model ``name`` (see :func:`load_bundle`).

    Examples:
        >>> model, contract = load_bundled("mitoscope-classifier")  # doctest: +SKIP
        >>> contract.task  # doctest: +SKIP
        'classification'
    """
    return load_bundle(bundled_path(name), device=device)


def export_bundle(
    model: nn.Module,
    contract: ModelContract,
    out_dir: str | os.PathLike[str],
    name: str,
    *,
    card: str,
    summary: dict[str, Any] | None = None,
    half: bool = True,
) -> Path:
    """Write ``name.safetensors`` (float16 when ``half``), ``name.json`` and ``name.md`` into ``out_dir``.

    Returns:
        The JSON's path.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    weights = out / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))  # no metadata: its key order varies between runs, the bytes must not
        os.chmod(tmp, 0o644)  # package data, readable by everyone
    info = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "name": name,
        "task": contract.task,
        "sha256": sha256_of(weights),
        "bytes": weights.stat().st_size,
        "dtype": "float16" if half else "float32",
        "contract": contract.to_dict(),
        "verifier": contract.config.get("verifier"),  # the verification stage a detector runs by default
        "summary": summary or {},
    }
    write_text_atomic(out / f"{name}.md", card)
    json_path = out / f"{name}.json"
    write_text_atomic(json_path, json.dumps(info, indent=2, sort_keys=False) + "\n")
    return json_path
