"""The MIDOG 2025 grand-challenge container interface: where the input image lies, which file the evaluator reads,
the ground-truth files of the evaluation containers and a folder of algorithm outputs to score.

A container gets ``/input`` holding ``inputs.json`` (a list of socket values, each with ``interface.slug`` and
``interface.relative_path``, the folder of its image) and writes one file to ``/output``. The layouts follow the
DeepMicroscopy reference containers ``MIDOG25_T1_reference_docker`` / ``MIDOG25_T2_reference_docker`` and the
evaluation containers ``MIDOG25_T1_evaluation_docker`` / ``MIDOG25_T2_evaluation_docker``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from mitoscope.io.tables import read_json
from mitoscope.utils.errors import InputError

#: Image files the reference containers look for in the interface folder.
IMAGE_SUFFIXES = (".tif", ".tiff")
#: Largest coordinate (mm) the Track 1 evaluator accepts; beyond it the output was probably written in pixels.
TRACK1_MAX_MM = 10.0
#: Hit radius of the Track 1 evaluator (mm); points may lie this far outside the image.
TRACK1_RADIUS_MM = 7.5e-3


@dataclasses.dataclass(frozen=True)
class Track:
    """One challenge track's interface: input socket, its image folder, the output socket and its file name."""

    name: str
    input_slug: str
    image_folder: str
    output_slug: str
    output_file: str


TRACK1 = Track(
    "track1",
    "histopathology-region-of-interest-cropout",
    "images/histopathology-roi-cropout",
    "mitotic-figures",
    "mitotic-figures.json",
)
TRACK2 = Track(
    "track2",
    "stacked-histopathology-roi-cropouts",
    "images/stacked-histopathology-roi-cropouts",
    "multiple-mitotic-figure-classification",
    "multiple-mitotic-figure-classification.json",
)
TRACKS = {"track1": TRACK1, "track2": TRACK2}


@dataclasses.dataclass(frozen=True)
class ChallengeInput:
    """The image a container run must process and its user-facing name (``image.name`` in ``inputs.json``)."""

    path: Path
    name: str


def read_inputs_json(input_dir: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """The socket values of ``INPUT/inputs.json`` (``None`` when the file is absent).

    Examples:
        >>> import tempfile, pathlib
        >>> read_inputs_json(tempfile.mkdtemp()) is None
        True
    """
    path = Path(input_dir) / "inputs.json"
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(v, dict) for v in data):
        raise InputError("inputs.json must be a list of socket values (objects)", path=path)
    return data


def _socket(values: list[dict[str, Any]], slug: str, where: Path) -> dict[str, Any]:
    found = [v for v in values if isinstance(v.get("interface"), dict) and v["interface"].get("slug") == slug]
    if not found:
        slugs = sorted(str((v.get("interface") or {}).get("slug")) for v in values)
        raise InputError(
            f"no input socket {slug!r} (found {slugs}): is this the other track's input?", path=where
        )
    if len(found) > 1:
        raise InputError(f"{len(found)} input sockets {slug!r}, expected one", path=where)
    return found[0]


def find_input_image(input_dir: str | os.PathLike[str], track: Track) -> ChallengeInput:
    """The one image of ``track``'s input socket under ``input_dir``, as grand-challenge lays it out.

    The folder is the socket's ``relative_path`` in ``inputs.json``; without ``inputs.json`` it is the track's known
    folder (:attr:`Track.image_folder`). Exactly one ``.tif``/``.tiff`` must lie there.

    Raises:
        InputError: no input folder, no image or more than one, an ``inputs.json`` without the track's socket.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> (d / TRACK2.image_folder).mkdir(parents=True)
        >>> _ = (d / TRACK2.image_folder / "stack_5.tiff").write_bytes(b"")
        >>> find_input_image(d, TRACK2).name
        'stack_5.tiff'
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError("input folder not found", path=root)
    values = read_inputs_json(root)
    folder, name = root / track.image_folder, None
    if values is not None:
        socket = _socket(values, track.input_slug, root / "inputs.json")
        rel = str((socket.get("interface") or {}).get("relative_path") or track.image_folder)
        folder = root / rel
        name = (socket.get("image") or {}).get("name")
    if not folder.is_dir():
        how = "from inputs.json" if values is not None else "(no inputs.json, so the track's default folder)"
        raise InputError(f"no image folder {folder.relative_to(root)} {how}", path=root)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        hint = f" (found {others[:5]}; MHA and other formats are not read: give a TIFF)" if others else ""
        raise InputError(f"no TIFF image in this folder{hint}", path=folder)
    if len(images) > 1:
        raise InputError(
            f"{len(images)} images ({', '.join(p.name for p in images[:5])}) where one is expected",
            path=folder,
        )
    return ChallengeInput(images[0], str(name) if name else images[0].name)


# --------------------------------------------------------------------------------------------- outputs


def validate_track1_output(path: str | os.PathLike[str]) -> None:
    """Check a ``mitotic-figures.json`` as the MIDOG 2025 Track 1 evaluator does (raises :class:`InputError`).

    A dict with a ``points`` list; each point a dict with ``name`` (``mitotic figure`` or ``non-mitotic figure``),
    ``probability`` and ``point`` ``[x, y, z]`` in millimetres (no coordinate below -7.5 µm or above 10 mm).

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = p.write_text('{"points": [{"name": "mitotic figure", "point": [500, 2, 0], "probability": 1}]}')
        >>> validate_track1_output(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: ...pixel coordinates? They must be in millimetres
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise InputError("a Track 1 output is a dict with a 'points' list", path=path)
    for i, pt in enumerate(data["points"]):
        if not isinstance(pt, dict):
            raise InputError(f"point {i} is not a dict", path=path)
        missing = [k for k in ("name", "probability", "point") if k not in pt]
        if missing:
            raise InputError(
                f"point {i} lacks {missing} (the evaluator needs name, point, probability)", path=path
            )
        if pt["name"] not in ("mitotic figure", "non-mitotic figure"):
            raise InputError(
                f"point {i}: name {pt['name']!r} is not 'mitotic figure' or 'non-mitotic figure'", path=path
            )
        xyz = pt["point"]
        if not isinstance(xyz, list) or len(xyz) < 2 or not all(isinstance(v, int | float) for v in xyz):
            raise InputError(f"point {i}: 'point' must be [x, y, z] numbers, got {xyz!r}", path=path)
        if not isinstance(pt["probability"], int | float) or isinstance(pt["probability"], bool):
            raise InputError(f"point {i}: probability {pt['probability']!r} is not a number", path=path)
        if min(xyz[0], xyz[1]) < -TRACK1_RADIUS_MM:
            raise InputError(f"point {i}: invalid coordinates {xyz}", path=path)
        if max(xyz[0], xyz[1]) > TRACK1_MAX_MM:
            raise InputError(
                f"point {i}: coordinates {xyz} beyond {TRACK1_MAX_MM:g} mm: pixel coordinates? "
                "They must be in millimetres",
                path=path,
            )


def validate_track2_output(path: str | os.PathLike[str]) -> None:
    """Check a ``multiple-mitotic-figure-classification.json`` as the Track 2 evaluator does.

    A list of dicts with ``class`` (``normal``/``atypical``) and ``confidence``, a JSON float (the evaluator
    rejects integers such as ``1``).

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = p.write_text('[{"class": "normal", "confidence": 0}]')
        >>> validate_track2_output(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mitoscope.utils.errors.InputError: ...confidence 0 is not a float...
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError("a Track 2 output is a JSON list", path=path)
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "class" not in item or "confidence" not in item:
            raise InputError(f"entry {i} must be a dict with 'class' and 'confidence': {item!r}", path=path)
        if item["class"] not in ("normal", "atypical"):
            raise InputError(f"entry {i}: class {item['class']!r} is not 'normal' or 'atypical'", path=path)
        if not isinstance(item["confidence"], float):
            raise InputError(
                f"entry {i}: confidence {item['confidence']!r} is not a float (write 0.0, not 0)", path=path
            )


def _stem(name: str) -> str:
    low = name.lower()
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".mha", ".json"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _match(name: str, truth_names: list[str]) -> str | None:
    if name in truth_names:
        return name
    stems = {_stem(t): t for t in truth_names}
    return stems.get(_stem(name))


def _evaluator_layout(outputs_dir: Path, track: Track) -> dict[str, Path]:
    """``{image name: output file}`` from an evaluation container's ``predictions.json`` + ``PK/output/...``."""
    jobs = read_json(outputs_dir / "predictions.json")
    if not isinstance(jobs, list):
        raise InputError("predictions.json must be a list of jobs", path=outputs_dir / "predictions.json")
    found: dict[str, Path] = {}
    for k, job in enumerate(jobs):
        try:
            socket = _socket(job["inputs"], track.input_slug, outputs_dir / "predictions.json")
            name = str(socket["image"]["name"])
            out = _socket(job["outputs"], track.output_slug, outputs_dir / "predictions.json")
            found[name] = outputs_dir / str(job["pk"]) / "output" / str(out["interface"]["relative_path"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"job {k} lacks {exc}", path=outputs_dir / "predictions.json") from exc
    return found


def collect_outputs(
    outputs_dir: str | os.PathLike[str], track: Track, truth_names: list[str]
) -> dict[str, Path]:
    """``{ground-truth image name: output file}`` for a folder of algorithm outputs.

    Two layouts: the evaluation container's (``predictions.json`` naming each job's input image, outputs in
    ``PK/output/<file>``), or one sub-folder per image named after it (``007.tiff/`` or ``007/``) holding the track's
    output file, as ``mitoscope challenge track1 --output OUT/007`` leaves it.

    Raises:
        InputError: no outputs, or an output whose image has no ground truth.

    Examples:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> (d / "007").mkdir()
        >>> _ = (d / "007" / TRACK1.output_file).write_text("{}")
        >>> {k: v.parent.name for k, v in collect_outputs(d, TRACK1, ["007.tiff"]).items()}
        {'007.tiff': '007'}
    """
    root = Path(outputs_dir)
    if not root.is_dir():
        raise InputError("outputs folder not found", path=root)
    if (root / "predictions.json").is_file():
        raw = _evaluator_layout(root, track)
    else:
        raw = {p.parent.name: p for p in sorted(root.glob(f"*/{track.output_file}"))}
        if (root / track.output_file).is_file():
            raw.setdefault(root.name, root / track.output_file)
    if not raw:
        raise InputError(
            f"no {track.output_file} in sub-folders (one per image) and no predictions.json", path=root
        )
    out: dict[str, Path] = {}
    for name, path in raw.items():
        key = _match(name, truth_names)
        if key is None:
            raise InputError(f"output for image {name!r} but no ground truth for it", path=path)
        if not path.is_file():
            raise InputError(f"output of image {name!r} not found", path=path)
        out[key] = path
    return out


# --------------------------------------------------------------------------------------------- ground truth


def read_track1_truth(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The Track 1 evaluator's ``ground_truth.json``: ``{image: {"annotations": [[x_mm, y_mm, 0], ...],
    "tumor domain": d, "roi type": "hotspot"|"challenging"|"random"}}`` (``roi type`` optional here).

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "gt.json"
        >>> _ = p.write_text('{"007.tiff": {"annotations": [[0.37, 0.75, 0]], "tumor domain": 0}}')
        >>> read_track1_truth(p)["007.tiff"]["annotations"]
        [[0.37, 0.75, 0]]
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(
            "Track 1 ground truth is a dict {image: {annotations, tumor domain, roi type}}", path=path
        )
    for name, case in data.items():
        if not isinstance(case, dict) or not isinstance(case.get("annotations"), list):
            raise InputError(f"{name!r}: needs an 'annotations' list of [x_mm, y_mm, 0]", path=path)
        if "tumor domain" not in case:
            raise InputError(f"{name!r}: needs a 'tumor domain'", path=path)
        for a in case["annotations"]:
            if not isinstance(a, list) or len(a) < 2:
                raise InputError(f"{name!r}: annotation {a!r} is not [x_mm, y_mm, z]", path=path)
    return data


def read_track2_truth(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The Track 2 evaluator's ``ground_truth.json`` (a list of ``{"image", "labels", "tumordomains"}``) by image.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "gt.json"
        >>> _ = p.write_text('[{"image": "s.tiff", "labels": ["normal"], "tumordomains": [6]}]')
        >>> read_track2_truth(p)["s.tiff"]["tumordomains"]
        [6]
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise InputError("Track 2 ground truth is a list of {image, labels, tumordomains}", path=path)
    out: dict[str, dict[str, Any]] = {}
    for i, case in enumerate(data):
        try:
            name, labels, domains = str(case["image"]), list(case["labels"]), list(case["tumordomains"])
        except (KeyError, TypeError) as exc:
            raise InputError(f"entry {i} needs image, labels and tumordomains", path=path) from exc
        if len(labels) != len(domains) or any(lab not in ("normal", "atypical") for lab in labels):
            raise InputError(f"{name!r}: labels (normal/atypical) and tumordomains must pair up", path=path)
        out[name] = {"labels": labels, "tumordomains": domains}
    return out


def ground_truth_track(path: str | os.PathLike[str]) -> Track:
    """Which track a ground-truth file belongs to: a dict is Track 1's, a list Track 2's.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "gt.json"
        >>> _ = p.write_text("[]")
        >>> ground_truth_track(p).name
        'track2'
    """
    data = read_json(path)
    if isinstance(data, dict):
        return TRACK1
    if isinstance(data, list):
        return TRACK2
    raise InputError("not a MIDOG 2025 ground truth (a dict for Track 1, a list for Track 2)", path=path)
