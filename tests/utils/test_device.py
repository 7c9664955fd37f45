"""``--device`` values: auto, cpu, cuda[:N], and clear errors for the rest."""

from __future__ import annotations

import pytest
import torch

from mitoscope.utils.device import resolve_device
from mitoscope.utils.errors import InputError


def test_cpu_and_torch_devices_pass_through() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_is_cuda_only_where_there_is_one() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_unknown_device_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_says_so(name) -> None:
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device(name)
