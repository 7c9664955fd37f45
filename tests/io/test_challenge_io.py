"""Where a grand-challenge container finds its image, and which outputs the MIDOG 2025 evaluators accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mitoscope.io.challenge import (
    TRACK1,
    TRACK2,
    collect_outputs,
    find_input_image,
    validate_track1_output,
    validate_track2_output,
)
from mitoscope.utils.errors import InputError


def _socket(slug: str, rel: str, name: str = "x.tiff") -> dict:
    return {"image": {"name": name}, "interface": {"slug": slug, "relative_path": rel}}


def test_relative_path_from_inputs_json_wins(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "007.TIF").write_bytes(b"")
    (tmp_path / "inputs.json").write_text(json.dumps([_socket(TRACK1.input_slug, "elsewhere", "007.tiff")]))
    found = find_input_image(tmp_path, TRACK1)
    assert found.path.name == "007.TIF" and found.name == "007.tiff"


def test_known_folder_without_inputs_json(tmp_path: Path) -> None:
    (tmp_path / TRACK1.image_folder).mkdir(parents=True)
    (tmp_path / TRACK1.image_folder / "a.tiff").write_bytes(b"")
    (tmp_path / TRACK1.image_folder / ".hidden.txt").write_bytes(b"")
    assert find_input_image(tmp_path, TRACK1).name == "a.tiff"


@pytest.mark.parametrize(
    ("files", "sockets", "message"),
    [
        ([], None, "no image folder images/stacked-histopathology-roi-cropouts (no inputs.json"),
        (["a.mha"], None, "MHA and other formats are not read"),
        (["a.tiff", "b.tif"], None, "2 images (a.tiff, b.tif) where one is expected"),
        (["a.tiff"], [_socket(TRACK1.input_slug, TRACK2.image_folder)], "no input socket"),
        (["a.tiff"], [_socket(TRACK2.input_slug, TRACK2.image_folder)] * 2, "2 input sockets"),
    ],
)
def test_bad_inputs_say_what_is_wrong(
    tmp_path: Path, files: list[str], sockets: list | None, message: str
) -> None:
    if files:
        (tmp_path / TRACK2.image_folder).mkdir(parents=True)
    for name in files:
        (tmp_path / TRACK2.image_folder / name).write_bytes(b"")
    if sockets is not None:
        (tmp_path / "inputs.json").write_text(json.dumps(sockets))
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        find_input_image(tmp_path, TRACK2)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"point": [0.1, 0.1, 0], "probability": 0.5}, "lacks \\['name'\\]"),
        ({"name": "mitosis", "point": [0.1, 0.1, 0], "probability": 0.5}, "is not 'mitotic figure'"),
        ({"name": "mitotic figure", "point": [0.1, -0.01, 0], "probability": 0.5}, "invalid coordinates"),
        ({"name": "mitotic figure", "point": [0.1, 0.1, 0]}, "lacks \\['probability'\\]"),
    ],
)
def test_track1_validation(tmp_path: Path, point: dict, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"points": [point]}))
    with pytest.raises(InputError, match=message):
        validate_track1_output(path)


def test_track2_validation(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps([{"class": "normal", "confidence": 0.25}, {"class": "atypical", "confidence": 1.0}])
    )
    validate_track2_output(path)
    path.write_text(json.dumps([{"class": "Atypical", "confidence": 0.9}]))
    with pytest.raises(InputError, match="not 'normal' or 'atypical'"):
        validate_track2_output(path)


def test_outputs_match_ground_truth_by_name_or_stem(tmp_path: Path) -> None:
    for folder in ("stack_1.tiff", "stack_2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / TRACK2.output_file).write_text("[]")
    found = collect_outputs(tmp_path, TRACK2, ["stack_1.tiff", "stack_2.tiff", "stack_3.tiff"])
    assert sorted(found) == ["stack_1.tiff", "stack_2.tiff"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no multiple-mitotic-figure-classification\.json in sub-folders"):
        collect_outputs(tmp_path / "empty", TRACK2, ["stack_1.tiff"])
